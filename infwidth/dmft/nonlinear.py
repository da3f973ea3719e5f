r"""DMFT of nonlinear MLPs in the feature-learning limit, with the single-site fields sampled by
Monte Carlo (Bordelon & Pehlevan 2022, arXiv:2205.09653, Sec. 3-4 and App. on the numerical
scheme).

The equations are those of `infwidth.dmft.linear` with a nonlinearity ``phi``. For each layer
``l = 1 .. L`` and each of ``n_samples`` neurons, the sources ``u^l ~ GP(0, Phi^{l-1})`` (two-time,
over all train and test points; ``u^1 ~ GP(0, K^x)`` constant in time) and
``r^l ~ GP(0, G^{l+1})`` (``r^L = w^L(0) ~ N(0, 1)``) are drawn and the single-site equations

    h^l = u^l + (A~^{l-1} + gamma0 M_{l-1}) g^l,          M_{l-1} = eta Phi^{l-1} o (w Delta)
    g^l = phi'(h^l) * (r^l + (B~^l + gamma0 Q_l) phi(h^l)),   Q_l = eta G^{l+1} o (w Delta)

are solved over the whole time grid by Picard iteration (causal Volterra equations: the
iteration contracts; to ``1e-10`` relative change, see `picard`).
``A~^l = <d phi(h^l) / d r^l>`` and ``B~^{l-1} = <d g^l / d u^l>`` (``gamma0`` times the
paper's ``A``, ``B``) are the sample means of
the exact Jacobians (forward-mode autodiff through the solve), ``Phi^l = <phi(h^l) phi(h^l)^T>``
and ``G^l = <g^l g^l^T>`` the sample means of the fields' products. The outputs follow
``df/dt = eta K(t) Delta``, ``K = sum_l G^{l+1} * Phi^l``, as in the linear solver. Kernels,
responses and outputs are iterated to self-consistency with the same Gaussian draws each
iteration (common random numbers, whitened so that their sample covariance is exactly the
identity), so the iteration is a deterministic map and converges to
``tol`` (relative change of outputs and kernels); the Monte Carlo error itself is
``O(n_samples**-1/2)``, independent of ``tol``.

Cost per iteration: ``O(L S (n T)^2 (sweeps + n T))`` for ``S`` samples (the ``n T`` factor is
the response Jacobians), memory ``O(S (n T)^2)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._common import (
    ACTIVATIONS,
    ARCHITECTURES,
    PHI,
    DMFTSolution,
    check_choice,
    check_damping,
    check_data,
    check_gamma0,
    check_positive,
    check_step,
    damp,
    error_signal,
    input_kernel,
    integrate_outputs,
    iterate_to_tolerance,
    loss_of,
    memory_operator,
    phi_layers,
    relative_change,
    trapezoid_weights,
)


def _lazy_ntk(kx, depth, activation):
    """The NTK (and NNGPs) of the matching 'ntk' stax network, for the step-size check."""
    from .. import stax
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(1, W_std=1.0)] + phi_layers(activation)
    layers.append(stax.Dense(1, W_std=1.0))
    return stax.serial(*layers)


def _whiten(z):
    """Standard normal draws ``(L, S, N)`` made exactly white: ``z^T z / S = I`` when ``S > N``.

    A variance reduction: the Gaussian sources' sample covariances are then exact, so only
    the nonlinearity's averages carry Monte Carlo error (a linear network's lazy limit is exact).
    """
    if z.shape[1] <= z.shape[2]:
        return z
    c = jnp.einsum("lsi,lsj->lij", z, z) / z.shape[1]
    lam, v = jnp.linalg.eigh(c)
    return jnp.einsum("lsi,lij->lsj", z, v / jnp.sqrt(lam)[:, None, :] @ jnp.swapaxes(v, 1, 2))


def _sqrt_psd(c):
    lam, v = jnp.linalg.eigh((c + c.T) / 2)
    return (v * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]) @ v.T  # symmetric: continuous in c


def picard(sweep, h0, max_sweeps):
    """Iterates ``h <- sweep(h)`` to a relative RMS change of ``1e-10``, then once more.

    The single-site equations are causal Volterra equations (each time couples to itself
    only through the trapezoid rule's ``dt / 2`` diagonal), so the sweeps contract; a neuron
    whose preactivation sits at a ReLU kink can make that equal-time equation two-valued (the
    neuron flips between the branches: an ``O(dt)`` artefact of the quadrature), so the change
    is measured over the whole batch and the sweeps stop at ``max_sweeps`` (``2 T + 50``).
    Smooth activations converge in a few sweeps more than ``T``; ReLU fields typically stop at
    the cap with a 1e-3 to 1e-2 relative change left. The final extra sweep makes forward-mode
    derivatives see the map rather than the loop.
    """

    def rms(a):
        return jnp.sqrt(jnp.mean(a * a))

    def body(carry):
        h, _, i = carry
        h_new = sweep(h)
        return h_new, rms(h_new - h) / jnp.maximum(rms(h_new), 1e-30), i + 1

    def cond(carry):
        return (carry[1] > 1e-10) & (carry[2] < max_sweeps)

    h, _, _ = jax.lax.while_loop(cond, body, (h0, jnp.asarray(1.0, h0.dtype), 0))
    return sweep(h)


def _solve_site(u, r, gP, gS, phi, dphi, max_sweeps):
    """Picard iteration of ``h = u + gP g``, ``g = phi'(h) (r + gS phi(h))``, a batch of sites."""

    def g_of(h):
        return dphi(h) * (r + phi(h) @ gS.T)

    h = picard(lambda h: u + g_of(h) @ gP.T, u, max_sweeps)
    return h, g_of(h)


@functools.lru_cache(maxsize=16)
def _iteration(L, p, n, T, eta, dt, gamma0, damping, activation):
    phi = PHI[activation]
    dphi = jax.vmap(jax.vmap(jax.grad(phi)))
    sweeps = 2 * T + 50

    def step(state, kx, y_train, w, z_u, z_r):
        phis, gs, At, Bt, f = state
        N = T * n
        ones = jnp.ones((N, N), kx.dtype)
        phi0 = jnp.broadcast_to(kx[None, :, None, :], (T, n, T, n)).reshape(N, N)
        delta = error_signal(f, y_train, p)
        new_phis, new_gs, new_At, new_Bt = [], [], list(At), list(Bt)
        prev = phi0
        for l in range(1, L + 1):
            above = ones if l == L else gs[l]
            gP = At[l - 1] + gamma0 * memory_operator(prev.reshape(T, n, T, n), delta, w, eta)
            gS = Bt[l] + gamma0 * memory_operator(above.reshape(T, n, T, n), delta, w, eta)
            u = z_u[l - 1] @ _sqrt_psd(prev).T
            r = z_r[l - 1] @ _sqrt_psd(above).T
            h, g = _solve_site(u, r, gP, gS, phi, dphi, sweeps)
            ph = phi(h)
            new_phis.append(ph.T @ ph / ph.shape[0])
            new_gs.append(g.T @ g / g.shape[0])
            e0 = jnp.zeros(N, kx.dtype)
            if l < L:  # A~^l = <d phi(h^l) / d r^l>
                new_At[l] = jax.jacfwd(lambda e, u=u, r=r, gP=gP, gS=gS: phi(_solve_site(
                    u, r + e[None], gP, gS, phi, dphi, sweeps)[0]).mean(0))(e0)
            if l > 1:  # B~^{l-1} = <d g^l / d u^l>
                new_Bt[l - 1] = jax.jacfwd(lambda e, u=u, r=r, gP=gP, gS=gS: _solve_site(
                    u + e[None], r, gP, gS, phi, dphi, sweeps)[1].mean(0))(e0)
            prev = new_phis[-1]
        new_phis, new_gs = damp(new_phis, phis, damping), damp(new_gs, gs, damping)
        new_At, new_Bt = damp(new_At, At, damping), damp(new_Bt, Bt, damping)
        ntk = _ntk(new_phis, new_gs, kx, T, n)
        f_new = integrate_outputs(ntk, y_train, eta, dt)
        residual = jnp.max(jnp.stack([relative_change(f_new, f)] + [
            relative_change(a, b) for a, b in zip(new_phis + new_gs, phis + gs)]))
        return (new_phis, new_gs, new_At, new_Bt, f_new), residual

    return jax.jit(step)


def _equal_time(m, T, n):
    k4 = m.reshape(T, n, T, n)
    return k4[jnp.arange(T), :, jnp.arange(T), :]


def _ntk(phis, gs, kx, T, n):
    phi_eq = [jnp.broadcast_to(kx, (T, n, n))] + [_equal_time(a, T, n) for a in phis]
    g_eq = [_equal_time(a, T, n) for a in gs] + [jnp.ones((T, n, n), kx.dtype)]
    return sum(a * b for a, b in zip(phi_eq, g_eq))


def mlp(x_train, y_train, x_test=None, *, depth: int, gamma0: float,
        activation: str = "relu", learning_rate: float = 1.0, dt: float = 0.1,
        n_steps: int = 50, n_samples: int = 2000, key=None, tol: float | None = None,
        max_iter: int = 200, damping: float = 0.0, architecture: str = "mlp") -> DMFTSolution:
    r"""Feature-learning infinite-width training of an MLP, by Monte Carlo DMFT.

    The network is that of `deep_linear` (no biases, weights N(0, 1), readout
    ``1 / (gamma0 N)``, learning rate ``eta gamma0**2 N``) with ``phi`` after every hidden
    layer; the equations and the scheme are in this module's docstring. ``gamma0 = 0`` gives
    the NTK of ``stax.serial(Dense, phi, ..., Dense)`` (to Monte Carlo accuracy in the
    kernels).

    Args:
      x_train, y_train, x_test, depth, gamma0, learning_rate, dt, n_steps, max_iter, damping:
        as in `deep_linear`.
      activation: ``'relu'``, ``'tanh'``, ``'erf'`` or ``'linear'``.
      n_samples: Monte Carlo neurons per layer; kernel errors scale as ``n_samples**-1/2``.
      key: ``jax.random`` key of the draws (default ``PRNGKey(0)``).
      tol: self-consistency tolerance (relative change of outputs and kernels between
        iterations, at fixed draws); default ``1e-6`` in float64, ``1e-4`` in float32.
      architecture: ``'mlp'`` or ``'resnet'``: ``depth`` residual blocks
        ``h^{l+1} = h^l + W^l phi(h^l) / sqrt(depth N)`` after the input layer and
        ``phi(h^{depth + 1})`` into the readout (`infwidth.dmft.residual`); ``phi`` and ``g``
        then hold ``depth + 1`` layers.

    Returns:
      a `DMFTSolution`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import dmft
      >>> x = jnp.array([[1., 0.], [0.6, 0.8]]); y = jnp.array([1., -1.])
      >>> sol = dmft.mlp(x, y, depth=1, gamma0=1.0, n_steps=10, dt=0.2, n_samples=500)
      >>> bool(sol.residual < 1e-4 and sol.loss[-1] < sol.loss[0])
      True
    """
    where = "mlp"
    x_train, y_train, x_test = check_data(x_train, y_train, x_test, where)
    gamma0 = check_gamma0(gamma0, where)
    L = check_positive(depth, "depth", where, integer=True)
    check_choice(activation, "activation", ACTIVATIONS, where)
    eta = check_positive(learning_rate, "learning_rate", where)
    dt = check_positive(dt, "dt", where)
    n_steps = check_positive(n_steps, "n_steps", where, integer=True)
    S = check_positive(n_samples, "n_samples", where, integer=True)
    damping = check_damping(damping, where)
    check_choice(architecture, "architecture", ARCHITECTURES, where)
    x = x_train if x_test is None else jnp.concatenate([x_train, x_test])
    p, n, T = x_train.shape[0], x.shape[0], n_steps + 1
    N = T * n
    kx = input_kernel(x)
    if tol is None:
        tol = 1e-6 if kx.dtype == jnp.float64 else 1e-4
    if architecture == "resnet":
        from .residual import solve as solve_resnet
        return solve_resnet(x_train, y_train, x_test, depth=L, gamma0=gamma0,
                              activation=activation, eta=eta, dt=dt, n_steps=n_steps, tol=tol,
                              max_iter=max_iter, damping=damping, n_samples=S, key=key,
                              where=where)
    check_step(eta, dt, _lazy_ntk(kx, L, activation).kernel_fn(x_train, None, get="ntk"),
               where)
    key = jax.random.PRNGKey(0) if key is None else key
    k_u, k_r = jax.random.split(key)
    z_u = _whiten(jax.random.normal(k_u, (L, S, N), kx.dtype))
    z_r = _whiten(jax.random.normal(k_r, (L, S, N), kx.dtype))
    w = trapezoid_weights(n_steps, dt, kx.dtype)
    step = _iteration(L, p, n, T, eta, dt, gamma0, float(damping), activation)
    zeros = jnp.zeros((N, N), kx.dtype)
    # start from the lazy kernels (one sweep at gamma0 = 0), outputs from them
    lazy = _iteration(L, p, n, T, eta, dt, 0.0, 0.0, activation)
    phi0 = jnp.broadcast_to(kx[None, :, None, :], (T, n, T, n)).reshape(N, N)
    state = ([phi0] * L, [jnp.ones((N, N), kx.dtype)] * L, [zeros] * (L + 1), [zeros] * (L + 1),
             jnp.zeros((T, n), kx.dtype))
    state, _ = lazy(state, kx, y_train, w, z_u, z_r)
    state, it, residual = iterate_to_tolerance(step, state, (kx, y_train, w, z_u, z_r), tol,
                                               max_iter, where, gamma0)
    phis, gs, _, _, f = state
    return DMFTSolution(
        times=dt * jnp.arange(T, dtype=kx.dtype), loss=loss_of(f[:, :p], y_train),
        f_train=f[:, :p], f_test=None if x_test is None else f[:, p:],
        phi=jnp.stack([_equal_time(a, T, n) for a in phis]),
        g=jnp.stack([_equal_time(a, T, n) for a in gs]), ntk=_ntk(phis, gs, kx, T, n),
        iterations=it, residual=residual)
