"""Any elementwise nonlinearity after train-mode `BatchNorm`: the NNGP and NTK by a Monte Carlo
rule over fixed common random numbers.

BatchNorm maps the Gaussian pre-activations ``h ~ N(0, K)`` of one channel over a batch of
``M`` entries to ``u = sqrt(M) c / r``, ``c = P h`` (centred), ``r = sqrt(|c|^2 + M eps)``, and
then ``y = g u`` (``g = gamma_std``, the scale ``gamma`` initialised to 1; the shift is 0 at
initialisation). The activations ``phi(y)`` are no longer Gaussian, and for a ``phi`` that is
not positively homogeneous the normalisation does not factor out of the expectations, so

    NNGP = E[phi(y) phi(y)^T]
    NTK  = E[D J Theta J^T D] + gamma_std^2 E[(phi'(y) u)(phi'(y) u)^T]
           + beta_std^2 E[phi'(y) phi'(y)^T],           D = g diag(phi'(y)),
    J Theta J^T = (M / r^2) (I - c^ c^T) Theta_c (I - c^ c^T),  c^ = c / r,  Theta_c = P Theta P

(the first term is the chain rule through the normalisation, J = du/dh; the others are the
gradients in gamma and beta; Yang et al. 2019, arXiv:1902.08129, for the law of u) are
averaged over ``n_samples`` draws ``c = S z`` with ``S`` the symmetric square root of the
centred covariance ``P K P`` and ``z`` fixed standard normal directions (``seed``; the radius
integrated out exactly for ``eps = 0``, see `_draws`; the ``eps``-dependence of the radius,
of relative size ``eps / var``, is taken at that mean), half of them the negations of the
other half. Each expectation costs ``O(n_samples M^2)``; the NTK's
projections are expanded so that no ``M x M`` product is formed per draw. For two batches
(``kernel_fn(x1, x2)``, each normalised with its own statistics) the same draws are taken
from the joint covariance, centred batch by batch.

The error is that of a Monte Carlo mean, ``O(1 / sqrt(n_samples))``: for a ReLU, whose exact
kernel `_batch_norm_quad` computes, the relative error of the NNGP is about 0.6 % at the
default 65,536 draws (tested), the NTK's 2-5 % for batches of 6-12 (the NTK's ``1 / |P h|^2``
makes its samples heavy-tailed); both fall like ``1 / sqrt(n_samples)``. Draws are taken in
blocks of 4,096, so memory is ``O(4096 M)`` whatever ``n_samples`` is. The rule is
deterministic (the same draws every call), symmetric for one batch, and a copy of ``x1`` passed
as ``x2`` gives the ``x2=None`` values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_CHUNK = 4096  # draws per block: memory O(_CHUNK M) whatever n_samples is


def _draws(n, count, key, dtype):
    """``(count, n)`` directions of standard normal draws, each scaled to the norm
    ``sqrt(n - 2)``, closed under negation, made in float32 so that float32 and float64
    kernels use the same numbers.

    A draw ``z = rho omega`` has its radius ``rho`` independent of its direction, and the
    normalised activations do not depend on ``rho`` (up to ``eps``): only the NTK's factor
    ``1 / r^2 ~ 1 / rho^2`` does, whose mean ``E[1 / rho^2] = 1 / (n - 2)`` is what the norm
    ``sqrt(n - 2)`` gives (Rao-Blackwellisation of the radius).
    """
    half = (count + 1) // 2
    z = jax.random.normal(key, (half, n), jnp.float32)
    z = z * (max(n - 2, 1) ** 0.5 / jnp.linalg.norm(z, axis=1, keepdims=True))
    return jnp.concatenate([z, -z])[:count].astype(dtype)


def _averaged(sums_of_block, n, n_samples, seed, dtype):
    """The mean over ``n_samples`` draws of ``sums_of_block(z)`` (a pytree of sums over the
    rows of a block ``z`` of draws), block by block."""
    n_blocks = -(-n_samples // _CHUNK)
    key = jax.random.PRNGKey(seed)

    def block(i):
        return sums_of_block(_draws(n, _CHUNK, jax.random.fold_in(key, i), dtype))

    total = jax.lax.map(block, jnp.arange(n_blocks))
    return jax.tree_util.tree_map(lambda t: jnp.sum(t, 0) / (n_blocks * _CHUNK), total)


def _sqrt_psd(c):
    w, v = jnp.linalg.eigh((c + c.T) / 2)
    w = jnp.where(w > 1e-12 * jnp.max(jnp.abs(w)), w, 0)
    return (v * jnp.sqrt(w)) @ v.T


def _centring(m, dtype):
    return jnp.eye(m, dtype=dtype) - jnp.full((m, m), 1.0 / m, dtype)


class _Branch:
    """One batch's normalised draws: ``u``, ``c^ = c / r``, ``M / r^2`` and ``phi``, ``phi'``
    at ``y = g u``."""

    def __init__(self, c, eps, g, fn):
        m = c.shape[1]
        r = jnp.sqrt(jnp.sum(c * c, 1, keepdims=True) + m * eps)
        self.m = m
        self.u = jnp.sqrt(jnp.asarray(m, c.dtype)) * c / r
        self.c_hat = c / r
        self.w = m / r[:, 0] ** 2
        y = g * self.u
        self.phi, self.dphi = jax.jvp(fn, (y,), (jnp.ones_like(y),))
        self.d = g * self.dphi


def _mean_outer(a, b):  # summed over the block; `_averaged` divides
    return a.T @ b


def _expectations(b1, b2, theta12, gamma_std, beta_std):
    """``(nngp, ntk)`` between two branches of the same draws; ``theta12`` the centred NTK
    block (None: NNGP only)."""
    nngp = _mean_outer(b1.phi, b2.phi)
    if theta12 is None:
        return nngp, None
    s = jnp.sqrt(jnp.sqrt(b1.w * b2.w))[:, None]  # (M1 M2)^(1/2) / (r1 r2), split per side
    d1, d2 = b1.d * s, b2.d * s
    v1 = b2.c_hat @ theta12.T  # Theta_c c2^, per draw: (S, M1)
    v2 = b1.c_hat @ theta12  # Theta_c^T c1^: (S, M2)
    q = jnp.sum(b1.c_hat * v1, 1, keepdims=True)  # c1^T Theta_c c2^
    a1, a2 = d1 * b1.c_hat, d2 * b2.c_hat
    ntk = (_mean_outer(d1, d2) * theta12 - _mean_outer(a1, d2 * v2) - _mean_outer(d1 * v1, a2)
           + _mean_outer(a1 * q, a2))
    if gamma_std is not None:
        ntk = ntk + _mean_outer(b1.d * b1.u, b2.d * b2.u)
    if beta_std is not None:
        ntk = ntk + beta_std**2 * _mean_outer(b1.dphi, b2.dphi)
    return nngp, ntk


def one_batch(k, theta, eps, gamma_std, beta_std, fn, n_samples, seed):
    """``(nngp, ntk)`` ``(M, M)`` of ``phi(BatchNorm(h))`` for ``h ~ N(0, k)``, one batch."""
    m = k.shape[0]
    p = _centring(m, k.dtype)
    root = _sqrt_psd(p @ k @ p)
    g = 1.0 if gamma_std is None else gamma_std
    theta_c = None if theta is None else p @ ((theta + theta.T) / 2) @ p

    def sums(z):
        b = _Branch(z @ root, eps, g, fn)
        return _expectations(b, b, theta_c, gamma_std, beta_std)

    nngp, ntk = _averaged(sums, m, n_samples, seed, k.dtype)
    return (nngp + nngp.T) / 2, None if ntk is None else (ntk + ntk.T) / 2


def two_batches(c1, c2, k12, theta12, eps, gamma_std, beta_std, fn, n_samples, seed):
    """``(nngp, ntk)`` ``(M1, M2)`` between two batches normalised separately, from the joint
    covariance ``[[c1, k12], [k12^T, c2]]`` (``theta12`` the NTK's cross block)."""
    m1, m2 = c1.shape[0], c2.shape[0]
    dtype = c1.dtype
    p1, p2 = _centring(m1, dtype), _centring(m2, dtype)
    joint = jnp.block([[p1 @ c1 @ p1, p1 @ k12 @ p2], [(p1 @ k12 @ p2).T, p2 @ c2 @ p2]])
    root = _sqrt_psd(joint)
    g = 1.0 if gamma_std is None else gamma_std
    theta_c = None if theta12 is None else p1 @ theta12 @ p2

    def sums(z):
        c = z @ root
        b1, b2 = _Branch(c[:, :m1], eps, g, fn), _Branch(c[:, m1:], eps, g, fn)
        return _expectations(b1, b2, theta_c, gamma_std, beta_std)

    return _averaged(sums, m1 + m2, n_samples, seed, dtype)
