"""Shared pieces of the DMFT solvers: argument checks, the time grid, the quadrature of the
memory integrals, the output integrator and the result type.

Conventions (the same as `infwidth.predict.gradient_descent_mse`, so the lazy limit can be
compared point by point): full-batch gradient flow with learning rate ``eta`` on
``loss = sum_mu (f_mu - y_mu)**2 / (2 P)`` over the ``P`` training points, so the outputs obey
``df_mu/dt = eta * sum_nu K_{mu nu}(t) Delta_nu(t)`` with the error signal
``Delta_nu = (y_nu - f_nu) / P`` and the network's (time-dependent) NTK ``K``. Training times
are ``t_k = k * dt``, ``k = 0 .. n_steps``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = ("linear", "relu", "tanh", "erf")
ARCHITECTURES = ("mlp", "resnet")
PHI = {"linear": lambda h: h, "relu": jax.nn.relu, "tanh": jnp.tanh,
       "erf": jax.scipy.special.erf}


def phi_layers(activation):
    """The stax layer of ``activation`` as a list (empty for ``'linear'``)."""
    from .. import stax
    if activation == "linear":
        return []
    return [{"relu": stax.Relu, "erf": stax.Erf, "tanh": stax.Tanh}[activation]()]


def error_signal(f, y_train, p):
    """``Delta (T, n)``: ``(y - f) / P`` on the training points, 0 on the test points."""
    return jnp.zeros(f.shape, f.dtype).at[:, :p].set((y_train[None] - f[:, :p]) / p)


def memory_operator(kernel, delta, w, eta):
    """``M[(k, mu), (j, nu)] = eta w[k, j] kernel[k, mu, j, nu] Delta[j, nu]`` as a matrix."""
    T, n = delta.shape
    m = eta * kernel * w[:, None, :, None] * delta[None, None, :, :]
    return m.reshape(T * n, T * n)


def damp(new, old, damping):
    """Mixes the fraction ``damping`` of the previous iterate into each new array."""
    return new if not damping else [(1 - damping) * a + damping * b for a, b in zip(new, old)]


class DMFTSolution(NamedTuple):
    """The infinite-width, feature-learning training trajectory.

    Fields (``T = n_steps + 1`` times, ``n = n_train + n_test`` points, train points first):

    Attributes:
      times: ``(T,)`` training times ``k * dt``.
      loss: ``(T,)`` training loss ``sum (f - y)**2 / (2 P)``.
      f_train: ``(T, n_train)`` outputs on the training points.
      f_test: ``(T, n_test)`` outputs on the test points (``None`` without ``x_test``).
      phi: ``(L, T, n, n)`` feature kernels ``Phi^l(t, t) = <phi(h^l(x)) phi(h^l(x'))>``,
        layers ``l = 1 .. L``.
      g: ``(L, T, n, n)`` gradient kernels ``G^l(t, t) = <g^l(x) g^l(x')>``.
      ntk: ``(T, n, n)`` the network's tangent kernel ``K(t)``.
      iterations: self-consistency iterations used.
      residual: the last iteration's relative change of outputs and kernels.
    """

    times: jnp.ndarray
    loss: jnp.ndarray
    f_train: jnp.ndarray
    f_test: jnp.ndarray | None
    phi: jnp.ndarray
    g: jnp.ndarray
    ntk: jnp.ndarray
    iterations: int
    residual: float


def check_gamma0(gamma0, where, allow_zero=True):
    try:
        value = float(gamma0)
    except (TypeError, ValueError):
        raise ValueError(f"{where}(gamma0={gamma0!r}): gamma0 must be a number >= 0 (the "
                         f"feature-learning strength; 0 is the lazy NTK limit).") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{where}(gamma0={gamma0!r}): gamma0 must be {bound} (the "
                         f"feature-learning strength; 0 is the lazy NTK limit, solved by "
                         f"infwidth.predict.gradient_descent_mse).")
    return value


def check_positive(value, name, where, integer=False):
    ok = isinstance(value, (int, np.integer)) if integer else True
    try:
        ok = ok and np.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{where}({name}={value!r}): {name} must be {kind}.")
    return int(value) if integer else float(value)


def check_choice(value, name, choices, where):
    if value not in choices:
        raise ValueError(f"{where}({name}={value!r}): supported {name}s are "
                         f"{', '.join(map(repr, choices))}.")
    return value


def check_data(x_train, y_train, x_test, where):
    """Arrays ``x_train (P, D)``, ``y_train (P,)`` and ``x_test (P*, D)`` or None."""
    x_train = jnp.asarray(x_train)
    y_train = jnp.asarray(y_train)
    if x_train.ndim != 2:
        raise ValueError(f"{where}(x_train): expected shape (P, D), got {x_train.shape}; "
                         f"flatten images first (x.reshape(len(x), -1)).")
    if y_train.ndim == 2 and y_train.shape[1] == 1:
        y_train = y_train[:, 0]
    if y_train.shape != (x_train.shape[0],):
        raise ValueError(f"{where}(y_train): expected one scalar target per training point, "
                         f"shape ({x_train.shape[0]},) or ({x_train.shape[0]}, 1); got "
                         f"{y_train.shape}. The DMFT solvers treat one output; solve each "
                         f"output separately.")
    if x_test is not None:
        x_test = jnp.asarray(x_test)
        if x_test.ndim != 2 or x_test.shape[1] != x_train.shape[1]:
            raise ValueError(f"{where}(x_test): expected shape (P_test, {x_train.shape[1]}), "
                             f"got {x_test.shape}.")
    for name, a in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test)):
        if a is not None and not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(f"{where}({name}): contains NaN or inf.")
    return x_train, y_train, x_test


def check_step(eta, dt, k_train, where):
    """The time step must resolve the fastest lazy mode: ``eta dt lam_max / P <= 1``.

    Gradient descent with step ``eta dt`` diverges above ``2 P / lam_max`` and the memory
    quadrature loses accuracy well before; the solvers refuse steps above the stable bound.
    """
    p = k_train.shape[0]
    lam = float(jnp.linalg.eigvalsh(k_train)[-1])
    bound = p / max(lam, 1e-300)
    if eta * dt > bound:
        raise ValueError(
            f"{where}(dt={dt!r}): the step is unstable for this kernel: learning_rate * dt = "
            f"{eta * dt:.4g} exceeds the stable bound P / lambda_max(NTK) = {bound:.4g} "
            f"(gradient descent diverges at twice that). Use dt <= {bound / eta:.4g} (more "
            f"n_steps for the same t_max).")
    return bound


def check_damping(damping, where):
    if not 0 <= damping < 1:
        raise ValueError(f"{where}(damping={damping!r}): damping must be in [0, 1).")
    return float(damping)


def iterate_to_tolerance(step, state, args, tol, max_iter, where, gamma0):
    """Applies ``state, residual = step(state, *args)`` until ``residual < tol``.

    Returns ``(state, iterations, residual)``; raises a `RuntimeError` that names the
    remedies when ``max_iter`` sweeps do not reach ``tol`` (or the residual is NaN).
    """
    residual, it = float("inf"), 0
    while it < max_iter:
        it += 1
        state, residual = step(state, *args)
        residual = float(residual)
        if not residual >= tol:  # converged, or NaN
            break
    if not residual < tol:
        raise RuntimeError(
            f"{where}: the self-consistency iteration did not converge (relative change "
            f"{residual:.3g} > tol={tol:g} after {it} iterations, gamma0={gamma0:g}). Use "
            f"damping=0.5, a smaller gamma0, a shorter t_max = n_steps * dt, or raise max_iter.")
    return state, it, residual


def relative_change(a, b):
    return jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-300)


def trapezoid_weights(n_steps, dt, dtype):
    """``W[k, j]``: ``int_0^{t_k} f(s) ds ~ sum_j W[k, j] f(t_j)`` by the trapezoid rule."""
    T = n_steps + 1
    k = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    w = np.where(j < k, dt, 0.0) + np.where(j == k, dt / 2, 0.0)
    w = w - np.where((j == 0) & (k > 0), dt / 2, 0.0)
    w[0, 0] = 0.0
    return jnp.asarray(w, dtype)


def _phi1(z):
    """``(exp(z) - 1) / z`` for ``z <= 0``, stable near 0."""
    small = jnp.abs(z) < 1e-6
    zs = jnp.where(small, -1.0, z)
    return jnp.where(small, 1.0 + z / 2 + z * z / 6, jnp.expm1(zs) / zs)


def integrate_outputs(ntk, y_train, eta, dt):
    """Outputs ``f (T, n)`` of ``df/dt = eta K(t)[:, train] (y - f_train) / P`` from ``f(0) = 0``.

    Exponential midpoint rule: on ``[t_k, t_{k+1}]`` the kernel is held at
    ``(K(t_k) + K(t_{k+1})) / 2`` and the linear ODE is solved exactly, so a constant kernel
    (the lazy limit) gives the closed form of `gradient_descent_mse` at every step.
    """
    T, n, _ = ntk.shape
    p = y_train.shape[0]

    def step(f, k):
        kbar = (ntk[k] + ntk[k + 1]) / 2
        ktt = (kbar[:p, :p] + kbar[:p, :p].T) / 2
        lam, v = jnp.linalg.eigh(ktt)
        lam = jnp.maximum(lam, 0.0)
        a = eta * dt * lam / p
        F = (v * (eta * dt / p * _phi1(-a))[None, :]) @ v.T
        f_new = f + kbar[:, :p] @ (F @ (y_train - f[:p]))
        return f_new, f_new

    f0 = jnp.zeros((n,), ntk.dtype)
    _, fs = _scan(step, f0, T - 1)
    return jnp.concatenate([f0[None], fs])


def _scan(step, init, length):
    return jax.lax.scan(step, init, jnp.arange(length))


def loss_of(f_train, y_train):
    y = y_train.reshape((1,) * (f_train.ndim - 1) + y_train.shape)
    return jnp.sum((f_train - y) ** 2, axis=-1) / (2 * y_train.shape[0])


def input_kernel(x):
    return x @ x.T / x.shape[1]
