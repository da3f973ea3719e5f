"""The three solvers behind `infwidth.predict.kernel_regression` (see that module)."""

from __future__ import annotations

import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from ._helpers import NotPositiveDefiniteError
from ._streamed import feature_moments, kernel_columns, make_products, n_chunks
from .solvers import CGState, cg_init, cg_targets, cg_update

_HIGHEST = jax.lax.Precision.HIGHEST


class NotConvergedError(RuntimeError):
    """Conjugate gradients stopped at ``maxiter`` above the tolerance (the message names the
    residual and how to go on); no half-solved result is returned."""


def _ridge(diag_reg, absolute, mean_diag):
    return float(diag_reg) if absolute else float(diag_reg) * float(mean_diag)


def _in_chunks(fn, x, size):
    """``fn`` on row chunks of ``x``, concatenated (bounded memory for large test sets)."""
    parts = [fn(np.asarray(x[i:i + size])) for i in range(0, x.shape[0], size)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


@functools.lru_cache(maxsize=32)
def _jitted(kernel_fn):
    """``kernel_fn`` compiled as one program (much faster to build than op by op)."""
    return jax.jit(kernel_fn, static_argnums=2)


def _kernel_2d(kernel_fn, a, b, get):
    k = _jitted(kernel_fn)(a, b, get)
    if k.ndim != 2:
        raise ValueError(f"kernel_regression: kernel_fn returns a kernel of shape {k.shape}; "
                         f"end the network in a readout without spatial axes (Flatten or "
                         f"GlobalAvgPool, then Dense).")
    return k


# ----------------------------------------------------------------------------------------------
# Cholesky


_BLOCK = 4096


def _factor(k, lam, block: int = _BLOCK):
    """The lower Cholesky factor of ``k + lam I``, in place on one host copy of ``k``, blocked:
    LAPACK ``potrf`` / ``trsm`` on blocks of at most ``block`` columns and matrix products for
    the trailing updates (both jax 0.10's and scipy's LAPACK crash at ``N = 20,000``, past
    2 GiB in one call). The upper triangle is left as it was (never read)."""
    import scipy.linalg

    a = np.array(k)  # the one host copy; the device array is released by the caller
    a[np.diag_indices_from(a)] += lam
    n = a.shape[0]
    for j in range(0, n, block):
        jj = slice(j, min(j + block, n))
        try:
            a[jj, jj] = scipy.linalg.cholesky(a[jj, jj], lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise NotPositiveDefiniteError(
                "kernel_regression(solver='cholesky'): the train-train kernel plus the ridge "
                "is not positive definite; raise diag_reg.") from None
        if jj.stop < n:
            rest = slice(jj.stop, n)
            a[rest, jj] = scipy.linalg.solve_triangular(a[jj, jj], a[rest, jj].T, lower=True,
                                                        check_finite=False).T
            for c in range(jj.stop, n, block):  # lower part of the trailing update only
                cc = slice(c, min(c + block, n))
                a[c:, cc] -= a[c:, jj] @ a[cc, jj].T
    return a


def _tri_solve(factor, b, trans: bool, block: int = _BLOCK):
    """``L^{-1} b`` (or ``L^{-T} b``) for the blocked factor, by blocks of rows."""
    import scipy.linalg

    n = factor.shape[0]
    x = np.array(b, dtype=factor.dtype)
    starts = list(range(0, n, block))
    for j in (reversed(starts) if trans else starts):
        jj = slice(j, min(j + block, n))
        if trans:  # L^T x = b: rows below jj are known
            x[jj] -= factor[jj.stop:, jj].T @ x[jj.stop:]
        else:
            x[jj] -= factor[jj, :j] @ x[:j]
        x[jj] = scipy.linalg.solve_triangular(factor[jj, jj], x[jj], lower=True,
                                              trans=1 if trans else 0, check_finite=False)
    return x


def cholesky_fit(kernel_fn, x, y, get, diag_reg, absolute, tile_size=1024):
    x = np.asarray(x)
    k = _kernel_2d(kernel_fn, x, None, get)
    lam = _ridge(diag_reg, absolute, jnp.mean(jnp.diagonal(k)))
    k_host = np.asarray(k)
    del k
    factor = _factor(k_host, lam)
    del k_host
    if not np.all(np.isfinite(np.diagonal(factor))):
        raise NotPositiveDefiniteError("kernel_regression(solver='cholesky'): the train-train "
                                       "kernel plus the ridge is not positive definite; raise "
                                       "diag_reg.")
    alpha = _tri_solve(factor, _tri_solve(factor, np.asarray(y), False), True)

    def predict(x_test, compute_var):
        def one(xt):
            k_tx = np.asarray(_kernel_2d(kernel_fn, xt, x, get))
            mean = k_tx @ alpha
            if not compute_var:
                return (mean,)
            prior = np.diagonal(np.asarray(_kernel_2d(kernel_fn, xt, None, get)))
            half = _tri_solve(factor, k_tx.T, False)
            return mean, prior - np.sum(half * half, axis=0)

        out = _in_chunks(one, x_test, tile_size)
        return out[0], (out[1] if compute_var else None)

    return predict, {"lambda": lam}


# ----------------------------------------------------------------------------------------------
# random features


TILE = 1024  # rows of a kernel or feature tile unless told


def _largest_value(jaxpr) -> int:
    """Bytes of the largest value computed anywhere in ``jaxpr`` (inner jaxprs included)."""
    largest = 1
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            shape = getattr(v.aval, "shape", None)
            if shape is not None:
                largest = max(largest, math.prod(shape) * np.dtype(v.aval.dtype).itemsize)
        for param in eqn.params.values():
            for inner in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    largest = max(largest, _largest_value(inner))
    return largest


def feature_tile(phi, x, memory: int | None) -> int:
    """Inputs per feature tile: an eighth of ``memory`` over the bytes of the feature map's
    largest intermediate for one input (times 3, for the arrays live around it), in
    ``[1, TILE]``; ``TILE`` when the memory is unknown."""
    if memory is None:
        return TILE
    one = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), jnp.result_type(float))
    per_input = 3 * _largest_value(jax.make_jaxpr(phi)(one).jaxpr)
    return int(min(TILE, max(1, memory // 8 // per_input)))


def features_fit(kernel_fn, x, y, get, n_features, key, diag_reg, absolute, tile_size, mesh,
                 tqdm):
    from ..features import feature_fn
    from ..stax._memory import available_bytes

    phi = feature_fn(kernel_fn, key, n_features, get=get)
    if tile_size is None:
        tile_size = feature_tile(phi, x, available_bytes())
    bar = None if tqdm is None else tqdm(total=x.shape[0], desc="features", unit="pt")
    t0 = time.perf_counter()
    a, z, trace = feature_moments(phi, x, y, tile_size=tile_size, mesh=mesh, progress=bar)
    if bar is not None:
        bar.close()
    lam = _ridge(diag_reg, absolute, trace / x.shape[0])
    a = jnp.asarray(a) + lam * jnp.eye(a.shape[0], dtype=a.dtype)
    factor = jnp.linalg.cholesky(a)
    if not bool(jnp.all(jnp.isfinite(factor))):
        raise NotPositiveDefiniteError("kernel_regression(solver='features'): Phi^T Phi + "
                                       "lambda I is not positive definite; raise diag_reg.")
    w = jsl.cho_solve((factor, True), jnp.asarray(z))

    def predict(x_test, compute_var):
        def one(xt):
            f = phi(jnp.asarray(xt, jnp.result_type(float)))
            mean = np.asarray(jnp.matmul(f, w, precision=_HIGHEST))
            if not compute_var:
                return (mean,)
            half = jsl.solve_triangular(factor, f.T, lower=True)
            return mean, np.asarray(lam * jnp.sum(half * half, axis=0))

        out = _in_chunks(one, x_test, tile_size)
        return out[0], (out[1] if compute_var else None)

    info = {"lambda": lam, "n_features": n_features, "moments_seconds": time.perf_counter() - t0,
            "chunks": n_chunks(x.shape[0], tile_size, mesh), "tile_size": tile_size}
    return predict, info


# ----------------------------------------------------------------------------------------------
# matrix-free conjugate gradients


def _nystrom(cols, landmarks, lam):
    """``(U, coef)`` of the randomized Nystrom preconditioner ``P^{-1} r = U (coef * U^T r)
    + r - U U^T r``, ``coef = (lam_min + lam) / (Lambda + lam)`` (arXiv:2110.02820)."""
    cols = jnp.asarray(cols)
    w = cols[landmarks]
    shift = 1e-12 * float(jnp.trace(w)) + np.finfo(np.dtype(cols.dtype)).tiny
    chol = jnp.linalg.cholesky(w + shift * jnp.eye(w.shape[0], dtype=w.dtype))
    if not bool(jnp.all(jnp.isfinite(chol))):  # landmarks numerically dependent: more shift
        shift = 1e-6 * float(jnp.trace(w))
        chol = jnp.linalg.cholesky(w + shift * jnp.eye(w.shape[0], dtype=w.dtype))
    b = jsl.solve_triangular(chol, cols.T, lower=True).T
    u, s, _ = jnp.linalg.svd(b, full_matrices=False)
    evals = jnp.maximum(s * s - shift, 0)
    return u, (evals[-1] + lam) / (evals + lam)


def _precond(u, coef):
    def apply(r):
        ur = jnp.matmul(u.T, r, precision=_HIGHEST)
        return r + jnp.matmul(u, (coef[:, None] - 1) * ur, precision=_HIGHEST)

    return apply


@jax.jit
def _step(state, ap, u, coef, target):
    return cg_update(state, ap, _precond(u, coef), target)


def _problem_tag(n, k, lam, tol, y):
    return np.array([n, k, lam, tol, float(np.sum(y)), float(np.sum(np.asarray(y) ** 2))])


def _load(path, tag):
    if path is None or not os.path.exists(path):
        return None
    with np.load(path) as f:
        if f["tag"].shape != tag.shape or not np.allclose(f["tag"], tag, rtol=1e-12):
            raise ValueError(f"kernel_regression(checkpoint={os.fspath(path)!r}): the file was "
                             f"saved for another problem (training set size, targets, diag_reg "
                             f"or tol differ); delete it or pass another path.")
        return CGState(*(jnp.asarray(f[name]) for name in CGState._fields))


def _save(path, state, tag):
    if path is None or jax.process_index() != 0:
        return
    tmp = os.fspath(path) + ".tmp.npz"
    np.savez(tmp, tag=tag, **{name: np.asarray(v) for name, v in state._asdict().items()})
    os.replace(tmp, path)


def cg_fit(kernel_fn, x, y, get, diag_reg, absolute, tile_size, mesh, tol, maxiter, rank, tqdm,
           checkpoint, checkpoint_every):
    n = x.shape[0]
    t0 = time.perf_counter()
    landmarks = np.sort(np.random.RandomState(0).choice(n, min(rank, n), replace=False))
    cols, diag = kernel_columns(kernel_fn, get, x, np.asarray(x[landmarks]),
                                tile_size=tile_size, mesh=mesh)
    if not np.all(diag > 0):
        raise NotPositiveDefiniteError("kernel_regression(solver='cg'): the kernel has a "
                                       "diagonal entry <= 0, so it is not positive definite.")
    lam = _ridge(diag_reg, absolute, np.mean(diag))
    u, coef = _nystrom(cols, landmarks, lam)
    del cols
    t_pre = time.perf_counter() - t0
    products = make_products(kernel_fn, get, x, tile_size=tile_size, mesh=mesh)
    yj = jnp.asarray(y, u.dtype)
    target, b_norm = cg_targets(yj, tol)
    tag = _problem_tag(n, yj.shape[1], lam, tol, y)
    state = _load(checkpoint, tag)
    resumed = 0 if state is None else int(state.i)
    if state is None:
        state = cg_init(yj, _precond(u, coef))

    def residual(s):
        return float(jnp.max(jnp.linalg.norm(s.r, axis=0) / b_norm))

    bar = None if tqdm is None else tqdm(total=maxiter, initial=resumed, desc="CG", unit="it")
    t1 = time.perf_counter()
    while int(state.i) < maxiter and residual(state) > tol:
        ap = jnp.asarray(products(x, np.asarray(state.p))) + lam * state.p
        state = _step(state, ap, u, coef, target)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(residual=f"{residual(state):.2e}")
        if checkpoint is not None and int(state.i) % checkpoint_every == 0:
            _save(checkpoint, state, tag)
    if bar is not None:
        bar.close()
    _save(checkpoint, state, tag)
    res = residual(state)
    if not np.isfinite(res) or res > tol:
        raise NotConvergedError(
            f"kernel_regression(solver='cg'): not converged after maxiter={maxiter} iterations: "
            f"relative residual {res:.3g} > tol={tol:g}. Raise maxiter ("
            + (f"the state is saved in {os.fspath(checkpoint)!r} and a call with the same "
               f"arguments resumes from it" if checkpoint is not None else
               "pass checkpoint='cg.npz' to save the state and resume later")
            + "), raise diag_reg or rank (a better-conditioned system), use float64, or use "
              "solver='cholesky' / 'features'.")
    alpha = np.asarray(state.x)
    info = {"lambda": lam, "iterations": int(state.i), "resumed_from": resumed,
            "residual": res, "rank": len(landmarks), "preconditioner_seconds": t_pre,
            "cg_seconds": time.perf_counter() - t1}

    def predict(x_test, compute_var):
        out = [products(np.asarray(x_test[i:i + 65536]), alpha)
               for i in range(0, x_test.shape[0], 65536)]
        return np.concatenate(out), None

    return predict, info
