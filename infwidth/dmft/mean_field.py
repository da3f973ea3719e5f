r"""The two-layer mean-field limit as a particle flow (Mei, Montanari & Nguyen 2018,
arXiv:1804.06561; Rotskoff & Vanden-Eijnden 2018, arXiv:1805.00915): the ``depth=1`` case of
`infwidth.dmft`, solved by following a population of neurons instead of kernels.

A two-layer network ``f(x) = sum_i a_i phi(w_i . x / sqrt(D)) / (gamma0 M)`` of ``M`` neurons
(``a_i, w_i ~ N(0, 1)``) trained by ``d theta / dt = eta gamma0**2 M (-d loss / d theta)``
moves each particle ``theta_i = (a_i, w_i)`` by

    da_i/dt = eta gamma0 sum_mu Delta_mu phi(h_{i mu}),
    dw_i/dt = eta gamma0 sum_mu Delta_mu a_i phi'(h_{i mu}) x_mu / sqrt(D),
    Delta_mu = (y_mu - f_mu) / P,

a Wasserstein gradient flow of the particles' distribution whose ``M -> infinity`` limit is
the DMFT of `mlp` (``depth=1``: the single-site fields ``h = w . x / sqrt(D)``, ``z = a``). The
flow is integrated by classical Runge-Kutta (``substeps`` per grid step) with the initial
output subtracted (its ``O(1 / (gamma0 sqrt(M)))`` fluctuation has no limit). Convergence
check: the population is split into two independent halves, both are run, and
``residual = max |f_half1 - f_half2| / 2`` over times and training points estimates the full
population's distance from the limit (the Monte Carlo error ``O(M**-1/2)``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._common import (
    ACTIVATIONS,
    PHI,
    DMFTSolution,
    check_choice,
    check_data,
    check_gamma0,
    check_positive,
    check_step,
    input_kernel,
    loss_of,
)
from .nonlinear import _lazy_ntk


class ParticleFlow(NamedTuple):
    """Result of `particle_flow`: the neurons' trajectories and the `DMFTSolution`.

    Attributes:
      a: ``(T, M)`` readout weights ``a_i(t)`` of all ``M`` particles (both halves).
      w: ``(T, M, D)`` input weights ``w_i(t)``.
      solution: the `DMFTSolution` that `mean_field` returns.
    """

    a: jnp.ndarray
    w: jnp.ndarray
    solution: DMFTSolution


def mean_field(x_train, y_train, x_test=None, *, gamma0: float, activation: str = "relu",
               learning_rate: float = 1.0, dt: float = 0.1, n_steps: int = 50,
               n_particles: int = 4096, substeps: int = 4, key=None,
               tol: float | None = None) -> DMFTSolution:
    r"""Two-layer mean-field training by a particle flow (this module's docstring).

    Args:
      x_train, y_train, x_test, gamma0, learning_rate, dt, n_steps: as in `mlp`
        (``gamma0 > 0``).
      activation: ``'relu'``, ``'tanh'``, ``'erf'`` or ``'linear'``.
      n_particles: neurons ``M`` (even; two halves of ``M / 2`` are run).
      substeps: Runge-Kutta steps per grid step.
      key: ``jax.random`` key of the initial particles (default ``PRNGKey(0)``).
      tol: if given, an error is raised when the convergence check ``residual`` exceeds it.

    Returns:
      a `DMFTSolution` (``depth = 1``; ``iterations`` is 0, ``residual`` the half-population
      estimate of the error in the outputs).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import dmft
      >>> x = jnp.array([[1., 0.], [0.6, 0.8]]); y = jnp.array([1., -1.])
      >>> flow = dmft.mean_field(x, y, gamma0=1.0, activation='linear', n_steps=20)
      >>> exact = dmft.deep_linear(x, y, depth=1, gamma0=1.0, n_steps=20)
      >>> bool(abs(flow.loss[-1] - exact.loss[-1]) < 3 * flow.residual + 1e-3)
      True
    """
    return particle_flow(x_train, y_train, x_test, gamma0=gamma0, activation=activation,
                         learning_rate=learning_rate, dt=dt, n_steps=n_steps,
                         n_particles=n_particles, substeps=substeps, key=key, tol=tol,
                         _where="mean_field").solution


def particle_flow(x_train, y_train, x_test=None, *, gamma0: float, activation: str = "relu",
                  learning_rate: float = 1.0, dt: float = 0.1, n_steps: int = 50,
                  n_particles: int = 4096, substeps: int = 4, key=None,
                  tol: float | None = None, _where: str = "particle_flow") -> ParticleFlow:
    r"""`mean_field` with the neurons' trajectories: every particle ``(a_i(t), w_i(t))`` on
    the time grid, the Wasserstein gradient flow of their empirical distribution (Mei,
    Montanari & Nguyen 2018, arXiv:1804.06561; Chizat & Bach 2018, arXiv:1805.09545).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import dmft
      >>> x = jnp.array([[1., 0.], [0.6, 0.8]]); y = jnp.array([1., -1.])
      >>> flow = dmft.particle_flow(x, y, gamma0=1.0, n_steps=10, n_particles=64)
      >>> flow.a.shape, flow.w.shape, bool(flow.solution.loss[-1] < flow.solution.loss[0])
      ((11, 64), (11, 64, 2), True)
    """
    where = _where
    x_train, y_train, x_test = check_data(x_train, y_train, x_test, where)
    gamma0 = check_gamma0(gamma0, where, allow_zero=False)
    check_choice(activation, "activation", ACTIVATIONS, where)
    eta = check_positive(learning_rate, "learning_rate", where)
    dt = check_positive(dt, "dt", where)
    n_steps = check_positive(n_steps, "n_steps", where, integer=True)
    M = check_positive(n_particles, "n_particles", where, integer=True)
    substeps = check_positive(substeps, "substeps", where, integer=True)
    if M % 2 or M < 4:
        raise ValueError(f"{where}(n_particles={n_particles!r}): n_particles must be an even "
                         f"number >= 4 (two halves are run for the convergence check).")
    x = x_train if x_test is None else jnp.concatenate([x_train, x_test])
    p, D = x_train.shape[0], x.shape[1]
    check_step(eta, dt, _lazy_ntk(input_kernel(x), 1, activation).kernel_fn(
        x_train, None, get="ntk"), where)
    phi = PHI[activation]
    dphi = jax.vmap(jax.vmap(jax.grad(phi)))
    key = jax.random.PRNGKey(0) if key is None else key
    k_a, k_w = jax.random.split(key)
    a0 = jax.random.normal(k_a, (2, M // 2), x.dtype)
    w0 = jax.random.normal(k_w, (2, M // 2, D), x.dtype)
    m = M // 2

    def outputs(a, w):
        return phi(x @ w.T / jnp.sqrt(D)) @ a / (gamma0 * m)

    def run(a, w):
        f0 = outputs(a, w)

        def velocity(state):
            a, w = state
            h = x @ w.T / jnp.sqrt(D)  # (n, m)
            delta = (y_train - (outputs(a, w)[:p] - f0[:p])) / p
            da = eta * gamma0 * delta @ phi(h[:p])
            dw = eta * gamma0 * ((delta[:, None] * dphi(h[:p])).T @ x_train) * a[:, None] \
                / jnp.sqrt(D)
            return da, dw

        def rk4(state, _):
            h = dt / substeps
            add = lambda s, d, c: jax.tree_util.tree_map(lambda u, v: u + c * v, s, d)  # noqa
            k1 = velocity(state)
            k2 = velocity(add(state, k1, h / 2))
            k3 = velocity(add(state, k2, h / 2))
            k4 = velocity(add(state, k3, h))
            incr = jax.tree_util.tree_map(lambda q, r, s, t: (q + 2 * r + 2 * s + t) / 6,
                                          k1, k2, k3, k4)
            return add(state, incr, h), None

        def grid_step(state, _):
            state, _ = jax.lax.scan(rk4, state, None, length=substeps)
            return state, state

        _, (a_t, w_t) = jax.lax.scan(grid_step, (a, w), None, length=n_steps)
        a_t = jnp.concatenate([a[None], a_t])
        w_t = jnp.concatenate([w[None], w_t])
        f_t = jax.vmap(outputs)(a_t, w_t) - f0[None]
        h_t = jnp.einsum("nd,tmd->tnm", x, w_t) / jnp.sqrt(D)
        feat = phi(h_t)
        grad = jax.vmap(dphi)(h_t) * a_t[:, None, :]
        phis = jnp.einsum("tnm,tkm->tnk", feat, feat) / m
        gs = jnp.einsum("tnm,tkm->tnk", grad, grad) / m
        return f_t, phis, gs, a_t, w_t

    f_h, phi_h, g_h, a_h, w_h = jax.jit(jax.vmap(run))(a0, w0)
    residual = float(jnp.max(jnp.abs(f_h[0, :, :p] - f_h[1, :, :p])) / 2)
    if tol is not None and not residual <= tol:
        raise RuntimeError(
            f"{where}: the particle population has not converged: the two halves' outputs "
            f"differ by {2 * residual:.3g} (estimated error {residual:.3g} > tol={tol:g}). "
            f"Use more n_particles (the error falls as n_particles**-1/2).")
    f = f_h.mean(0)
    phis, gs = phi_h.mean(0), g_h.mean(0)
    kx = input_kernel(x)
    ntk = gs * kx[None] + phis
    solution = DMFTSolution(
        times=dt * jnp.arange(n_steps + 1, dtype=x.dtype), loss=loss_of(f[:, :p], y_train),
        f_train=f[:, :p], f_test=None if x_test is None else f[:, p:], phi=phis[None],
        g=gs[None], ntk=ntk, iterations=0, residual=residual)
    a_all = jnp.concatenate([a_h[0], a_h[1]], axis=1)
    w_all = jnp.concatenate([w_h[0], w_h[1]], axis=1)
    return ParticleFlow(a_all, w_all, solution)
