"""Linear algebra behind the predictions: kernel layouts, diagonal regularization, positive-definite
solves (Cholesky or conjugate gradients on tiles) and cached eigendecompositions.

Kernels over outputs with several non-traced axes use neural-tangents' interleaved layout
``(N, N', H, H', ...)``; :func:`make_2d` turns them into the ``(N*H*..., N'*H'*...)`` matrix the
solvers work on and :func:`zip_axes` turns a ``(N, H, ..., N', H', ...)`` result back.

Numerics: use float64 (``jax.config.update('jax_enable_x64', True)``) for anything but a quick
look. Kernel matrices of wide networks are often badly conditioned, and float32 Cholesky factors
or eigenvectors then lose most of their digits. A kernel that is not positive definite raises
:class:`NotPositiveDefiniteError` (never a silent NaN); ``Cholesky(repair=True)`` instead adds
the smallest diagonal jitter that makes it factorizable and warns how much it added.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


class NotPositiveDefiniteError(ValueError):
    """The train-train kernel (plus ``diag_reg``) cannot be factorized as positive definite."""


# ----------------------------------------------------------------------------------------------
# layouts


def zip_axes(x, start: int = 0):
    """``(..., A, B, ..., A', B', ...) -> (..., A, A', B, B', ...)`` from axis ``start`` on.

    >>> zip_axes(jnp.zeros((2, 3, 4, 5))).shape
    (2, 4, 3, 5)
    """
    n = x.ndim - start
    if n % 2:
        raise ValueError(f"zip_axes: need an even number of axes after {start}, got {n}.")
    half = n // 2
    return jnp.moveaxis(x, range(start + half, x.ndim), range(start + 1, x.ndim, 2))


def unzip_axes(x, start: int = 0):
    """Inverse of :func:`zip_axes`: ``(..., A, A', B, B', ...) -> (..., A, B, ..., A', B', ...)``.

    >>> unzip_axes(jnp.zeros((2, 4, 3, 5))).shape
    (2, 3, 4, 5)
    """
    n = x.ndim - start
    if n % 2:
        raise ValueError(f"unzip_axes: need an even number of axes after {start}, got {n}.")
    half = n // 2
    return jnp.moveaxis(x, range(start + 1, x.ndim, 2), range(x.ndim - half, x.ndim))


def make_2d(k):
    """An interleaved kernel ``(N, N', H, H', ...)`` as the matrix ``(N*H*..., N'*H'*...)``.

    >>> make_2d(jnp.zeros((2, 3, 4, 5))).shape
    (8, 15)
    """
    k = jnp.asarray(k)
    if k.ndim % 2:
        raise ValueError(f"A kernel must have an even number of axes (pairs of batch/position "
                         f"axes), got shape {k.shape}.")
    k = unzip_axes(k)
    half = k.ndim // 2
    return k.reshape(math.prod(k.shape[:half]), math.prod(k.shape[half:]))


def regularize(k2d, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False):
    """``k2d + diag_reg * I``, with ``diag_reg`` in units of the mean diagonal unless absolute.

    This is neural-tangents' convention: ``diag_reg * trace(k) / n`` is added to the diagonal
    when ``diag_reg_absolute_scale`` is false.

    >>> regularize(jnp.array([[2., 0.], [0., 4.]]), 0.5).tolist()
    [[3.5, 0.0], [0.0, 5.5]]
    """
    if diag_reg == 0:
        return k2d
    scale = diag_reg if diag_reg_absolute_scale else diag_reg * jnp.trace(k2d) / k2d.shape[0]
    return k2d + scale * jnp.eye(k2d.shape[0], dtype=k2d.dtype)


def is_concrete(x) -> bool:
    """Whether ``x`` holds values (not a tracer inside ``jit``/``vmap``), so it can be checked."""
    return not isinstance(x, jax.core.Tracer)


# ----------------------------------------------------------------------------------------------
# solvers


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
        return _CholeskyFactor(k2d, self.repair, self.max_jitter)


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
        return _CGSolver(k2d, self)


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


def _not_pd_message(k2d, what="k_train_train"):
    evals = np.linalg.eigvalsh(np.asarray(k2d, np.float64))
    mean_diag = float(np.mean(np.diag(np.asarray(k2d))))
    return (f"{what} (plus diag_reg) is not positive definite in {k2d.dtype}: its smallest "
            f"eigenvalue is {evals[0]:.3g} (largest {evals[-1]:.3g}, mean diagonal "
            f"{mean_diag:.3g}). Fixes: add diagonal regularization (diag_reg=1e-6 or more, in "
            f"units of the mean diagonal), compute in float64 "
            f"(jax.config.update('jax_enable_x64', True)), or pass "
            f"solver=Cholesky(repair=True) to add the smallest jitter that factorizes it.")


class _CholeskyFactor:
    def __init__(self, k2d, repair, max_jitter):
        k2d = jnp.asarray(k2d)
        factor = jnp.linalg.cholesky(k2d)
        if is_concrete(factor) and not bool(jnp.all(jnp.isfinite(factor))):
            if not repair:
                raise NotPositiveDefiniteError(_not_pd_message(k2d))
            mean_diag = jnp.mean(jnp.diag(k2d))
            jitter = 1e-12 if k2d.dtype == jnp.float64 else 1e-6
            while True:
                if jitter > max_jitter:
                    raise NotPositiveDefiniteError(
                        f"Cholesky(repair=True): jitter up to {max_jitter:g} * mean diagonal did "
                        f"not make the kernel positive definite. " + _not_pd_message(k2d))
                eye = jnp.eye(k2d.shape[0], dtype=k2d.dtype)
                factor = jnp.linalg.cholesky(k2d + jitter * mean_diag * eye)
                if bool(jnp.all(jnp.isfinite(factor))):
                    break
                jitter *= 10
            warnings.warn(f"Cholesky(repair=True): the kernel was not positive definite; added "
                          f"{jitter:g} * mean diagonal ({float(jitter * mean_diag):.3g}) to its "
                          f"diagonal.", stacklevel=3)
        self.factor = factor

    def solve(self, b):
        """``K^{-1} b`` for ``b`` of shape ``(N, ...)``."""
        return _cho_solve(self.factor, b)


@jax.jit
def _cho_solve(factor, b):
    b2 = b.reshape(b.shape[0], -1)
    z = jsl.solve_triangular(factor, b2, lower=True)
    x = jsl.solve_triangular(factor, z, lower=True, trans="T")
    return x.reshape(b.shape)


def tiled_matmul(k2d, x, tile_size: int):
    """``k2d @ x`` computed over row tiles of ``k2d`` (bounded intermediate memory)."""
    n = k2d.shape[0]
    if n <= tile_size:
        return jnp.matmul(k2d, x, precision=_HIGHEST)
    n_full = n // tile_size * tile_size
    tiles = k2d[:n_full].reshape(n // tile_size, tile_size, -1)
    out = jax.lax.map(lambda a: jnp.matmul(a, x, precision=_HIGHEST), tiles).reshape(n_full, -1)
    if n_full < n:
        out = jnp.concatenate([out, jnp.matmul(k2d[n_full:], x, precision=_HIGHEST)])
    return out


def _pcg(k2d, b, tol, maxiter, tile_size):
    """Jacobi-preconditioned CG, one independent run per column of ``b`` (shape (N, M))."""
    diag = jnp.diag(k2d)
    inv_diag = jnp.where(diag > 0, 1 / jnp.where(diag > 0, diag, 1), 1)[:, None]
    b_norm = jnp.linalg.norm(b, axis=0)
    target = tol * jnp.where(b_norm > 0, b_norm, 1)

    def cond(state):
        i, _, r, _, _ = state
        return (i < maxiter) & jnp.any(jnp.linalg.norm(r, axis=0) > target)

    def body(state):
        i, x, r, p, rz = state
        kp = tiled_matmul(k2d, p, tile_size)
        pkp = jnp.sum(p * kp, axis=0)
        active = jnp.linalg.norm(r, axis=0) > target
        alpha = jnp.where(active & (pkp > 0), rz / jnp.where(pkp > 0, pkp, 1), 0)
        x = x + alpha * p
        r = r - alpha * kp
        z = inv_diag * r
        rz_new = jnp.sum(r * z, axis=0)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1), 0)
        return i + 1, x, r, z + beta * p, rz_new

    x0 = jnp.zeros_like(b)
    z0 = inv_diag * b
    state = (0, x0, b, z0, jnp.sum(b * z0, axis=0))
    i, x, r, _, _ = jax.lax.while_loop(cond, body, state)
    return x, i, jnp.max(jnp.linalg.norm(r, axis=0) / jnp.where(b_norm > 0, b_norm, 1))


_pcg_jit = jax.jit(_pcg, static_argnames=("maxiter", "tile_size"))


class _CGSolver:
    def __init__(self, k2d, spec: CG):
        self.k2d = jnp.asarray(k2d)
        self.spec = spec
        if is_concrete(self.k2d) and not bool(jnp.all(jnp.diag(self.k2d) > 0)):
            raise NotPositiveDefiniteError("CG: the kernel has a diagonal entry <= 0, so it is "
                                           "not positive definite. " + _not_pd_message(self.k2d))

    def solve(self, b):
        n = self.k2d.shape[0]
        maxiter = self.spec.maxiter or 10 * n
        b2 = b.reshape(n, -1).astype(self.k2d.dtype)
        x, iters, res = _pcg_jit(self.k2d, b2, self.spec.tol, maxiter, self.spec.tile_size)
        if is_concrete(x):
            res = float(res)
            if not np.isfinite(res) or res > max(self.spec.tol * 10, 1e-14):
                raise NotPositiveDefiniteError(
                    f"CG did not converge: relative residual {res:.3g} after {int(iters)} "
                    f"iterations (tol={self.spec.tol:g}). The kernel may not be positive "
                    f"definite or is badly conditioned: add diag_reg, use float64, raise maxiter "
                    f"or use solver='cholesky'.")
        return x.reshape(b.shape)


# ----------------------------------------------------------------------------------------------
# eigendecomposition


class Eigen:
    """Eigendecomposition ``K = V diag(evals) V^T`` of a symmetric kernel, computed once.

    Eigenvalues at rounding level, ``<= N * eps * max(evals)`` (numpy's ``matrix_rank``
    threshold, ``eps`` of the kernel's dtype), and negative ones are set to exactly zero in every
    function of the kernel: those directions are never learned, even at ``t = inf``, instead of
    being fitted through a ``1 / 1e-17`` (clearly negative eigenvalues also warn).
    """

    def __init__(self, k2d):
        k2d = jnp.asarray(k2d)
        evals, self.evecs = jnp.linalg.eigh(k2d, symmetrize_input=True)
        eps = jnp.finfo(evals.dtype).eps
        if is_concrete(evals):
            if not bool(jnp.all(jnp.isfinite(evals))):
                raise NotPositiveDefiniteError("The kernel has non-finite entries or "
                                               "eigenvalues; check its inputs.")
            lo, hi = float(evals[0]), float(evals[-1])
            if lo < -1e3 * float(eps) * k2d.shape[0] * max(hi, 0):
                warnings.warn(f"The kernel is not positive semi-definite (smallest eigenvalue "
                              f"{lo:.3g}, largest {hi:.3g}); negative eigenvalues are clipped "
                              f"to 0. Use float64 or add diag_reg.", stacklevel=3)
        cutoff = k2d.shape[0] * eps * jnp.max(evals, initial=0)
        self.evals = jnp.where(evals > cutoff, evals, 0)


def expm1_neg(evals, s):
    """``expm1(-evals * s)`` with ``0 * inf`` taken as 0 (zero eigenvalues never move)."""
    x = jnp.where(evals > 0, evals * s, 0)
    return jnp.expm1(-x)


def phi(evals, s):
    """``(1 - exp(-evals * s)) / evals``, with its limit ``s`` at ``evals = 0`` (``0`` if
    ``s = inf``, the pseudo-inverse convention) and ``1 / evals`` at ``s = inf``."""
    pos = evals > 0
    safe = jnp.where(pos, evals, 1)
    at_zero = jnp.where(jnp.isinf(s), 0, s)
    return jnp.where(pos, -expm1_neg(evals, s) / safe, at_zero)
