"""Private helpers of `infwidth.predict`: output layouts along ``trace_axes``, interleaved
kernel layouts, argument and value checks, the ``get`` convention, the cached factorizations
and eigendecompositions of train-train kernels, and the functions of the kernel in its
eigenbasis. Nothing here is public; the public modules are `gp`, `mse`, `ensemble`, `ode`,
`solvers` and `chebyshev`."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .._get import namedtuple_of, parse_get

_HIGHEST = jax.lax.Precision.HIGHEST


def mm(a, b):
    """``a @ b`` at full float32 precision on accelerators."""
    return jnp.matmul(a, b, precision=_HIGHEST)


def blas_thread_count() -> int:
    """BLAS threads for the LAPACK factorizations (eigh, Cholesky, triangular solves): the
    ``INFWIDTH_BLAS_THREADS`` environment variable if set, else the usable cores minus those
    other processes keep busy (1-minute load average), at least 1. Multithreaded OpenBLAS on
    cores that are already busy spin-waits: a float64 2048 x 2048 eigh took 40 s with 2 threads
    and 8 s with 1 on a 2-core machine at load 25.

    >>> blas_thread_count() >= 1
    True
    """
    if os.environ.get("INFWIDTH_BLAS_THREADS"):
        return max(1, int(os.environ["INFWIDTH_BLAS_THREADS"]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus or 1, int(cpus + 1 - load)))


@contextlib.contextmanager
def blas_threads():
    """Runs the body with `blas_thread_count` BLAS threads (needs the optional threadpoolctl;
    without it, BLAS keeps its own default). Block on the results inside the body."""
    try:
        import threadpoolctl
    except ImportError:
        yield
        return
    with threadpoolctl.threadpool_limits(blas_thread_count(), user_api="blas"):
        yield


class NotPositiveDefiniteError(ValueError):
    """The train-train kernel (plus ``diag_reg``) cannot be factorized as positive definite."""


# ----------------------------------------------------------------------------------------------
# kernel layouts


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
# outputs, get, argument and value checks


PREDICT_GETS = ("nngp", "ntk")


def _gaussians(names: tuple[str, ...]):
    return namedtuple_of("Gaussians", tuple(names))


def canonicalize_get(get, where: str, allowed=PREDICT_GETS):
    """``(names, single)``: the requested kernels as a tuple, and whether one name was given
    (the one `get` parser, ``infwidth._get``; names are case-insensitive here, as in
    neural-tangents' predict)."""
    single = isinstance(get, str)
    lowered = get.lower() if single else (tuple(n.lower() if isinstance(n, str) else n
                                                for n in get)
                                          if isinstance(get, (tuple, list)) else get)
    names = parse_get(lowered, allowed, where)
    return (tuple(PREDICT_GETS) if names is None else names), single


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
        # the batch axis may be traced too (as in neural-tangents): the kernel then has no
        # batch axis, every input shares it, and test outputs have the training batch size
        axes = sorted({int(a) % ndim for a in axes})
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
    eye = jnp.eye(m, dtype=bool).reshape((1,) * (cov2d.ndim - 2) + (m, m))
    return jnp.where(eye & (cov2d < 0), jnp.zeros((), cov2d.dtype), cov2d)


def broadcast_output(x, shape, name, where):
    x = jnp.asarray(x)
    try:
        return jnp.broadcast_to(x, shape)
    except ValueError as e:
        raise ValueError(f"{where}: {name} has shape {x.shape}, which does not broadcast to the "
                         f"output shape {shape}.") from e


def check_outputs(fx_train_0, fx_test_0, k_test_train, where):
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError(f"{where}: fx_train_0 and fx_test_0 are both None, so there is nothing "
                         f"to predict.")
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError(f"{where}: predictions on the test set (fx_test_0 given) need "
                         f"k_test_train.")


def check_inputs(x, name, where, x_train=None):
    """Inputs must be real and non-empty, and test inputs shaped like training inputs."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        return  # e.g. a Kernel or a pytree: kernel_fn checks it
    check_real(x, name, where)
    if 0 in x.shape:
        raise ValueError(f"{where}: {name} of shape {x.shape} is empty; inputs need at least one "
                         f"point and one feature, shape (N, d) with N, d >= 1.")
    if x_train is not None and hasattr(x_train, "shape") and x.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"{where}: {name} has shape {x.shape} but x_train has {x_train.shape}; "
                         f"all axes but the first (the batch) must match.")


def _same_or_arrays(a, b) -> bool:
    """Whether two keyword values agree: the same object, equal values, or pytrees of the same
    structure whose leaves are arrays (per-input data, e.g. ``params`` built twice) or equal."""
    if a is b:
        return True
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    for u, v in zip(la, lb):
        if isinstance(u, (np.ndarray, jax.Array)) or isinstance(v, (np.ndarray, jax.Array)):
            continue
        if u is not v and u != v:
            return False
    return True


def merge_kwargs(train_kwargs, test_kwargs):
    """Keyword arguments of ``kernel_fn`` for the test-train and test-test calls."""
    kw_td, kw_tt = dict(train_kwargs), dict(train_kwargs)
    for key, v_tt in test_kwargs.items():
        v_dd = train_kwargs.get(key, v_tt)
        if (isinstance(v_dd, tuple) and len(v_dd) == 2 and isinstance(v_tt, tuple)
                and len(v_tt) == 2):
            v_td = (v_tt[0], v_dd[0])  # (x1 = test, x2 = train) halves
        else:
            v_td = v_tt
            if not _same_or_arrays(v_dd, v_tt):
                raise ValueError(f"gradient_descent_mse_ensemble: kernel_fn argument {key!r} is "
                                 f"{v_dd!r} for the training set but {v_tt!r} for the test set.")
        kw_td[key], kw_tt[key] = v_td, v_tt
    return kw_td, kw_tt


# ----------------------------------------------------------------------------------------------
# kernels given as arrays, Kernels or namedtuples; cached factorizations


def is_array(k) -> bool:
    return isinstance(k, (np.ndarray, jax.Array)) or hasattr(k, "__jax_array__")


def kernel_attr(k, g: str, name: str):
    """``k`` itself if it is an array, else its ``g`` field ('nngp' or 'ntk')."""
    if is_array(k):
        return jnp.asarray(k)
    v = getattr(k, g, None)
    if v is None:
        raise ValueError(f"{name} has no {g!r} kernel: pass an array, or a Kernel / namedtuple "
                         f"computed with get=('nngp', 'ntk') (or get={g!r}).")
    return jnp.asarray(v)


def first_kernel(k, name: str):
    if is_array(k):
        return jnp.asarray(k)
    for g in ("nngp", "ntk"):
        if getattr(k, g, None) is not None:
            return jnp.asarray(getattr(k, g))
    raise ValueError(f"{name} must be an array or have an 'nngp' or 'ntk' kernel, got {k!r}.")


class Solves:
    """Factorizations of the regularized train-train kernels, computed once per kernel."""

    def __init__(self, k_train_train, diag_reg, diag_reg_absolute_scale, solver, name,
                 where):
        self.k, self.diag_reg, self.absolute = k_train_train, diag_reg, diag_reg_absolute_scale
        self.where = where
        self.solver, self.name = solver, name
        self.cache = {}

    def factor(self, g):
        if g in self.cache:
            return self.cache[g]
        k2d = make_2d(kernel_attr(self.k, g, self.name))
        check_train_values(k2d, f"{self.name}.{g}" if not is_array(self.k) else self.name,
                           self.where)
        k2d = regularize(k2d, self.diag_reg, self.absolute)
        f = self.solver.factor(k2d)
        if is_concrete(k2d):  # never keep tracers beyond the trace that made them
            self.cache[g] = f
        return f

    def solve(self, g, b):
        return self.factor(g).solve(b)


class Pair:
    """A minimal kernel holder with ``nngp`` / ``ntk`` attributes."""

    def __init__(self, nngp=None, ntk=None):
        self.nngp, self.ntk = nngp, ntk


def not_pd_message(k2d, what="k_train_train"):
    evals = np.linalg.eigvalsh(np.asarray(k2d, np.float64))
    mean_diag = float(np.mean(np.diag(np.asarray(k2d))))
    return (f"{what} (plus diag_reg) is not positive definite in {k2d.dtype}: its smallest "
            f"eigenvalue is {evals[0]:.3g} (largest {evals[-1]:.3g}, mean diagonal "
            f"{mean_diag:.3g}). Fixes: add diagonal regularization (diag_reg=1e-6 or more, in "
            f"units of the mean diagonal), compute in float64 "
            f"(jax.config.update('jax_enable_x64', True)), or pass "
            f"solver=Cholesky(repair=True) to add the smallest jitter that factorizes it.")


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
        with blas_threads():
            evals, self.evecs = jax.block_until_ready(jnp.linalg.eigh(k2d,
                                                                      symmetrize_input=True))
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


@functools.partial(jax.jit, static_argnames="train")
def mse_finite(evals, evecs, rhs, s, k_td2, train):
    """Changes of train / test outputs at times ``s`` (T,), rows layout: (T, P, C) each."""
    b = mm(evecs.T, rhs)[None]
    ev, s3 = evals[None, :, None], s[:, None, None]
    d_train = mm(evecs, expm1_neg(ev, s3) * b) if train else None
    d_test = None if k_td2 is None else mm(k_td2, mm(evecs, -phi(ev, s3) * b))
    return d_train, d_test


@jax.jit
def ens_mean(evals, evecs, y_rows, s, k_td2):
    """Ensemble mean at times ``s`` (T,) on the training set (``k_td2=None``) or the test set."""
    b = mm(evecs.T, y_rows)[None]
    ev, s3 = evals[None, :, None], s[:, None, None]
    if k_td2 is None:
        return mm(evecs, -expm1_neg(ev, s3) * b)
    return mm(k_td2, mm(evecs, phi(ev, s3) * b))


@functools.partial(jax.jit, static_argnums=0)
def train_cov(g, evals, evecs, s, nngp_dd):
    """Covariance on the training set at times ``s`` (T,): (T, N, N)."""
    s, ev = s[:, None], evals[None, :]  # (T, 1) and (1, N): explicit ranks throughout
    if g == "nngp":
        w = ev * jnp.exp(-2 * jnp.where(ev > 0, ev * s, 0))
        return mm(evecs[None] * w[:, None, :], evecs.T)
    decay = mm(evecs[None] * jnp.exp(-jnp.where(ev > 0, ev * s, 0))[:, None, :],
               evecs.T)  # e^{-Θ s}
    return mm(decay, mm(nngp_dd, decay))


@functools.partial(jax.jit, static_argnums=0)
def test_cov(g, evals, evecs, s, k_td2, nngp_td, nngp_dd, nngp_tt):
    """Covariance on the test set at times ``s`` (T,): (T, N*, N*).

    The mode's test-train kernel is rotated once into the eigenbasis of its regularized
    train-train kernel (``a = K_*d V``); each time then costs one ``N* x N x N`` product.
    """
    a = mm(k_td2, evecs)
    if g == "nngp":
        return nngp_tt[None] - mm(a[None] * phi(evals[None, :], 2 * s[:, None])[:, None, :],
                                  a.T)

    def one(s1):
        m = mm(a * phi(evals, s1)[None, :], evecs.T)  # Θ_*d Θ^{-1}(I - e^{-Θ s}): (N*, N)
        cross = mm(m, nngp_td.T)
        return mm(mm(m, nngp_dd), m.T) - cross - cross.T + nngp_tt

    return jax.lax.map(one, s)
