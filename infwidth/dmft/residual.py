r"""DMFT of wide-and-deep residual networks with ``1 / sqrt(L)`` branches, in the
feature-learning (muP) limit: exact for linear blocks, Monte Carlo for nonlinear ones.

The network (``L`` residual blocks of width ``N``, all weights drawn N(0, 1), no biases):

    h^1 = W^0 x / sqrt(D)
    h^{l+1} = h^l + alpha W^l phi(h^l) / sqrt(N),    l = 1 .. L,    alpha = 1 / sqrt(L)
    f = w . phi(h^{L+1}) / (gamma0 N)

trained by ``d theta / dt = eta gamma0**2 N (-d loss / d theta)`` for every weight: muP in
width, and the ``1 / sqrt(L)`` branch multiplier that gives a depth limit with no
depth-dependent learning rate (Bordelon, Noci, Li, Hanin & Pehlevan 2023, "Depthwise
hyperparameter transfer in residual networks: dynamics and scaling limit", arXiv:2309.16620;
Yang, Yu, Zhu & Hayou 2023, "Tensor Programs VI", arXiv:2310.02244).

Derivation (the notation of `infwidth.dmft.linear`; ``g^l = gamma0 N df / dh^l``, so
``g^{L+1} = phi'(h^{L+1}) w`` and ``g^l = g^{l+1} + alpha phi'(h^l) (W^l)^T g^{l+1} / sqrt(N)``).
Block ``l``'s weight update integrates to
``W^l(t) = W^l(0) + eta gamma0 alpha / sqrt(N) int ds sum_nu Delta_nu g^{l+1}_nu phi(h^l_nu)^T``,
and the cavity argument of arXiv:2205.09653 (Sec. 3) applied to ``W^l(0)`` gives, per neuron,

    h^1     = u^1 + gamma0 M_0 g^1
    h^{l+1} = h^l + alpha u^{l+1} + (alpha A^l + gamma0 alpha**2 M_l) g^{l+1}
    g^{L+1} = phi'(h^{L+1}) (r^{L+1} + gamma0 Q_{L+1} phi(h^{L+1}))
    g^l     = g^{l+1} + alpha phi'(h^l) (r^l + (B^l + gamma0 alpha Q_l) phi(h^l))

with the memory operators ``M_l = eta Phi^l o (w Delta)`` (``Phi^0 = K^x``) and
``Q_l = eta G^{l+1} o (w Delta)`` (``G^{L+2} = 1``), independent Gaussian sources
``u^1 ~ GP(0, K^x)``, ``u^{l+1} ~ GP(0, Phi^l)``, ``r^l ~ GP(0, G^{l+1})``,
``r^{L+1} = w(0) ~ N(0, 1)``, and the response functions ``A^l = <d phi(h^l) / d r^l>`` and
``B^l = <d g^{l+1} / d u^{l+1}>``. Unlike an MLP's, one neuron's layers are coupled by the skip
connections (``h^{l+1}`` holds ``h^l``, ``g^l`` holds ``g^{l+1}``), so the single-site problem
is solved for all layers at once. The tangent kernel is

    K = G^1 o K^x + alpha**2 sum_{l=1..L} G^{l+1} o Phi^l + Phi^{L+1}.

At ``gamma0 = 0`` it is the NTK of the 'ntk'-parameterized stax network
``serial(Dense, [FanOut(2), parallel(Identity(), serial(phi, Dense(W_std=alpha))),
FanInSum()] * L, phi, Dense)``.

For ``phi(h) = h`` every field is a linear function of the sources: the stacked fields
``z = (h^1 .. h^{L+1}, g^1 .. g^{L+1})`` over (time, sample) solve ``z = J z + E s`` exactly
(cost ``O((2 (L + 1) n T)^3)`` per iteration). Otherwise the sources are sampled
(``n_samples`` neurons, whitened draws, common random numbers across iterations as in
`infwidth.dmft.nonlinear`), the single-site problem is solved by Picard sweeps (``h`` forward
over the layers, ``g`` backward) and the responses are the sample means of forward-mode
Jacobians (cost ``O(L^2 S (n T)^3)`` per iteration for ``S`` samples).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ._common import (
    PHI,
    DMFTSolution,
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
from .nonlinear import _equal_time, _sqrt_psd, _whiten, picard


def lazy_resnet(depth: int, activation: str = "linear"):
    """The 'ntk'-parameterized stax residual network whose NTK is the ``gamma0 = 0`` limit.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.dmft import lazy_resnet
      >>> x = jnp.eye(2)
      >>> # linear blocks: Phi^{L+1} = (1 + 1/L)^L K^x, so the NNGP at L = 1 is 2 x x^T / D
      >>> lazy_resnet(1).kernel_fn(x, None, get='nngp').tolist()
      [[1.0, 0.0], [0.0, 1.0]]
    """
    from .. import stax
    phi = phi_layers(activation)
    branch = stax.serial(*phi, stax.Dense(1, W_std=1.0 / math.sqrt(depth)))
    block = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch), stax.FanInSum())
    return stax.serial(stax.Dense(1, W_std=1.0), *[block] * depth, *phi,
                       stax.Dense(1, W_std=1.0))


def _ntk(phis, gs, kx, T, n, alpha):
    """``K(t) = G^1 K^x + alpha^2 sum_l G^{l+1} Phi^l + Phi^{L+1}`` at equal times."""
    phi_eq = [_equal_time(a, T, n) for a in phis]
    g_eq = [_equal_time(a, T, n) for a in gs]
    K = g_eq[0] * kx[None] + phi_eq[-1]
    for l in range(1, len(phis)):
        K = K + alpha ** 2 * g_eq[l] * phi_eq[l - 1]
    return K


def _operators(phis, gs, At, Bt, delta, w, eta, gamma0, alpha, phi0):
    """The couplings of the single-site equations and the sources' covariances.

    ``gP[l]`` multiplies ``g^{l+1}`` in ``h^{l+1}`` (``l = 0 .. L``); ``gS[l - 1]``
    multiplies ``phi(h^l)`` inside ``g^l`` (``l = 1 .. L + 1``); ``cov_u[l - 1]`` and
    ``cov_r[l - 1]`` are the covariances of ``u^l`` and ``r^l``.
    """
    L = At.shape[0]
    T, n = delta.shape
    ones = jnp.ones_like(phi0)
    mem = lambda k: memory_operator(k.reshape(T, n, T, n), delta, w, eta)  # noqa: E731
    gP = [gamma0 * mem(phi0)] + [alpha * At[l - 1] + gamma0 * alpha ** 2 * mem(phis[l - 1])
                                 for l in range(1, L + 1)]
    g_above = [gs[l] for l in range(1, L + 1)] + [ones]  # G^{l+1}, l = 1 .. L + 1
    gS = [Bt[l - 1] + gamma0 * alpha * mem(g_above[l - 1]) for l in range(1, L + 1)]
    gS.append(gamma0 * mem(ones))
    cov_u = jnp.stack([phi0] + [phis[l] for l in range(L)])
    return jnp.stack(gP), jnp.stack(gS), cov_u, jnp.stack(g_above)


def _finish(new, old, kx, y_train, eta, dt, alpha, T, n, damping):
    """Damping, the outputs from the new kernels and the relative change of the iterate."""
    new = damp(new, old[:4], damping)
    f = integrate_outputs(_ntk(new[0], new[1], kx, T, n, alpha), y_train, eta, dt)
    residual = jnp.max(jnp.stack([relative_change(f, old[4]), relative_change(new[0], old[0]),
                                  relative_change(new[1], old[1])]))
    return tuple(new) + (f,), residual


@functools.lru_cache(maxsize=16)
def _linear_iteration(L, p, n, T, eta, dt, gamma0, damping):
    """One exact self-consistency sweep for linear blocks: ``z = (I - J)^{-1} E s``."""
    alpha, N, nb = 1.0 / math.sqrt(L), T * n, L + 1

    def step(state, kx, y_train, w):
        phis, gs, At, Bt, f = state
        phi0 = jnp.broadcast_to(kx[None, :, None, :], (T, n, T, n)).reshape(N, N)
        gP, gS, cov_u, cov_r = _operators(phis, gs, At, Bt, error_signal(f, y_train, p), w, eta,
                                          gamma0, alpha, phi0)
        eye = jnp.eye(N, dtype=kx.dtype)
        J = jnp.zeros((2 * nb, N, 2 * nb, N), kx.dtype)
        J = J.at[0, :, nb, :].set(gP[0])                              # h^1 <- g^1
        for l in range(1, nb):                                        # h^{l+1} <- h^l, g^{l+1}
            J = J.at[l, :, l - 1, :].set(eye).at[l, :, nb + l, :].set(gP[l])
        J = J.at[nb + L, :, L, :].set(gS[L])                          # g^{L+1} <- h^{L+1}
        for l in range(L):                                            # g^{l+1} <- g^{l+2}, h^{l+1}
            J = J.at[nb + l, :, nb + l + 1, :].set(eye).at[nb + l, :, l, :].set(alpha * gS[l])
        inv = jnp.linalg.inv(jnp.eye(2 * nb * N, dtype=kx.dtype) - J.reshape(2 * nb * N, -1))
        scale = jnp.asarray([1.0] + [alpha] * L + [alpha] * L + [1.0], kx.dtype)  # E
        R = inv.reshape(2 * nb, N, 2 * nb, N) * scale[None, None, :, None]
        cov = jnp.concatenate([cov_u, cov_r])
        K = jnp.einsum("aibj,bjk,albk->ail", R, cov, R)
        K = (K + jnp.swapaxes(K, 1, 2)) / 2
        idx = jnp.arange(L)
        new = [K[:nb], K[nb:], R[idx, :, nb + idx, :], R[nb + idx + 1, :, idx + 1, :]]
        return _finish(new, state, kx, y_train, eta, dt, alpha, T, n, damping)

    return jax.jit(step)


def _solve_sites(u, r, gP, gS, alpha, phi, dphi, max_sweeps):
    """Picard sweeps of the single-site equations for a batch of neurons, all layers at once.

    ``u``, ``r``: ``(L + 1, S, N)`` sources; returns ``h``, ``g`` of the same shape.
    """

    def forward(g):
        h1 = u[0] + g[0] @ gP[0].T

        def block(h, xs):
            u_l, g_l, P_l = xs
            h = h + alpha * u_l + g_l @ P_l.T
            return h, h

        _, hs = jax.lax.scan(block, h1, (u[1:], g[1:], gP[1:]))
        return jnp.concatenate([h1[None], hs])

    def backward(h):
        g_top = dphi(h[-1]) * (r[-1] + phi(h[-1]) @ gS[-1].T)

        def block(g, xs):
            h_l, r_l, S_l = xs
            g = g + alpha * dphi(h_l) * (r_l + phi(h_l) @ S_l.T)
            return g, g

        _, gs = jax.lax.scan(block, g_top, (h[:-1], r[:-1], gS[:-1]), reverse=True)
        return jnp.concatenate([gs, g_top[None]])

    h = picard(lambda h: forward(backward(h)), forward(jnp.zeros_like(u)), max_sweeps)
    return h, backward(h)


@functools.lru_cache(maxsize=16)
def _mc_iteration(L, p, n, T, eta, dt, gamma0, damping, activation):
    """One Monte Carlo self-consistency sweep: sample, solve the sites, average."""
    alpha, N = 1.0 / math.sqrt(L), T * n
    phi = PHI[activation]
    dphi = jax.vmap(jax.vmap(jax.grad(phi)))
    sweeps = 2 * T + 50

    def step(state, kx, y_train, w, z_u, z_r):
        phis, gs, At, Bt, f = state
        phi0 = jnp.broadcast_to(kx[None, :, None, :], (T, n, T, n)).reshape(N, N)
        gP, gS, cov_u, cov_r = _operators(phis, gs, At, Bt, error_signal(f, y_train, p), w, eta,
                                          gamma0, alpha, phi0)
        u = jnp.einsum("lsi,lji->lsj", z_u, jax.vmap(_sqrt_psd)(cov_u))
        r = jnp.einsum("lsi,lji->lsj", z_r, jax.vmap(_sqrt_psd)(cov_r))
        h, g = _solve_sites(u, r, gP, gS, alpha, phi, dphi, sweeps)
        S = h.shape[1]
        ph = phi(h)
        e0 = jnp.zeros(N, kx.dtype)
        A, B = [], []
        for l in range(L):
            # A^{l+1} = <d phi(h^{l+1}) / d r^{l+1}>,  B^{l+1} = <d g^{l+2} / d u^{l+2}>
            A.append(jax.jacfwd(lambda e, l=l: phi(_solve_sites(
                u, r.at[l].add(e), gP, gS, alpha, phi, dphi, sweeps)[0][l]).mean(0))(e0))
            B.append(jax.jacfwd(lambda e, l=l: _solve_sites(
                u.at[l + 1].add(e), r, gP, gS, alpha, phi, dphi, sweeps)[1][l + 1].mean(0))(e0))
        new = [jnp.einsum("lsi,lsj->lij", ph, ph) / S, jnp.einsum("lsi,lsj->lij", g, g) / S,
               jnp.stack(A), jnp.stack(B)]
        return _finish(new, state, kx, y_train, eta, dt, alpha, T, n, damping)

    return jax.jit(step)


def _joint_draws(k_u, k_r, layers, S, N, dtype):
    """Standard normal draws ``(layers, S, N)`` of the ``u`` and ``r`` sources, whitened jointly.

    The skip connections add sources of different layers, so their sample cross-covariances
    matter too: with ``S > 2 layers N`` all of them are made exact (a linear network is then
    solved exactly); otherwise each layer's draws are whitened on their own.
    """
    z = jnp.concatenate([jax.random.normal(k_u, (layers, S, N), dtype),
                         jax.random.normal(k_r, (layers, S, N), dtype)])
    if S > 2 * layers * N:
        flat = _whiten(jnp.swapaxes(z, 0, 1).reshape(1, S, 2 * layers * N))[0]
        z = jnp.swapaxes(flat.reshape(S, 2 * layers, N), 0, 1)
    else:
        z = _whiten(z)
    return z[:layers], z[layers:]


def solve(x_train, y_train, x_test, *, depth, gamma0, activation, eta, dt, n_steps, tol,
          max_iter, damping, n_samples=None, key=None, where="deep_linear"):
    """The residual-network solver behind ``architecture='resnet'`` of `deep_linear` and `mlp`.

    Arguments are already checked by the caller; ``activation='linear'`` with
    ``n_samples=None`` is the exact solver, anything else Monte Carlo.
    """
    x = x_train if x_test is None else jnp.concatenate([x_train, x_test])
    L, p, n, T = depth, x_train.shape[0], x.shape[0], n_steps + 1
    N = T * n
    kx = input_kernel(x)
    check_step(eta, dt, lazy_resnet(L, activation).kernel_fn(x_train, None, get="ntk"), where)
    w = trapezoid_weights(n_steps, dt, kx.dtype)
    phi0 = jnp.broadcast_to(kx[None, :, None, :], (T, n, T, n)).reshape(N, N)
    zeros = jnp.zeros((L, N, N), kx.dtype)
    phis = jnp.broadcast_to(phi0, (L + 1, N, N))
    gs = jnp.ones((L + 1, N, N), kx.dtype)
    alpha = 1.0 / math.sqrt(L)
    f0 = integrate_outputs(_ntk(phis, gs, kx, T, n, alpha), y_train, eta, dt)
    state = (phis, gs, zeros, zeros, f0)
    if n_samples is None:
        step = _linear_iteration(L, p, n, T, eta, dt, gamma0, damping)
        args = (kx, y_train, w)
    else:
        key = jax.random.PRNGKey(0) if key is None else key
        k_u, k_r = jax.random.split(key)
        z_u, z_r = _joint_draws(k_u, k_r, L + 1, n_samples, N, kx.dtype)
        step = _mc_iteration(L, p, n, T, eta, dt, gamma0, damping, activation)
        args = (kx, y_train, w, z_u, z_r)
    state, it, residual = iterate_to_tolerance(step, state, args, tol, max_iter, where, gamma0)
    phis, gs, _, _, f = state
    return DMFTSolution(
        times=dt * jnp.arange(T, dtype=kx.dtype), loss=loss_of(f[:, :p], y_train),
        f_train=f[:, :p], f_test=None if x_test is None else f[:, p:],
        phi=jnp.stack([_equal_time(a, T, n) for a in phis]),
        g=jnp.stack([_equal_time(a, T, n) for a in gs]),
        ntk=_ntk(phis, gs, kx, T, n, alpha), iterations=it, residual=residual)
