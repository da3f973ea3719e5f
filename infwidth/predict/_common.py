"""Shared pieces of the predictors: the `Gaussian` pair, output layouts along ``trace_axes``,
argument checks and the ``get`` convention (a name gives one value, a tuple a namedtuple)."""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from .solvers import is_concrete


class Gaussian(NamedTuple):
    """A ``(mean, covariance)`` pair.

    Attributes:
      mean: shaped like the network outputs (with leading time axes if several ``t``).
      covariance: shaped like the kernel between the predicted inputs, e.g. ``(N, N)``.
    """

    mean: Any
    covariance: Any


PREDICT_GETS = ("nngp", "ntk")


@functools.cache
def _gaussians(names: tuple[str, ...]):
    return collections.namedtuple("Gaussians", names)


def canonicalize_get(get, where: str, allowed=PREDICT_GETS):
    """``(names, single)``: the requested kernels as a tuple, and whether one name was given."""
    if get is None:
        return ("nngp", "ntk"), False
    single = isinstance(get, str)
    names = (get,) if single else get
    if not isinstance(names, (tuple, list)) or not names:
        raise TypeError(f"{where}(get={get!r}): get must be None, 'nngp', 'ntk' or a non-empty "
                        f"tuple of them.")
    names = tuple(n.lower() if isinstance(n, str) else n for n in names)
    for n in names:
        if n not in allowed:
            raise ValueError(f"{where}(get={get!r}): unknown kernel {n!r}; use one of "
                             f"{', '.join(repr(a) for a in allowed)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}(get={get!r}): entries of get must be unique.")
    return names, single


def pack(out: dict, names, single):
    if single:
        return out[names[0]]
    return _gaussians(tuple(names))(*(out[n] for n in names))


class Layout:
    """How network outputs map to kernel rows: every axis of ``y_train`` not in ``trace_axes``
    indexes the kernel (interleaved, as ``(N, N', H, H', ...)``); the ``trace_axes`` are
    independent output channels sharing the kernel (``K (x) I``)."""

    def __init__(self, y_train, trace_axes, where: str):
        self.where = where
        ndim = y_train.ndim
        axes = (trace_axes,) if isinstance(trace_axes, (int, np.integer)) else tuple(trace_axes)
        for a in axes:
            if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
                raise ValueError(f"{where}(trace_axes={trace_axes!r}): axes must be integers in "
                                 f"[-{ndim}, {ndim}) for y_train of shape {y_train.shape}.")
        axes = sorted({int(a) % ndim for a in axes})
        if 0 in axes:
            raise ValueError(f"{where}(trace_axes={trace_axes!r}): the batch axis 0 of y_train "
                             f"cannot be a trace axis.")
        self.trace_axes = tuple(a - ndim for a in axes)
        self.n_trace = len(axes)
        self.trace_shape = tuple(y_train.shape[a] for a in axes)
        self.nontrace_shape = tuple(y_train.shape[a] for a in range(ndim) if a not in axes)
        self.n_rows = math.prod(self.nontrace_shape)
        self.n_cols = math.prod(self.trace_shape)
        self.y_shape = tuple(y_train.shape)
        self.size = math.prod(y_train.shape)

    @property
    def last_axes(self):
        return tuple(range(-self.n_trace, 0))

    def to_rows(self, y):
        """``(nontrace..., trace...)`` flattened to ``(n_rows, n_cols)``."""
        y = jnp.moveaxis(jnp.asarray(y), self.trace_axes, self.last_axes)
        return y.reshape(-1, self.n_cols)

    def from_rows(self, rows, lead_shape=(), nontrace_shape=None):
        """Inverse of :meth:`to_rows`, with optional leading (time) axes."""
        nontrace_shape = self.nontrace_shape if nontrace_shape is None else nontrace_shape
        y = rows.reshape(tuple(lead_shape) + tuple(nontrace_shape) + self.trace_shape)
        return jnp.moveaxis(y, self.last_axes, self.trace_axes)

    def out_shape(self, nontrace_shape):
        """Shape of the outputs on inputs whose kernel axes have shape ``nontrace_shape``."""
        shape = list(nontrace_shape)
        for a, c in zip(sorted(a % len(self.y_shape) for a in self.trace_axes), self.trace_shape):
            shape.insert(a, c)
        return tuple(shape)

    def check_train_kernel(self, k, name="k_train_train"):
        k = check_real(k, name, self.where)
        want = tuple(s for d in self.nontrace_shape for s in (d, d))
        if k.shape != want:
            raise ValueError(f"{self.where}: {name} has shape {k.shape}, but y_train of shape "
                             f"{self.y_shape} with trace_axes={self.trace_axes} needs {want} "
                             f"(pairs of the non-traced axes of y_train).")
        return k

    def check_test_kernel(self, k, name="k_test_train"):
        k = check_real(k, name, self.where)
        if k.ndim != 2 * len(self.nontrace_shape) or k.shape[1::2] != self.nontrace_shape:
            raise ValueError(f"{self.where}: {name} has shape {k.shape}; its second (train) "
                             f"axes must match the non-traced axes {self.nontrace_shape} of "
                             f"y_train, as in (N_test, N_train) for flat outputs.")
        return k


