"""`kernel_regression`: NNGP / NTK kernel regression from ``kernel_fn`` at any training-set size.

Three solvers of ``(K + lambda I) alpha = y`` with the same predictor ``K(x, X) alpha``:

* ``'cholesky'``: the dense train-train kernel and its Cholesky factor (exact; ``N^2`` memory);
* ``'cg'``: matrix-free preconditioned conjugate gradients (the `cg_update` steps of
  `infwidth.predict.solvers`), each product ``K v`` made from kernel tiles on the fly and
  preconditioned by a randomized Nystrom approximation of rank ``rank`` (Frangella, Tropp &
  Udell 2021, arXiv:2110.02820), the approach of Adlam et al. 2023 (arXiv:2303.07397);
* ``'features'``: ridge regression on random features of the same network
  (`infwidth.features.feature_fn`), ``(Phi^T Phi + lambda I) w = Phi^T y``, with the
  ``n_features x n_features`` moments summed over streamed tiles (Rahimi & Recht 2007).

``lambda = diag_reg * mean(diag K)`` (neural-tangents' convention) unless
``diag_reg_absolute_scale``. Tiles are spread over the devices of a mesh and of every process
after ``jax.distributed.initialize()`` (see docs/guide/scaling.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_nonnegative, check_positive_int
from ..stax._memory import available_bytes
from . import _regression_solvers as impl
from . import _streamed
from ._helpers import NotPositiveDefiniteError
from ._regression_solvers import NotConvergedError

SOLVERS = ("auto", "cholesky", "cg", "features")
_WHERE = "kernel_regression"


class Prediction(NamedTuple):
    """Posterior mean ``(N_test, k)`` and marginal variance ``(N_test,)`` of the test points."""

    mean: jax.Array
    variance: jax.Array


def _check(x_train, y_train, get, solver, n_features, key, compute_var):
    for name, a in (("x_train", x_train), ("y_train", y_train)):
        if not hasattr(a, "shape") or len(a.shape) < 1 or a.shape[0] == 0:
            raise ValueError(f"{_WHERE}({name}): expected a non-empty array (or memory map) "
                             f"with the training points along axis 0.")
    if y_train.shape[0] != x_train.shape[0]:
        raise ValueError(f"{_WHERE}: x_train has {x_train.shape[0]} rows and y_train "
                         f"{y_train.shape[0]}; give one target row per training input.")
    if get not in ("nngp", "ntk"):
        raise ValueError(f"{_WHERE}(get={get!r}): get must be 'nngp' or 'ntk'.")
    if solver not in SOLVERS:
        raise ValueError(f"{_WHERE}(solver={solver!r}): solver must be one of {SOLVERS}.")
    if solver == "features" and (n_features is None or key is None):
        raise ValueError(f"{_WHERE}(solver='features'): pass n_features (e.g. 4096) and key "
                         f"(a jax.random key) for the random features.")
    if solver == "cg" and compute_var:
        raise ValueError(f"{_WHERE}(solver='cg', compute_var=True): CG solves for the mean "
                         f"only; use solver='cholesky' or 'features' for variances.")


def _pick(n, itemsize, n_features, key, memory):
    dense = 2 * n * n * itemsize  # the kernel on the device and its one host copy
    if memory is None or dense <= memory / 2:
        return "cholesky"
    if n <= 200_000 or n_features is None or key is None:
        return "cg"
    return "features"


def kernel_regression(kernel_fn: Callable, x_train, y_train, *, solver: str = "auto",
                      diag_reg: float = 1e-4, diag_reg_absolute_scale: bool = False,
                      get: str = "nngp", n_features: int | None = None, key=None,
                      tile_size: int | None = None, tol: float = 1e-6,
                      maxiter: int | None = None,
                      rank: int = 256, compute_var: bool = False, mesh=None,
                      progress: bool = False, checkpoint: str | os.PathLike | None = None,
                      checkpoint_every: int = 10) -> Callable:
    """Kernel (ridge) regression with the NNGP or NTK of ``kernel_fn``; returns ``predict_fn``.

    Args:
      kernel_fn: a stax ``kernel_fn`` (or, for 'features', a stax layer or kernel_fn).
      x_train, y_train: ``(N, ...)`` inputs and ``(N, k)`` targets; numpy arrays or memory
        maps (``np.load(..., mmap_mode='r')``): 'features' reads them a chunk at a time.
      solver: 'cholesky', 'cg', 'features' or 'auto' (Cholesky while the kernel and its
        factor take at most half the free memory, then CG up to 200,000 points, then features
        when ``n_features`` and ``key`` are given).
      diag_reg: ridge ``lambda = diag_reg * mean(diag K)`` (absolute with
        ``diag_reg_absolute_scale``).
      get: 'nngp' or 'ntk'.
      n_features, key: width and key of the random features ('features').
      tile_size: rows per kernel / feature tile (memory per device ``~ tile_size ** 2``).
        ``None`` (default): 1024 for kernel tiles; for 'features', as many inputs as fit in an
        eighth of the free memory given the feature map's largest intermediate per input
        (image networks hold spatial feature maps: Myrtle-5 at 32x32 takes 64), at most
        1024; ``info['tile_size']`` says which.
      tol, maxiter: CG stops at ``||(K + lambda) alpha - y|| <= tol ||y||`` per column, or
        raises `NotConvergedError` after ``maxiter`` (default ``N``) iterations.
      rank: landmarks of the Nystrom preconditioner (CG).
      compute_var: ``predict_fn`` also returns marginal variances ('cholesky', 'features').
      mesh: a one-axis `jax.sharding.Mesh` (axis 'tiles'); default: every device of every
        process.
      progress: a tqdm progress bar (needs ``tqdm``).
      checkpoint, checkpoint_every: a ``.npz`` path where the CG state is saved every
        ``checkpoint_every`` iterations (and when it stops); a later call with the same
        arguments resumes from it.

    Returns:
      ``predict_fn(x_test)`` returning the mean ``(N_test, k)`` (or a `Prediction` with
      ``compute_var``); ``predict_fn.info`` holds the solver, iterations, residual and times.

    Example:
      >>> import jax, numpy as np
      >>> from infwidth import stax, predict
      >>> net = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
      >>> x = np.random.RandomState(0).randn(40, 3); y = np.sin(x[:, :1])
      >>> exact = predict.kernel_regression(net.kernel_fn, x, y, solver='cholesky',
      ...                                   diag_reg=1e-2)
      >>> cg = predict.kernel_regression(net.kernel_fn, x, y, solver='cg', diag_reg=1e-2,
      ...                                tol=1e-5, tile_size=16, rank=8)
      >>> bool(np.allclose(cg(x[:5]), exact(x[:5]), atol=1e-3)), cg.info['iterations'] < 40
      (True, True)
    """
    _check(x_train, y_train, get, solver, n_features, key, compute_var)
    diag_reg = check_nonnegative(diag_reg, "diag_reg", _WHERE)
    if tile_size is not None:
        tile_size = check_positive_int(tile_size, "tile_size", _WHERE)
    rank = check_positive_int(rank, "rank", _WHERE)
    y2 = y_train if len(y_train.shape) == 2 else np.asarray(y_train).reshape(len(y_train), -1)
    n = x_train.shape[0]
    mesh = _streamed.default_mesh(mesh)
    itemsize = np.dtype(jnp.result_type(float)).itemsize
    if solver == "auto":
        solver = _pick(n, itemsize, n_features, key, available_bytes())
    if solver == "cholesky":
        need, have = 2 * n * n * itemsize, available_bytes()
        if have is not None and need > have:
            raise MemoryError(f"{_WHERE}(solver='cholesky'): the {n} x {n} kernel and its "
                              f"factor need about {need / 2**30:.3g} GiB, more than the "
                              f"{have / 2**30:.3g} GiB free; use solver='cg' or 'features'.")

    tqdm = _tqdm() if progress else None
    t0 = time.perf_counter()
    if solver == "features":
        fn, info = impl.features_fit(kernel_fn, x_train, y2, get, n_features, key, diag_reg,
                                     diag_reg_absolute_scale, tile_size, mesh, tqdm)
    elif solver == "cholesky":
        fn, info = impl.cholesky_fit(kernel_fn, x_train, y2, get, diag_reg,
                                     diag_reg_absolute_scale)
    else:
        maxiter = n if maxiter is None else check_positive_int(maxiter, "maxiter", _WHERE)
        fn, info = impl.cg_fit(kernel_fn, x_train, y2, get, diag_reg, diag_reg_absolute_scale,
                               tile_size or impl.TILE, mesh, tol, maxiter, rank, tqdm,
                               checkpoint, checkpoint_every)
    info.update(solver=solver, n_train=n, fit_seconds=time.perf_counter() - t0)

    def predict_fn(x_test):
        mean, var = fn(x_test, compute_var)
        return Prediction(mean, var) if compute_var else mean

    predict_fn.info = info  # type: ignore[attr-defined]
    return predict_fn


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_WHERE}(progress=True) needs tqdm: pip install tqdm, or pass "
                          f"progress=False.") from e
    return tqdm


__all__ = ["NotConvergedError", "NotPositiveDefiniteError", "Prediction", "kernel_regression"]
