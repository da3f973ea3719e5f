"""Gaussian expectations of batch-normalised vectors, by Laplace integrals and quadrature.

One channel of a Gaussian layer normalised over a group of ``M`` entries (a batch, with its
positions): ``u = P h`` (``P`` centres), ``y = sqrt(M) u / sqrt(|u|^2 + M eps)``. In the
orthonormal basis ``Q`` of the centred subspace (``P = Q Q^T``) ``u = Q z`` with
``z ~ N(0, S)``, ``S = Q^T C Q``. Powers of ``q = |z|^2 + c`` come from the Laplace transform
``q^-a = Gamma(a)^-1 int_0^inf s^(a-1) exp(-s q) ds`` (Yang et al. 2019, arXiv:1902.08129);
under the tilt ``exp(-s |z|^2)`` the vector ``z`` stays Gaussian with covariance
``(S^-1 + 2 s)^-1`` and mass ``det(I + 2 s S)^(-1/2)``, and its fourth moments follow from
Isserlis' theorem. Everything is written with ``R = (I + 2 s S)^-1`` (bounded for all ``s``).

The ``s`` integrals are trapezoidal sums in ``tau = log(s * scale)`` (exponentially accurate:
the integrands are analytic in a strip ``|Im tau| < pi``). One batch: step 1/2 on
``[-40, 60]`` (201 nodes, relative error about 1e-12 in float64). Two batches normalised
separately need ``1 / (|z1| |z2|)``, a two-dimensional integral over ``(s, t)``: step 1 on
``[-50, 50]`` in each (101 x 101 nodes, relative error about 1e-8; about 1e-6 for two nearly
identical batches, whose joint covariance is nearly singular).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from .._numerics import clipped_correlation, safe_divide, safe_sqrt

_HI = jax.lax.Precision.HIGHEST
_ONE = (np.arange(-40.0, 60.0 + 0.25, 0.5), 0.5)   # (tau nodes, step), one batch
_TWO = (np.arange(-50.0, 50.0 + 0.5, 1.0), 1.0)    # per axis, two batches


@functools.cache
def helmert(m: int) -> np.ndarray:
    """An orthonormal basis ``(m, m - 1)`` of the vectors of ``R^m`` with zero sum."""
    q = np.zeros((m, m - 1))
    for j in range(1, m):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -j
        q[:, j - 1] /= np.sqrt(j * (j + 1))
    return q


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HI)


def _jitter(tr, m: int, dtype):
    """A diagonal shift far above rounding (which could make a low-rank ``S`` indefinite at
    large ``s``) and far below the results' accuracy: ``8 m`` machine epsilons of the mean
    eigenvalue."""
    return 8 * m * jnp.finfo(dtype).eps * tr


def _tilt(g):
    """``(log det G, G^-1)`` of symmetric positive definite ``G`` (batched)."""
    chol = jnp.linalg.cholesky(g)
    eye = jnp.broadcast_to(jnp.eye(g.shape[-1], dtype=g.dtype), g.shape)
    inv_l = solve_triangular(chol, eye, lower=True)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    return logdet, jnp.einsum("...ki,...kj->...ij", inv_l, inv_l, precision=_HI)


def centred_cross(k12):
    """``P1 k12 P2``: the cross-covariance of the centred vectors of two groups."""
    q1 = jnp.asarray(helmert(k12.shape[0]), k12.dtype)
    q2 = jnp.asarray(helmert(k12.shape[1]), k12.dtype)
    return _mm(_mm(q1, _mm(_mm(q1.T, k12), q2)), q2.T)


def centred(c):
    """``P c P``: the covariance of the centred vector ``u = P h`` of ``h ~ N(0, c)``."""
    p = centred_cross(c)
    return (p + p.T) / 2


def _reduced(c, q):
    s = _mm(_mm(q.T, c), q)
    return (s + s.T) / 2


def _one_batch_tilt(c, eps):
    """The Laplace nodes of one group: ``(q, eye, s, r, g)`` with ``q`` the Helmert basis,
    ``s`` the nodes, ``r = (I + 2 s S)^-1`` and ``g`` the weights (``ds / s`` times the
    tilt's mass)."""
    big_m = c.shape[0]
    m = big_m - 1
    q = jnp.asarray(helmert(big_m), c.dtype)
    s_mat = _reduced(c, q)
    tr = jnp.trace(s_mat) / m
    eye = jnp.eye(m, dtype=c.dtype)
    s_mat = s_mat + _jitter(tr, m, c.dtype) * eye
    cc = big_m * eps
    scale = 2 * tr + cc
    scale = jnp.where(scale > 0, scale, 1)
    tau, h = _ONE
    s = jnp.exp(jnp.asarray(tau, c.dtype)) / scale
    logdet, r = _tilt(eye[None] + 2 * s[:, None, None] * s_mat[None])
    g = h * jnp.exp(-s * cc - logdet / 2)
    return q, eye, s, r, g


def one_batch(c, theta, eps):
    """``(E[y y^T], E[J theta J^T])`` for one group: ``c`` (M, M) the covariance of ``h``,
    ``theta`` (M, M) the NTK of ``h`` (or None), ``J = dy/dh``."""
    big_m = c.shape[0]
    q, eye, s, r, g = _one_batch_tilt(c, eps)
    a = (eye[None] - r) / 2                                     # s * (tilted covariance)
    nngp = big_m * _mm(_mm(q, jnp.einsum("n,nij->ij", g, a, precision=_HI)), q.T)
    if theta is None:
        return nngp, None
    th = _reduced(theta, q)
    b = (eye[None] + r) / 2                                     # I - s * (tilted covariance)
    # E[J theta J^T] / M = E[(I - zz^T/q) th (I - zz^T/q) / q]: under the tilt, Isserlis gives
    # (I - A) th (I - A) + tr(th A) A / 2 per unit of ds
    tra = jnp.einsum("ij,nji->n", th, a, precision=_HI)
    per = jnp.einsum("nik,kl,nlj->nij", b, th, b, precision=_HI) + (tra / 2)[:, None,
                                                                                   None] * a
    ntk = big_m * _mm(_mm(q, jnp.einsum("n,nij->ij", g * s, per, precision=_HI)), q.T)
    return nngp, ntk


def _two_batch_tilt(c1, c2, k12, eps):
    """The Laplace nodes of two groups normalised separately: ``(q1, q2, ss, row)`` with
    ``q1``, ``q2`` the Helmert bases, ``ss`` the nodes of ``s`` (one scan step each) and
    ``row(s) = (ts, z, r, b)``: for every node ``t`` of the second axis, the weight ``z`` (the
    trapezoidal steps, ``1 / pi`` and the tilt's mass), ``b = 2 D^1/2 S D^1/2`` with
    ``D = diag(s, ..., s, t, ..., t)`` and ``r = (I + b)^-1``."""
    m1_, m2_ = c1.shape[0], c2.shape[0]
    m1, m2 = m1_ - 1, m2_ - 1
    dtype = c1.dtype
    q1 = jnp.asarray(helmert(m1_), dtype)
    q2 = jnp.asarray(helmert(m2_), dtype)
    s11, s22 = _reduced(c1, q1), _reduced(c2, q2)
    s12 = _mm(_mm(q1.T, k12), q2)
    tr1, tr2 = jnp.trace(s11) / m1, jnp.trace(s22) / m2
    m = m1 + m2
    jit = jnp.concatenate([jnp.full((m1,), _jitter(tr1, m, dtype), dtype),
                           jnp.full((m2,), _jitter(tr2, m, dtype), dtype)])
    s_mat = jnp.block([[s11, s12], [s12.T, s22]]) + jnp.diag(jit)
    c1e, c2e = m1_ * eps, m2_ * eps
    sc1, sc2 = 2 * tr1 + c1e, 2 * tr2 + c2e
    sc1, sc2 = jnp.where(sc1 > 0, sc1, 1), jnp.where(sc2 > 0, sc2, 1)
    tau, h = _TWO
    base = jnp.exp(jnp.asarray(tau, dtype))
    ss, ts = base / sc1, base / sc2
    eye = jnp.eye(m, dtype=dtype)

    def row(s):
        d = jnp.concatenate([jnp.broadcast_to(s, (ts.shape[0], m1)),
                             jnp.broadcast_to(ts[:, None], (ts.shape[0], m2))], 1)
        root = jnp.sqrt(2 * d)
        b = root[:, :, None] * s_mat[None] * root[:, None, :]
        logdet, r = _tilt(eye[None] + b)
        z = h * h * jnp.exp(-s * c1e - ts * c2e - logdet / 2) / np.pi
        return ts, z, r, b

    return q1, q2, ss, row


def two_batches(c1, c2, k12, theta12, eps):
    """``(E[y1 y2^T], E[J1 theta12 J2^T])`` for two groups normalised separately, from their
    covariances ``c1``, ``c2``, their cross-covariance ``k12`` and cross-NTK ``theta12``."""
    m1_, m2_ = c1.shape[0], c2.shape[0]
    m1, m2 = m1_ - 1, m2_ - 1
    q1, q2, ss, tilt_row = _two_batch_tilt(c1, c2, k12, eps)
    th = None if theta12 is None else _mm(_mm(q1.T, theta12), q2)

    def row(carry, s):
        ts, z, r, _ = tilt_row(s)
        r11, r12, r22 = r[:, :m1, :m1], r[:, :m1, m1:], r[:, m1:, m1:]
        nngp = carry[0] - jnp.einsum("n,nij->ij", z / 2, r12, precision=_HI)
        if th is None:
            return (nngp, carry[1]), None
        # (1/pi) sqrt(st) Z [R11 th R22 + R12 th^T R12 + R12 tr(th^T R12)] per dtau dsigma
        tr12 = jnp.einsum("ij,nij->n", th, r12, precision=_HI)
        per = (jnp.einsum("nik,kl,nlj->nij", r11, th, r22, precision=_HI)
               + jnp.einsum("nik,lk,nlj->nij", r12, th, r12, precision=_HI)
               + tr12[:, None, None] * r12)
        ntk = carry[1] + jnp.einsum("n,nij->ij", z * (jnp.sqrt(s) * jnp.sqrt(ts)), per,
                                    precision=_HI)  # s * ts overflows float32
        return (nngp, ntk), None

    zero = jnp.zeros((m1, m2), c1.dtype)
    (nngp, ntk), _ = jax.lax.scan(row, (zero, zero), ss)
    norm = float(np.sqrt(m1_ * m2_))  # a Python float keeps float32 inputs float32
    nngp = norm * _mm(_mm(q1, nngp), q2.T)
    return nngp, None if th is None else norm * _mm(_mm(q1, ntk), q2.T)


def two_batches_abrelu(c1, c2, k12, theta12, eps, a, b):
    """``(E[phi(y1) phi(y2)^T], E[D1 (J1 theta12 J2^T) D2])`` for two groups normalised
    separately and followed by ``phi = ABRelu(a, b)``; arguments as in `two_batches`.

    As in `one_batch_abrelu`, ``phi(y) = sqrt(M / q) phi(u)``; the powers ``q1^-a q2^-b``
    (``a, b`` in {1/2, 3/2}) are Laplace integrals over ``(s, t)``. With ``Sigma`` the tilted
    joint covariance of ``(sqrt(s) u1, sqrt(t) u2)`` (blocks ``Sigma11``, ``Sigma12``,
    ``Sigma22``), ``N``, ``D`` the arc-cosine maps of its cross block, ``E_ij =
    E[phi''(u1_i) phi(u2_j)]``, ``E'_ij = E[phi(u1_i) phi''(u2_j)]`` and ``T = P1 theta12 P2``,
    Gaussian integration by parts gives, per ``dtau dsigma`` (``1 / pi`` and the mass aside)::

        nngp:  N
        ntk:   sqrt(s t) [T o D - 2 ((Sigma11 T + T Sigma22) o D + F + F')
                          + 4 (sum(T o Sigma12) N + (Sigma11 T Sigma22 + Sigma12 T^T Sigma12)
                               o D + G + G')]

    with ``F_ij = (T Sigma21)_ii E_ij``, ``F'_ij = (Sigma21 T)_jj E'_ij``, ``G_ij =
    (Sigma11 T Sigma21)_ii E_ij``, ``G'_ij = (Sigma21 T Sigma22)_jj E'_ij``. For ``a == b``
    this is `two_batches` times ``a**2``.
    """
    from .activations import abrelu_dual

    nngp_fn, d_nngp_fn = abrelu_dual(a, b)
    factor = (a - b) ** 2 / (2 * np.pi)
    m1_, m2_ = c1.shape[0], c2.shape[0]
    m1 = m1_ - 1
    q1, q2, ss, tilt_row = _two_batch_tilt(c1, c2, k12, eps)
    t = None if theta12 is None else _mm(_mm(q1, _mm(_mm(q1.T, theta12), q2)), q2.T)

    def full(q_a, block, q_b):
        return jnp.einsum("ik,nkl,jl->nij", q_a, block, q_b, precision=_HI)

    def row(carry, s):
        ts, z, r, tilt = tilt_row(s)
        # (I - R) / 2 as R b / 2: no cancellation where s or t is small (float32)
        half = jnp.einsum("nik,nkj->nij", r, tilt, precision=_HI) / 2
        s11 = full(q1, half[:, :m1, :m1], q1)
        s22 = full(q2, half[:, m1:, m1:], q2)
        s12 = full(q1, half[:, :m1, m1:], q2)
        s11 = (s11 + jnp.swapaxes(s11, 1, 2)) / 2
        s22 = (s22 + jnp.swapaxes(s22, 1, 2)) / 2
        v1 = jnp.diagonal(s11, axis1=1, axis2=2)[:, :, None]
        v2 = jnp.diagonal(s22, axis1=1, axis2=2)[:, None, :]
        n_per = nngp_fn(s12, v1, v2)
        nngp = carry[0] + jnp.einsum("n,nij->ij", z, n_per, precision=_HI)
        if t is None:
            return (nngp, carry[1]), None
        d = d_nngp_fn(s12, v1, v2)
        corr = clipped_correlation(s12, v1, v2)
        sq = factor * safe_sqrt(1 - corr * corr)
        e = sq * safe_divide(safe_sqrt(v2), safe_sqrt(v1))          # E[phi''(u1_i) phi(u2_j)]
        e2 = sq * safe_divide(safe_sqrt(v1), safe_sqrt(v2))         # E[phi(u1_i) phi''(u2_j)]
        s21 = jnp.swapaxes(s12, 1, 2)
        t_s21 = jnp.einsum("ik,nkj->nij", t, s21, precision=_HI)          # T Sigma21
        s21_t = jnp.einsum("nik,kj->nij", s21, t, precision=_HI)          # Sigma21 T
        s11_t = jnp.einsum("nik,kj->nij", s11, t, precision=_HI)          # Sigma11 T
        t_s22 = jnp.einsum("ik,nkj->nij", t, s22, precision=_HI)          # T Sigma22
        s11_t_s21 = jnp.einsum("nik,nkj->nij", s11_t, s21, precision=_HI)
        s21_t_s22 = jnp.einsum("nik,nkj->nij", s21_t, s22, precision=_HI)
        s11_t_s22 = jnp.einsum("nik,nkj->nij", s11_t, s22, precision=_HI)
        s12_tt_s12 = jnp.einsum("nik,lk,nlj->nij", s12, t, s12, precision=_HI)
        diag = (lambda x: jnp.diagonal(x, axis1=1, axis2=2))
        f = diag(t_s21)[:, :, None] * e
        f2 = diag(s21_t)[:, None, :] * e2
        g = diag(s11_t_s21)[:, :, None] * e
        g2 = diag(s21_t_s22)[:, None, :] * e2
        tau = jnp.einsum("ij,nij->n", t, s12, precision=_HI)[:, None, None]
        per = (t[None] * d - 2 * ((s11_t + t_s22) * d + f + f2)
               + 4 * (tau * n_per + (s11_t_s22 + s12_tt_s12) * d + g + g2))
        ntk = carry[1] + jnp.einsum("n,nij->ij", z * (jnp.sqrt(s) * jnp.sqrt(ts)), per,
                                    precision=_HI)  # s * ts overflows float32
        return (nngp, ntk), None

    zero = jnp.zeros((m1_, m2_), c1.dtype)
    (nngp, ntk), _ = jax.lax.scan(row, (zero, zero), ss)
    norm = float(np.sqrt(m1_ * m2_))
    return norm * nngp, None if t is None else norm * ntk


def one_batch_abrelu(c, theta, eps, a, b):
    """``(E[phi(y) phi(y)^T], E[D (J theta J^T) D])`` for one group followed by
    ``phi = ABRelu(a, b)`` (``D = diag(phi'(y))``), ``c``, ``theta`` as in `one_batch`.

    ``phi`` is positively homogeneous, so ``phi(y) = sqrt(M / q) phi(u)`` and ``phi'(y) =
    phi'(u)``: every term is a Gaussian expectation of ``u`` times a power of ``1 / q``, which
    the Laplace transform turns into the tilted Gaussian of `one_batch`. With ``Sigma`` the
    tilted covariance of ``u`` (times ``s``), ``N``, ``D`` the arc-cosine maps of ``Sigma`` and
    ``E_ij = E[phi''(u_i) phi(u_j)] = (a - b)**2 / (2 pi) sqrt(det) / Sigma_ii`` (Gaussian
    integration by parts reduces the third and fourth moments to these), per unit of ``ds``::

        nngp:  M N / s
        ntk:   M [T o D - (T Sigma + Sigma T) o D - F - F^T
                  + (tr(T Sigma) N + 2 (Sigma T Sigma) o D + G + G^T) / 2]

    with ``T = P theta P``, ``F_ij = (T Sigma)_ii E_ij``, ``G_ij = (Sigma T Sigma)_ii E_ij``
    (``o`` elementwise). For ``a == b`` (a linear map) this is `one_batch` times ``a**2``.
    """
    from .activations import abrelu_dual

    nngp_fn, d_nngp_fn = abrelu_dual(a, b)
    factor = (a - b) ** 2 / (2 * np.pi)
    big_m = c.shape[0]
    q, eye, s, r, g = _one_batch_tilt(c, eps)
    sig = jnp.einsum("ik,nkl,jl->nij", q, (eye[None] - r) / 2, q, precision=_HI)  # s * tilted cov
    sig = (sig + jnp.swapaxes(sig, 1, 2)) / 2
    var = jnp.diagonal(sig, axis1=1, axis2=2)
    v1, v2 = var[:, :, None], var[:, None, :]
    nngp_s = nngp_fn(sig, v1, v2)
    nngp = big_m * jnp.einsum("n,nij->ij", g, nngp_s, precision=_HI)
    if theta is None:
        return nngp, None
    t = _mm(_mm(q, _reduced(theta, q)), q.T)
    d = d_nngp_fn(sig, v1, v2)
    corr = clipped_correlation(sig, v1, v2)
    e = factor * safe_divide(safe_sqrt(v2), safe_sqrt(v1)) * safe_sqrt(1 - corr * corr)
    ts = jnp.einsum("ik,nkj->nij", t, sig, precision=_HI)        # T Sigma
    sts = jnp.einsum("nik,nkj->nij", sig, ts, precision=_HI)     # Sigma T Sigma
    d_ts = jnp.diagonal(ts, axis1=1, axis2=2)[:, :, None]
    d_sts = jnp.diagonal(sts, axis1=1, axis2=2)[:, :, None]
    f, gg = d_ts * e, d_sts * e
    tr_ts = jnp.trace(ts, axis1=1, axis2=2)[:, None, None]
    per = ((t[None] - ts - jnp.swapaxes(ts, 1, 2) + sts) * d - f - jnp.swapaxes(f, 1, 2)
           + (tr_ts * nngp_s + gg + jnp.swapaxes(gg, 1, 2)) / 2)
    ntk = big_m * jnp.einsum("n,nij->ij", g * s, per, precision=_HI)
    return nngp, ntk
