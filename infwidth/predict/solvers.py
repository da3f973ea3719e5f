"""Positive-definite solvers for the train-train kernel: dense Cholesky (the default) and
conjugate gradients over row tiles, each with its factorization object.

A kernel that is not positive definite raises :class:`NotPositiveDefiniteError` (never a
silent NaN); ``Cholesky(repair=True)`` instead adds the smallest diagonal jitter that makes it
factorizable and warns how much it added.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from ._helpers import NotPositiveDefiniteError, blas_threads, is_concrete, mm, not_pd_message

__all__ = ["CG", "CGFactor", "CGState", "Cholesky", "CholeskyFactor",
           "NotPositiveDefiniteError", "cg_init", "cg_update", "get_solver", "pcg",
           "tiled_matmul"]


@dataclasses.dataclass(frozen=True)
class Cholesky:
    """Dense Cholesky factorization (the default solver).

    Args:
      repair: if the matrix is not numerically positive definite, add ``jitter * mean diagonal``
        to the diagonal, with ``jitter`` growing from ``1e-12`` (float64) or ``1e-6`` (float32)
        by factors of 10, until it factorizes, and warn how much was added. If false (default),
        raise :class:`NotPositiveDefiniteError`.
      max_jitter: the largest relative jitter tried before giving up.

    >>> solver = Cholesky().factor(jnp.array([[2., 1.], [1., 2.]]))
    >>> solver.solve(jnp.array([[3.], [3.]])).round(5).tolist()
    [[1.0], [1.0]]
    """

    repair: bool = False
    max_jitter: float = 1e-2

    def factor(self, k2d):
        return CholeskyFactor(k2d, self.repair, self.max_jitter)


@dataclasses.dataclass(frozen=True)
class CG:
    """Conjugate gradients: no factorization and no second ``N x N`` array.

    Every right-hand-side column is solved independently (its own step sizes) with a Jacobi
    preconditioner; the matrix-vector products run over row tiles of ``tile_size`` rows, so
    the intermediate memory is ``tile_size * N`` per column block. Use it for large training
    sets where a dense ``O(N^3)`` factorization is too slow; the number of iterations grows
    with the square root of the condition number, so add a little ``diag_reg``.

    Args:
      tol: relative residual ``||K x - b|| / ||b||`` at which a column stops.
      maxiter: iteration cap (default ``10 * N``). Not converging raises an error.
      tile_size: rows of the matrix per tile in the matrix-vector products.

    >>> solver = CG(tol=1e-6).factor(jnp.array([[2., 1.], [1., 2.]]))
    >>> solver.solve(jnp.array([[3.], [3.]])).round(5).tolist()
    [[1.0], [1.0]]
    """

    tol: float = 1e-10
    maxiter: int | None = None
    tile_size: int = 1024

    def factor(self, k2d):
        return CGFactor(k2d, self)


SOLVERS = {"cholesky": Cholesky(), "cg": CG()}


def get_solver(solver):
    """Returns a solver object from a name ('cholesky', 'cg') or a `Cholesky`/`CG` instance."""
    if isinstance(solver, str):
        if solver.lower() not in SOLVERS:
            raise ValueError(f"solver={solver!r}: must be one of {sorted(SOLVERS)} or a "
                             f"Cholesky(...) / CG(...) instance.")
        return SOLVERS[solver.lower()]
    if hasattr(solver, "factor"):
        return solver
    raise TypeError(f"solver={solver!r}: must be one of {sorted(SOLVERS)} or a Cholesky(...) / "
                    f"CG(...) instance.")


class CholeskyFactor:
    """What `Cholesky.factor` returns: the lower Cholesky factor of the (repaired) kernel.

    >>> f = CholeskyFactor(jnp.array([[4., 0.], [0., 1.]]), repair=False, max_jitter=1e-2)
    >>> f.solve(jnp.array([[4.], [1.]])).tolist()
    [[1.0], [1.0]]
    """

    def __init__(self, k2d, repair, max_jitter):
        k2d = jnp.asarray(k2d)
        with blas_threads():
            factor = jax.block_until_ready(jnp.linalg.cholesky(k2d))
        self.pinv = None
        if is_concrete(factor) and not bool(jnp.all(jnp.isfinite(factor))):
            if not repair:
                self.pinv = _pseudo_inverse_if_singular(k2d)
                factor = None
            mean_diag = jnp.mean(jnp.diag(k2d))
            jitter = 1e-12 if k2d.dtype == jnp.float64 else 1e-6
            while True:
                if jitter > max_jitter:
                    raise NotPositiveDefiniteError(
                        f"Cholesky(repair=True): jitter up to {max_jitter:g} * mean diagonal did "
                        f"not make the kernel positive definite. " + not_pd_message(k2d))
                eye = jnp.eye(k2d.shape[0], dtype=k2d.dtype)
                with blas_threads():
                    factor = jax.block_until_ready(
                        jnp.linalg.cholesky(k2d + jitter * mean_diag * eye))
                if bool(jnp.all(jnp.isfinite(factor))):
                    break
                jitter *= 10
            warnings.warn(f"Cholesky(repair=True): the kernel was not positive definite; added "
                          f"{jitter:g} * mean diagonal ({float(jitter * mean_diag):.3g}) to its "
                          f"diagonal.", stacklevel=3)
        self.factor = factor

    def solve(self, b):
        """``K^{-1} b`` for ``b`` of shape ``(N, ...)`` (``K^+ b`` for a singular kernel)."""
        with blas_threads():
            if self.pinv is not None:
                return jax.block_until_ready(_pinv_solve(*self.pinv, b))
            return jax.block_until_ready(self._solve(self.factor, b))

    @staticmethod
    @jax.jit
    def _solve(factor, b):
        b2 = b.reshape(b.shape[0], -1)
        z = jsl.solve_triangular(factor, b2, lower=True)
        x = jsl.solve_triangular(factor, z, lower=True, trans="T")
        return x.reshape(b.shape)




def _pseudo_inverse_if_singular(k2d):
    """``(evecs, 1 / evals)`` of a kernel that is positive semi-definite up to rounding (its
    eigenvalues at rounding level, ``<= N * eps * max``, and the negative ones set to zero,
    their inverses to zero), with a warning; `NotPositiveDefiniteError` for a kernel with a
    negative eigenvalue beyond rounding (``< -1e3 * N * eps * max``, the tolerance `Eigen`
    warns at). The pseudo-inverse is the infinite-time limit of gradient descent (modes with
    zero eigenvalue never move) and the minimum-norm interpolant of the GP posterior mean."""
    with blas_threads():
        evals, evecs = jnp.linalg.eigh(k2d)
    n, eps = k2d.shape[0], float(jnp.finfo(k2d.dtype).eps)
    hi = max(float(evals[-1]), 0.0)
    if not bool(jnp.all(jnp.isfinite(evals))) or float(evals[0]) < -1e3 * n * eps * hi:
        raise NotPositiveDefiniteError(not_pd_message(k2d))
    keep = evals > n * eps * hi
    rank = int(jnp.sum(keep))
    warnings.warn(f"The kernel (plus diag_reg) is singular in {k2d.dtype}: numerical rank "
                  f"{rank} of {n} (smallest eigenvalue {float(evals[0]):.3g}, largest {hi:.3g}). "
                  f"Solving with its pseudo-inverse (the infinite-time limit of gradient "
                  f"descent); add diag_reg for a regularized solve.", stacklevel=4)
    return evecs, jnp.where(keep, 1 / jnp.where(keep, evals, 1), 0)


@jax.jit
def _pinv_solve(evecs, inv_evals, b):
    b2 = b.reshape(b.shape[0], -1)
    x = mm(evecs, inv_evals[:, None] * mm(evecs.T, b2))
    return x.reshape(b.shape)


def tiled_matmul(k2d, x, tile_size: int):
    """``k2d @ x`` computed over row tiles of ``k2d`` (bounded intermediate memory).

    >>> tiled_matmul(jnp.eye(3), jnp.ones((3, 1)), tile_size=2).ravel().tolist()
    [1.0, 1.0, 1.0]
    """
    n = k2d.shape[0]
    if n <= tile_size:
        return mm(k2d, x)
    n_full = n // tile_size * tile_size
    tiles = k2d[:n_full].reshape(n // tile_size, tile_size, -1)
    out = jax.lax.map(lambda a: mm(a, x), tiles).reshape(n_full, -1)
    if n_full < n:
        out = jnp.concatenate([out, mm(k2d[n_full:], x)])
    return out


class CGState(NamedTuple):
    """The state of a conjugate-gradient run, one independent run per column of ``b``: the
    iteration count, iterate ``x``, residual ``r = b - A x``, search direction ``p`` and
    ``rz = r . M^{-1} r`` per column. A saved state resumes the run exactly (`cg_update`)."""

    i: jax.Array
    x: jax.Array
    r: jax.Array
    p: jax.Array
    rz: jax.Array


def cg_init(b, precond) -> CGState:
    """The state before the first step of preconditioned CG on ``A x = b`` from ``x = 0``;
    ``precond(r)`` applies ``M^{-1}`` (Hestenes & Stiefel 1952)."""
    z0 = precond(b)
    return CGState(jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, z0, jnp.sum(b * z0, axis=0))


def cg_update(state: CGState, ap, precond, target) -> CGState:
    """One preconditioned CG step given ``ap = A @ state.p``; columns whose residual norm is
    already at most ``target`` (per column) stay where they are."""
    i, x, r, p, rz = state
    pap = jnp.sum(p * ap, axis=0)
    active = jnp.linalg.norm(r, axis=0) > target
    alpha = jnp.where(active & (pap > 0), rz / jnp.where(pap > 0, pap, 1), 0)
    x = x + alpha[None] * p
    r = r - alpha[None] * ap
    z = precond(r)
    rz_new = jnp.sum(r * z, axis=0)
    beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1), 0)
    return CGState(i + 1, x, r, z + beta[None] * p, rz_new)


def cg_targets(b, tol):
    """``(tol * ||b||, ||b||)`` per column (``||b|| = 0`` counted as 1)."""
    b_norm = jnp.linalg.norm(b, axis=0)
    b_norm = jnp.where(b_norm > 0, b_norm, 1)
    return tol * b_norm, b_norm


@functools.partial(jax.jit, static_argnames=("maxiter", "tile_size"))
def pcg(k2d, b, tol, maxiter: int, tile_size: int):
    """Jacobi-preconditioned conjugate gradients, one independent run per column of ``b``
    (shape ``(N, M)``): ``(x, iterations, largest relative residual)`` (Hestenes & Stiefel 1952).
    The matrix-free solver of `infwidth.predict.kernel_regression` runs the same steps
    (`cg_update`) with streamed kernel tiles.

    >>> x, _, res = pcg(jnp.array([[2., 1.], [1., 2.]]), jnp.array([[3.], [3.]]), 1e-8, 20, 8)
    >>> x.round(6).ravel().tolist(), bool(res < 1e-8)
    ([1.0, 1.0], True)
    """
    diag = jnp.diag(k2d)
    inv_diag = jnp.where(diag > 0, 1 / jnp.where(diag > 0, diag, 1), 1)[:, None]

    def precond(r):
        return inv_diag * r

    target, b_norm = cg_targets(b, tol)

    def cond(state):
        return (state.i < maxiter) & jnp.any(jnp.linalg.norm(state.r, axis=0) > target)

    def body(state):
        return cg_update(state, tiled_matmul(k2d, state.p, tile_size), precond, target)

    state = jax.lax.while_loop(cond, body, cg_init(b, precond))
    return state.x, state.i, jnp.max(jnp.linalg.norm(state.r, axis=0) / b_norm)


class CGFactor:
    """What `CG.factor` returns: the kernel and the CG settings; ``solve`` runs `pcg`.

    >>> f = CGFactor(jnp.array([[4., 0.], [0., 1.]]), CG())
    >>> f.solve(jnp.array([[4.], [1.]])).round(6).tolist()
    [[1.0], [1.0]]
    """

    def __init__(self, k2d, spec: CG):
        self.k2d = jnp.asarray(k2d)
        self.spec = spec
        if is_concrete(self.k2d) and not bool(jnp.all(jnp.diag(self.k2d) > 0)):
            raise NotPositiveDefiniteError("CG: the kernel has a diagonal entry <= 0, so it is "
                                           "not positive definite. " + not_pd_message(self.k2d))

    def solve(self, b):
        n = self.k2d.shape[0]
        maxiter = self.spec.maxiter or 10 * n
        b2 = b.reshape(n, -1).astype(self.k2d.dtype)
        x, iters, res = pcg(self.k2d, b2, self.spec.tol, maxiter, self.spec.tile_size)
        if is_concrete(x):
            res = float(res)
            if not np.isfinite(res) or res > max(self.spec.tol * 10, 1e-14):
                raise NotPositiveDefiniteError(
                    f"CG did not converge: relative residual {res:.3g} after {int(iters)} "
                    f"iterations (tol={self.spec.tol:g}). The kernel may not be positive "
                    f"definite or is badly conditioned: add diag_reg, use float64, raise maxiter "
                    f"or use solver='cholesky'.")
        return x.reshape(b.shape)
