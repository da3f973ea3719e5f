r"""DMFT of deep linear networks in the feature-learning (muP / mean-field) limit: exact
equations, no sampling.

The network (Bordelon & Pehlevan 2022, "Self-consistent dynamical field theory of kernel
evolution in wide neural networks", arXiv:2205.09653, Sec. 2) has ``L`` hidden layers of width
``N``, ``h^1 = W^0 x / sqrt(D)``, ``h^{l+1} = W^l phi(h^l) / sqrt(N)``, output
``f = w^L . phi(h^L) / (gamma0 N)`` (so ``f(0) -> 0``), all weights drawn N(0, 1), trained by
gradient flow ``d theta / dt = eta gamma0**2 N (-d loss / d theta)``. This is muP: the output
multiplier is ``1 / (gamma0 sqrt(N))`` times the NTK one and the learning rate is scaled by its
inverse square. ``gamma0 -> 0`` is the lazy (NTK) limit; ``gamma0 = O(1)`` keeps feature
learning at infinite width.

Derivation (our notation). With ``g^L = phi'(h^L) w^L`` and
``g^l = phi'(h^l) (W^l)^T g^{l+1} / sqrt(N)`` (so ``df / dh^l = g^l / (gamma0 N)``), the weight
updates integrate to
``W^l(t) = W^l(0) + eta gamma0 / sqrt(N) int ds sum_nu Delta_nu(s) g^{l+1}_nu(s) phi(h^l_nu(s))^T``
and therefore, per neuron, with the kernels ``Phi^l(t, s) = phi(h^l(t)) . phi(h^l(s)) / N``
(``Phi^0 = K^x = x x^T / D``) and ``G^l(t, s) = g^l(t) . g^l(s) / N`` (``G^{L+1} = 1``):

    h^{l+1}_mu(t) = chi^{l+1}_mu(t)
                    + gamma0 eta int_0^t ds sum_nu Phi^l_{mu nu}(t, s) Delta_nu(s) g^{l+1}_nu(s)
    z^l_mu(t) = xi^l_mu(t)
                    + gamma0 eta int_0^t ds sum_nu G^{l+1}_{mu nu}(t, s) Delta_nu(s) phi(h^l_nu(s))
    g^l = phi'(h^l) z^l,     df_mu/dt = eta sum_nu K_{mu nu}(t) Delta_nu(t),
    K(t) = sum_{l=0..L} G^{l+1}(t, t) * Phi^l(t, t)   (elementwise product)

where ``chi^{l+1} = W^l(0) phi(h^l) / sqrt(N)`` and ``xi^l = W^l(0)^T g^{l+1} / sqrt(N)``. As
``N -> infinity`` (MSR / cavity argument, arXiv:2205.09653 Sec. 3) ``chi = u + gamma0 A g`` and
``xi = r + gamma0 B phi(h)``: ``u^{l+1} ~ GP(0, Phi^l)`` and ``r^l ~ GP(0, G^{l+1})`` are
independent Gaussian fields (``u^1`` is constant in time, ``r^L = w^L(0)`` is one N(0, 1)
number per neuron) and ``A^l = <d phi(h^l) / d r^l> / gamma0``,
``B^l = <d g^{l+1} / d u^{l+1}> / gamma0`` are response functions (``A^0 = B^L = 0``).

For ``phi(h) = h`` every field is a linear function of the sources. Discretize time on the grid
``t_k`` (trapezoid rule, weights ``w_{kj}``) and write each field as a vector over
(time, sample); with ``M_l = eta Phi^l o (w Delta)`` and ``Q_l = eta G^{l+1} o (w Delta)``
(the memory operators), ``P_l = A^{l-1} + M_{l-1}``, ``S_l = B^l + Q_l``:

    h^l = X_l (u^l + gamma0 P_l r^l),   X_l = (I - gamma0**2 P_l S_l)^{-1}
    g^l = Y_l (r^l + gamma0 S_l u^l),   Y_l = (I - gamma0**2 S_l P_l)^{-1}
    Phi^l = X_l (Phi^{l-1} + gamma0**2 P_l G^{l+1} P_l^T) X_l^T
    G^l   = Y_l (G^{l+1} + gamma0**2 S_l Phi^{l-1} S_l^T) Y_l^T
    A^l = X_l P_l,   B^{l-1} = Y_l S_l

(the linear-network solution of arXiv:2205.09653, Sec. 5). Kernels, response functions and the
outputs (integrated by the exponential midpoint rule, `_common.integrate_outputs`) are iterated
to self-consistency from the lazy solution. At ``gamma0 = 0``: ``Phi^l = K^x``, ``G^l = 1`` and
``K = (L + 1) K^x``, the NTK of ``L + 1`` linear 'ntk' Dense layers, and the outputs are those
of `infwidth.predict.gradient_descent_mse`. Cost per iteration ``O(L (n T)^3)`` for ``n``
points and ``T`` times.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._common import (
    ARCHITECTURES,
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
    relative_change,
    trapezoid_weights,
)


def _equal_time(k4):
    """``(T, n, T, n) -> (T, n, n)``: the diagonal ``k(t, t)``."""
    T = k4.shape[0]
    return k4[jnp.arange(T), :, jnp.arange(T), :]


def _ntk(phis, gs, kx, T):
    """``K(t) = sum_l G^{l+1}(t, t) Phi^l(t, t)`` with ``Phi^0 = K^x``, ``G^{L+1} = 1``."""
    phi_eq = [jnp.broadcast_to(kx, (T,) + kx.shape)] + [_equal_time(p) for p in phis]
    g_eq = [_equal_time(g) for g in gs] + [jnp.ones((T,) + kx.shape, kx.dtype)]
    return sum(p * g for p, g in zip(phi_eq, g_eq))


def deep_linear(x_train, y_train, x_test=None, *, depth: int, gamma0: float,
                learning_rate: float = 1.0, dt: float = 0.1, n_steps: int = 50,
                tol: float | None = None, max_iter: int = 500,
                damping: float = 0.0, architecture: str = "mlp") -> DMFTSolution:
    r"""Feature-learning infinite-width training of a deep linear network, by exact DMFT.

    Solves the equations in this module's docstring (Bordelon & Pehlevan 2022,
    arXiv:2205.09653) for ``depth`` hidden layers, MSE loss, full-batch gradient flow, to the
    self-consistency tolerance ``tol`` (relative change of outputs and kernels between
    iterations). Use float64 for tight tolerances.

    Args:
      x_train, y_train: ``(P, D)`` inputs and ``(P,)`` (or ``(P, 1)``) targets.
      x_test: optional ``(P*, D)`` inputs whose outputs and kernels are tracked too.
      depth: number of hidden layers ``L`` (``L + 1`` weight matrices).
      gamma0: feature-learning strength, ``>= 0`` (0 is the NTK limit).
      learning_rate: ``eta``, in `infwidth.predict.gradient_descent_mse`'s convention.
      dt, n_steps: the time grid ``t_k = k dt``, ``k = 0 .. n_steps``.
      tol, max_iter: the self-consistency tolerance and iteration budget; an error is raised
        when the iteration does not reach ``tol`` (default ``1e-8`` in float64, ``1e-4`` in
        float32; try ``damping``, a smaller ``gamma0`` or a
        shorter ``n_steps * dt``).
      damping: in ``[0, 1)``, mixes this fraction of the previous iterate into the next.
      architecture: ``'mlp'`` (the network above) or ``'resnet'``: ``depth`` residual blocks
        ``h^{l+1} = h^l + W^l h^l / sqrt(depth N)`` after the input layer, the
        ``1 / sqrt(L)`` branch scaling of depthwise transfer (`infwidth.dmft.residual`, exact
        equations); ``phi`` and ``g`` then hold ``depth + 1`` layers.

    Returns:
      a `DMFTSolution`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import dmft
      >>> x = jnp.array([[1., 0.], [0.6, 0.8]]); y = jnp.array([1., -1.])
      >>> lazy = dmft.deep_linear(x, y, depth=2, gamma0=0.0, n_steps=20)
      >>> rich = dmft.deep_linear(x, y, depth=2, gamma0=1.0, n_steps=20)
      >>> bool(rich.loss[-1] < lazy.loss[-1])  # feature learning speeds up training here
      True
      >>> lazy.ntk[-1].round(4).tolist()  # (L + 1) x x^T / D, unchanged by training
      [[1.5, 0.9], [0.9, 1.5]]
    """
    where = "deep_linear"
    x_train, y_train, x_test = check_data(x_train, y_train, x_test, where)
    gamma0 = check_gamma0(gamma0, where)
    L = check_positive(depth, "depth", where, integer=True)
    eta = check_positive(learning_rate, "learning_rate", where)
    dt = check_positive(dt, "dt", where)
    n_steps = check_positive(n_steps, "n_steps", where, integer=True)
    damping = check_damping(damping, where)
    check_choice(architecture, "architecture", ARCHITECTURES, where)
    x = x_train if x_test is None else jnp.concatenate([x_train, x_test])
    p, n, T = x_train.shape[0], x.shape[0], n_steps + 1
    kx = input_kernel(x)
    if tol is None:
        tol = 1e-8 if kx.dtype == jnp.float64 else 1e-4
    if architecture == "resnet":
        from .residual import solve as solve_resnet
        return solve_resnet(x_train, y_train, x_test, depth=L, gamma0=gamma0,
                              activation="linear", eta=eta, dt=dt, n_steps=n_steps, tol=tol,
                              max_iter=max_iter, damping=damping, where=where)
    check_step(eta, dt, (L + 1) * kx[:p, :p], where)
    w = trapezoid_weights(n_steps, dt, kx.dtype)
    phi0 = jnp.broadcast_to(kx[None, :, None, :], (T, n, T, n))
    ones = jnp.ones((T, n, T, n), kx.dtype)

    state = ([phi0] * L, [ones] * L,
             [jnp.zeros((T * n, T * n), kx.dtype) for _ in range(L + 1)],  # A[0] = 0
             [jnp.zeros((T * n, T * n), kx.dtype) for _ in range(L + 1)],  # B[L] = 0
             None)
    f0 = integrate_outputs(_ntk(state[0], state[1], kx, T), y_train, eta, dt)
    state = state[:4] + (f0,)
    step = _iteration(L, p, n, T, eta, dt, gamma0, damping)
    state, it, residual = iterate_to_tolerance(step, state, (kx, y_train, w), tol, max_iter,
                                               where, gamma0)
    phis, gs, _, _, f = state
    ntk = _ntk(phis, gs, kx, T)
    return DMFTSolution(
        times=dt * jnp.arange(T, dtype=kx.dtype), loss=loss_of(f[:, :p], y_train),
        f_train=f[:, :p], f_test=None if x_test is None else f[:, p:],
        phi=jnp.stack([_equal_time(a) for a in phis]),
        g=jnp.stack([_equal_time(a) for a in gs]), ntk=ntk, iterations=it,
        residual=float(residual))


@functools.lru_cache(maxsize=32)
def _iteration(L, p, n, T, eta, dt, gamma0, damping):
    """One jitted self-consistency sweep: kernels and responses layer by layer, then outputs."""

    def step(state, kx, y_train, w):
        phis, gs, A, B, f = state
        eye = jnp.eye(T * n, dtype=kx.dtype)
        phi0 = jnp.broadcast_to(kx[None, :, None, :], (T, n, T, n))
        ones = jnp.ones((T, n, T, n), kx.dtype)
        as_mat = lambda k4: k4.reshape(T * n, T * n)  # noqa: E731
        as_4 = lambda m: m.reshape(T, n, T, n)  # noqa: E731
        delta = error_signal(f, y_train, p)
        new_phis, new_gs = [], []
        new_A, new_B = list(A), list(B)
        prev_phi = phi0
        for l in range(1, L + 1):
            g_above = ones if l == L else gs[l]  # G^{l+1}
            P = A[l - 1] + memory_operator(prev_phi, delta, w, eta)
            S = B[l] + memory_operator(g_above, delta, w, eta)
            X = jnp.linalg.inv(eye - gamma0 ** 2 * P @ S)
            Y = jnp.linalg.inv(eye - gamma0 ** 2 * S @ P)
            phi_l = X @ (as_mat(prev_phi) + gamma0 ** 2 * P @ as_mat(g_above) @ P.T) @ X.T
            g_l = Y @ (as_mat(g_above) + gamma0 ** 2 * S @ as_mat(prev_phi) @ S.T) @ Y.T
            if l < L:
                new_A[l] = X @ P
            if l > 1:
                new_B[l - 1] = Y @ S
            new_phis.append(as_4((phi_l + phi_l.T) / 2))
            new_gs.append(as_4((g_l + g_l.T) / 2))
            prev_phi = new_phis[-1]
        new_phis, new_gs = damp(new_phis, phis, damping), damp(new_gs, gs, damping)
        new_A, new_B = damp(new_A, A, damping), damp(new_B, B, damping)
        f_new = integrate_outputs(_ntk(new_phis, new_gs, kx, T), y_train, eta, dt)
        residual = jnp.max(jnp.stack([relative_change(f_new, f)] + [
            relative_change(a, b) for a, b in zip(new_phis + new_gs, phis + gs)]))
        return (new_phis, new_gs, new_A, new_B, f_new), residual

    return jax.jit(step)
