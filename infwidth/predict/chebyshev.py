"""Chebyshev expansion of the finite-time matrix functions of gradient flow,
``exp(-s K)`` and ``K^{-1}(1 - exp(-s K))``, applied to a few right-hand sides without an
``O(N^3)`` eigendecomposition (the fast path of `gradient_descent_mse` for large kernels).

The functions are entire, so on a bound ``[lo, hi]`` of the spectrum their Chebyshev
coefficients fall super-exponentially once the degree passes about ``sqrt(s * hi)``; the degree
is taken where they reach float64 rounding, and each degree costs one product with ``K`` shared
by every time and function.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._helpers import is_concrete, mm
from .solvers import tiled_matmul


def chebyshev_plan(lo: float, hi: float, fns, max_degree: int, rtol: float = 4e-15):
    """Chebyshev coefficients ``(len(fns), degree + 1)`` of scalar functions on ``[lo, hi]``.

    The degree is the smallest beyond which every coefficient is below ``rtol`` times the
    function's largest one (the rounding floor of the coefficients themselves), judged from
    ``2 * max_degree + 2`` interpolation nodes; returns ``None`` when that needs more than
    ``max_degree``.

    >>> c = chebyshev_plan(0., 2., [lambda x: x ** 2], 10)
    >>> c.round(6).tolist()
    [[1.5, 2.0, 0.5]]
    """
    n = 2 * max_degree + 2
    theta = np.pi * (np.arange(n) + 0.5) / n
    lam = (np.cos(theta) + 1) / 2 * (hi - lo) + lo
    values = np.stack([f(lam) for f in fns])  # (J, n)
    # cos(k theta_j) with exact argument reduction: k (2j + 1) mod 4n, in units of pi / 2n.
    m = np.outer(2 * np.arange(n) + 1, np.arange(n)) % (4 * n)
    coeffs = 2 / n * values @ np.cos(np.pi * m / (2 * n))
    coeffs[:, 0] /= 2
    mags = np.abs(coeffs)
    scale = np.maximum(mags.max(axis=1, keepdims=True), np.finfo(float).tiny)
    above = mags > rtol * scale
    last = np.array([max(np.nonzero(row)[0], default=0) for row in above])  # last significant
    if last.max() > max_degree:
        return None
    return coeffs[:, :max(int(last.max()), 1) + 1]


def chebyshev_apply(k2d, b, coeffs, lo, hi, tile_size: int = 4096):
    """``sum_k coeffs[j, k] T_k(A) b`` for every row ``j``, ``A = (2 K - (hi + lo) I)/(hi - lo)``.

    One matrix product with ``k2d`` per degree, shared by all functions: ``(J, N, M)`` out. The
    coefficients are zero-padded to a power of two so that one compilation serves many degrees.
    """
    coeffs = np.asarray(coeffs)
    n = coeffs.shape[1]
    padded = np.zeros((coeffs.shape[0], max(16, 1 << (n - 1).bit_length())))
    padded[:, :n] = coeffs
    return _chebyshev_apply(k2d, b, jnp.asarray(padded, k2d.dtype), n, lo, hi, tile_size)


@functools.partial(jax.jit, static_argnames="tile_size")
def _chebyshev_apply(k2d, b, coeffs, n_terms, lo, hi, tile_size):
    scale, shift = 2 / (hi - lo), (hi + lo) / (hi - lo)
    b = b.astype(k2d.dtype)

    def a_times(v):
        return scale * tiled_matmul(k2d, v, tile_size) - shift * v

    v0, v1 = b, a_times(b)
    out = coeffs[:, 0, None, None] * v0 + coeffs[:, 1, None, None] * v1

    def body(k, carry):
        v_prev, v, acc = carry
        v_next = 2 * a_times(v) - v_prev
        return v, v_next, acc + coeffs[:, k, None, None] * v_next

    _, _, out = jax.lax.fori_loop(2, n_terms, body, (v0, v1, out))
    return out


def spectrum_bounds(k2d):
    """``(lo, hi)`` enclosing the spectrum of a positive semi-definite ``k2d`` (float64 host
    values): ``hi`` is the smaller of the Gershgorin and Frobenius bounds, ``lo`` a hair below 0
    to cover rounding-level negative eigenvalues."""
    k = jnp.asarray(k2d)
    hi = float(jnp.minimum(jnp.abs(k).sum(axis=1).max(), jnp.linalg.norm(k)))
    hi = hi * (1 + 1e-6) + np.finfo(float).tiny
    return -1e-10 * hi, hi


def _neg_phi_np(lam, s):
    """``-(1 - exp(-lam s)) / lam`` in numpy, with the limit ``-s`` at ``lam = 0``."""
    x = lam * s
    small = np.abs(x) < 1e-8
    safe = np.where(small, 1.0, lam)
    return np.where(small, -s * (1 - x / 2), np.expm1(-x) / safe)


def _expm1_np(lam, s):
    return np.expm1(-lam * s)


class ChebyshevExpansion:
    """Finite-time matrix functions of one regularized train kernel by Chebyshev expansion
    (see `gradient_descent_mse`); ``apply`` returns ``None`` where the eigenbasis should be used.
    """

    def __init__(self, k2d_fn, method, dtype, layout, where):
        self.k2d_fn, self.method, self.dtype, self.where = k2d_fn, method, dtype, where
        self.p, self.n_cols = layout.n_rows, layout.n_cols
        self.used, self.k2d, self.bounds = 0, None, None

    def apply(self, s, rhs, k_td2, train):
        """``(expm1(-K s) rhs, K_td K^{-1} expm1(-K s) rhs)`` for times ``s`` (T,), or None."""
        forced = self.method == "chebyshev"
        if not forced and (self.method == "eigh" or self.dtype != jnp.float64 or self.p < 512
                           or self.n_cols > 256):
            return None
        if not is_concrete(s):
            return None
        s_np = np.asarray(s, np.float64)
        if not np.all(np.isfinite(s_np)):
            if forced:
                raise ValueError(f"{self.where}: finite_time_method='chebyshev' needs finite "
                                 f"times.")
            return None
        if self.k2d is None:
            k2d = self.k2d_fn()
            if not is_concrete(k2d):
                return None
            self.k2d, self.bounds = k2d, spectrum_bounds(k2d)
        lo, hi = self.bounds
        fns = [functools.partial(_expm1_np, s=si) for si in s_np] if train else []
        if k_td2 is not None:
            fns += [functools.partial(_neg_phi_np, s=si) for si in s_np]
        max_degree = max(self.p, 1024) if forced else max(self.p // 8 - self.used, 0)
        coeffs = chebyshev_plan(lo, hi, fns, max_degree) if max_degree > 1 else None
        if coeffs is None:
            if forced:
                raise ValueError(f"{self.where}: the Chebyshev expansion needs a degree above "
                                 f"{max_degree} at these times; use finite_time_method='eigh'.")
            return None
        self.used += coeffs.shape[1]
        out = chebyshev_apply(self.k2d, rhs, coeffs, lo, hi)
        n_t = s_np.size
        d_train = out[:n_t] if train else None
        d_test = None if k_td2 is None else mm(k_td2, out[-n_t:])
        return d_train, d_test