def check_learning_rate(learning_rate, where):
    if is_concrete(learning_rate):
        lr = np.asarray(learning_rate)
        if lr.ndim != 0 or not np.isreal(lr) or not float(lr) > 0 or not np.isfinite(lr):
            raise ValueError(f"{where}(learning_rate={learning_rate!r}): learning_rate must be "
                             f"a positive finite scalar.")


def check_diag_reg(diag_reg, where):
    if is_concrete(diag_reg):
        d = np.asarray(diag_reg)
        if d.ndim != 0 or not float(d) >= 0 or not np.isfinite(d):
            raise ValueError(f"{where}(diag_reg={diag_reg!r}): diag_reg must be a finite "
                             f"scalar >= 0.")


def as_times(t, where, dtype):
    """``t`` as a float array (any shape) of non-negative times; checks what can be checked."""
    try:
        arr = jnp.asarray(t)
    except TypeError as e:
        raise TypeError(f"{where}(t={t!r}): t must be None, a number or an array of numbers.") \
            from e
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{where}(t={t!r}): t must be real numbers, got dtype {arr.dtype}.")
    arr = arr.astype(dtype)
    if is_concrete(arr) and np.any(~(np.asarray(arr) >= 0)):
        raise ValueError(f"{where}(t={t!r}): times must be >= 0 (inf is allowed; t=None means "
                         f"infinite time).")
    return arr


def check_real(x, name, where):
    """``x`` as an array; complex values are an error (never silently cast to real)."""
    arr = jnp.asarray(x)
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise TypeError(f"{where}: {name} is complex ({arr.dtype}); kernels and targets must be "
                        f"real. Pass its real part (x.real) if the imaginary part is rounding.")
    return arr


def check_not_empty(y_train, where):
    if y_train.size == 0:
        raise ValueError(f"{where}: y_train of shape {y_train.shape} has no entries; it needs at "
                         f"least one training point and one output (e.g. shape (N, 1)).")


def check_train_values(k2d, name, where):
    """Errors, before any factorization, for a train-train kernel that cannot be meant: complex,
    non-finite or not symmetric (beyond ``sqrt(eps)`` of its largest entry)."""
    check_real(k2d, name, where)
    if not is_concrete(k2d):
        return
    k = np.asarray(k2d)
    bad = ~np.isfinite(k)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"{where}: {name} has {int(bad.sum())} non-finite (NaN or inf) entries, "
                         f"in rows {rows[:10].tolist()}{' ...' if rows.size > 10 else ''}; "
                         f"check the training inputs of those rows (or the kernel that made it).")
    scale = float(np.abs(k).max(initial=0.0))
    asym = float(np.abs(k - k.T).max(initial=0.0))
    if asym > np.sqrt(np.finfo(k.dtype).eps) * scale:
        i, j = np.unravel_index(np.argmax(np.abs(k - k.T)), k.shape)
        raise ValueError(f"{where}: {name} is not symmetric: |k[{i}, {j}] - k[{j}, {i}]| = "
                         f"{asym:.3g} (largest entry {scale:.3g}). A train-train kernel must be "
                         f"symmetric; check how it was built, or pass (k + k.T) / 2 (pairs of "
                         f"axes for interleaved kernels) if the asymmetry is intended noise.")


def clip_variances(cov2d, prior2d, where):
    """Repairs rounding: negative diagonal entries (variances) of ``(..., M, M)`` covariances are
    set to 0. They arise in float32 when test points (nearly) repeat training points of a badly
    conditioned kernel; a warning reports repairs beyond ``sqrt(eps)`` of the largest prior
    variance (the diagonal of ``prior2d``)."""
    diag = jnp.diagonal(cov2d, axis1=-2, axis2=-1)
    if is_concrete(diag) and is_concrete(prior2d) and diag.size:
        d = np.asarray(diag)
        lo = float(d.min())
        hi = float(np.abs(np.diagonal(np.asarray(prior2d), axis1=-2, axis2=-1)).max())
        if lo < -np.sqrt(np.finfo(d.dtype).eps) * hi:
            import warnings

            warnings.warn(f"{where}: {int((d < 0).sum())} predictive variances were negative "
                          f"(down to {lo:.3g}, largest prior variance {hi:.3g}) from rounding and "
                          f"were set to 0; compute in float64 "
                          f"(jax.config.update('jax_enable_x64', True)) or raise diag_reg for "
                          f"accurate small variances.", stacklevel=3)
    m = cov2d.shape[-1]
    eye = jnp.eye(m, dtype=bool)
    return jnp.where(eye & (cov2d < 0), 0, cov2d)


def broadcast_output(x, shape, name, where):
    x = jnp.asarray(x)
    try:
        return jnp.broadcast_to(x, shape)
    except ValueError as e:
        raise ValueError(f"{where}: {name} has shape {x.shape}, which does not broadcast to the "
                         f"output shape {shape}.") from e
