"""Closed-form gradient-flow dynamics under MSE loss: one network given its kernels
(`gradient_descent_mse`), and the infinite ensemble of infinitely wide networks
(`gradient_descent_mse_ensemble`); and the largest stable learning rate (`max_learning_rate`).

Time convention (neural-tangents'): the loss is ``||f - y||^2 / (2 * y_train.size)`` and
``t`` counts gradient-descent steps of size ``learning_rate``, so the training outputs follow
``f(t) = y + exp(-learning_rate * t * K / y_train.size) (f(0) - y)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._common import (
    Gaussian,
    Layout,
    as_times,
    broadcast_output,
    canonicalize_get,
    check_diag_reg,
    check_learning_rate,
    pack,
)
from .gp import _Solves, gp_inference, kernel_attr
from .solvers import (
    Eigen,
    _neg_phi_np,
    chebyshev_apply,
    chebyshev_plan,
    expm1_neg,
    is_concrete,
    make_2d,
    phi,
    regularize,
    spectrum_bounds,
    zip_axes,
)

_HIGHEST = jax.lax.Precision.HIGHEST


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


def _check_outputs(fx_train_0, fx_test_0, k_test_train, where):
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError(f"{where}: fx_train_0 and fx_test_0 are both None, so there is nothing "
                         f"to predict.")
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError(f"{where}: predictions on the test set (fx_test_0 given) need "
                         f"k_test_train.")


FINITE_TIME_METHODS = ("auto", "eigh", "chebyshev")


def gradient_descent_mse(k_train_train, y_train, learning_rate: float = 1.0,
                         diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                         trace_axes=(-1,), *, solver="cholesky", finite_time_method="auto"):
    r"""Outputs of a network trained by gradient flow on MSE, in closed form from its kernel.

    For the linearized network (exact at infinite width, arXiv:1806.07572, arXiv:1902.06720)
    with NTK ``Θ`` on the training set, ``f_train(t) = y + e^{-η Θ t / n} (f_train(0) - y)`` and
    ``f_test(t) = f_test(0) + Θ_*d Θ^{-1} (I - e^{-η Θ t / n}) (y - f_train(0))`` with
    ``n = y_train.size``.

    Finite times use one eigendecomposition of ``k_train_train`` (plus ``diag_reg``), computed
    on the first call and reused for every ``t``; ``t=None`` (infinite time) uses one Cholesky
    factorization (or ``solver='cg'``). Negative eigenvalues (rounding noise) are clipped to 0.
    Use float64 (``jax.config.update('jax_enable_x64', True)``) for accurate results.

    For large float64 kernels (``N >= 512`` rows) and a few finite times, ``'auto'`` skips the
    ``O(N^3)`` eigendecomposition: it expands ``exp(-η t K / n)`` and
    ``K^{-1}(1 - exp(-η t K / n))`` in Chebyshev polynomials of ``K`` on a rigorous bound of its
    spectrum, to the degree where the coefficients reach float64 rounding (relative accuracy
    ~1e-14, as the eigendecomposition), with one ``N x N`` by ``N x C`` product per degree shared
    by all times. The degree grows like ``sqrt(η t λ_max / n)``; when it would exceed ``N / 8``
    (very long times, ``t = inf``), or after repeated calls have spent as much as one
    eigendecomposition, it falls back to (and then keeps) the eigendecomposition.

    Args:
      k_train_train: NTK (or NNGP, for last-layer training) on the training inputs, with the
        shape of ``y_train``'s non-``trace_axes`` axes in pairs (``(N, N)`` for ``(N, C)``).
      y_train: training targets.
      learning_rate: step size ``η``; only ``η t`` matters.
      diag_reg: diagonal regularization, ``diag_reg * mean(diag k)`` unless
        ``diag_reg_absolute_scale``.
      diag_reg_absolute_scale: take ``diag_reg`` in absolute units.
      trace_axes: output axes along which the kernel is ``K (x) I``.
      solver: the solver for ``t=None``: ``'cholesky'``, ``'cg'``, or a `Cholesky` / `CG`.
      finite_time_method: ``'auto'`` (above), ``'eigh'`` (always the eigendecomposition, as
        neural-tangents) or ``'chebyshev'`` (always the expansion; an error if it needs a degree
        above ``N``). Only the speed differs, not the result.

    Returns:
      ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning
      ``fx_train_t``, ``fx_test_t`` or both (when both ``fx_*_0`` are given), with leading
      axes of ``t``'s shape. ``fx_train_0=None`` skips the training set (taking ``f_train(0)=0``
      in the test prediction). At ``t=None`` the training outputs are ``y_train`` exactly.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import predict
      >>> k = jnp.array([[2., 0.], [0., 1.]])
      >>> predict_fn = predict.gradient_descent_mse(k, jnp.array([[1.], [1.]]))
      >>> predict_fn(t=2., fx_train_0=0.)  # 1 - exp(-k t / 2)
      Array([[0.86466473],
             [0.63212055]], dtype=float32)
    """
    where = "gradient_descent_mse"
    y_train = jnp.asarray(y_train)
    k_train_train = jnp.asarray(k_train_train)
    layout = Layout(y_train, trace_axes, where)
    layout.check_train_kernel(k_train_train)
    check_learning_rate(learning_rate, where)
    check_diag_reg(diag_reg, where)
    if finite_time_method not in FINITE_TIME_METHODS:
        raise ValueError(f"{where}(finite_time_method={finite_time_method!r}): must be one of "
                         f"{FINITE_TIME_METHODS}.")
    dtype = k_train_train.dtype
    solves = _Solves(k_train_train, diag_reg, diag_reg_absolute_scale, solver, "k_train_train")
    eigen_cache = []

    def k2d_reg():
        return regularize(make_2d(k_train_train), diag_reg, diag_reg_absolute_scale)

    expansion = _Expansion(k2d_reg, finite_time_method, dtype, layout, where)

    def eigen():
        if eigen_cache:
            return eigen_cache[0]
        e = Eigen(k2d_reg())
        if is_concrete(e.evals):
            eigen_cache.append(e)
        return e

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        """Train [and test] outputs at time(s) ``t`` (``None``: infinite time)."""
        _check_outputs(fx_train_0, fx_test_0, k_test_train, where + ".predict_fn")
        test_shape = None
        if k_test_train is not None:
            k_test_train = layout.check_test_kernel(k_test_train)
            test_shape = k_test_train.shape[::2]
            k_td2 = make_2d(k_test_train)
        if fx_train_0 is not None:
            fx_train_0 = broadcast_output(fx_train_0, layout.y_shape, "fx_train_0", where)
        if fx_test_0 is not None:
            fx_test_0 = broadcast_output(fx_test_0, layout.out_shape(test_shape), "fx_test_0",
                                         where)

        if t is None:
            fx_train_t = y_train.astype(dtype)
            if fx_test_0 is None:
                return fx_train_t
            rhs = y_train if fx_train_0 is None else y_train - fx_train_0
            x = solves.solve("ntk", layout.to_rows(rhs).astype(dtype))
            fx_test_t = fx_test_0 + layout.from_rows(_mm(k_td2, x), nontrace_shape=test_shape)
            return fx_test_t if fx_train_0 is None else (fx_train_t, fx_test_t)

        t = as_times(t, where + ".predict_fn", dtype)
        t_shape = t.shape
        s = (t * learning_rate / layout.size).reshape(-1)
        rhs = layout.to_rows(-y_train if fx_train_0 is None else fx_train_0 - y_train)
        rhs = rhs.astype(dtype)
        k_td2_used = None if fx_test_0 is None else k_td2
        result = None if eigen_cache else expansion.apply(s, rhs, k_td2_used,
                                                          fx_train_0 is not None)
        if result is None:
            e = eigen()
            result = _mse_finite(e.evals, e.evecs, rhs, s, k_td2_used, fx_train_0 is not None)
        dfx_train, dfx_test = result
        outs = []
        if fx_train_0 is not None:
            outs.append(fx_train_0 + layout.from_rows(dfx_train, t_shape))
        if fx_test_0 is not None:
            outs.append(fx_test_0 + layout.from_rows(dfx_test, t_shape, test_shape))
        return outs[0] if len(outs) == 1 else tuple(outs)

    return predict_fn


def _expm1_np(lam, s):
    return np.expm1(-lam * s)


class _Expansion:
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
        max_degree = self.p if forced else max(self.p // 8 - self.used, 0)
        coeffs = chebyshev_plan(lo, hi, fns, max_degree) if max_degree > 1 else None
        if coeffs is None:
            if forced:
                raise ValueError(f"{self.where}: the Chebyshev expansion needs a degree above "
                                 f"{self.p} at these times; use finite_time_method='eigh'.")
            return None
        self.used += coeffs.shape[1]
        out = chebyshev_apply(self.k2d, rhs, jnp.asarray(coeffs, self.dtype), lo, hi)
        n_t = s_np.size
        d_train = out[:n_t] if train else None
        d_test = None if k_td2 is None else _mm(k_td2, out[-n_t:])
        return d_train, d_test


@functools.partial(jax.jit, static_argnames="train")
def _mse_finite(evals, evecs, rhs, s, k_td2, train):
    """Changes of train / test outputs at times ``s`` (T,), rows layout: (T, P, C) each."""
    b = _mm(evecs.T, rhs)[None]
    ev, s3 = evals[None, :, None], s[:, None, None]
    d_train = _mm(evecs, expm1_neg(ev, s3) * b) if train else None
    d_test = None if k_td2 is None else _mm(k_td2, _mm(evecs, -phi(ev, s3) * b))
    return d_train, d_test


def _merge_kwargs(train_kwargs, test_kwargs):
    """Keyword arguments of ``kernel_fn`` for the test-train and test-test calls."""
    kw_td, kw_tt = dict(train_kwargs), dict(train_kwargs)
    for key, v_tt in test_kwargs.items():
        v_dd = train_kwargs.get(key, v_tt)
        if (isinstance(v_dd, tuple) and len(v_dd) == 2 and isinstance(v_tt, tuple)
                and len(v_tt) == 2):
            v_td = (v_tt[0], v_dd[0])  # (x1 = test, x2 = train) halves
        else:
            v_td = v_tt
            both_arrays = all(isinstance(v, (np.ndarray, jax.Array)) for v in (v_dd, v_tt))
            if not both_arrays and v_dd is not v_tt and v_dd != v_tt:
                raise ValueError(f"gradient_descent_mse_ensemble: kernel_fn argument {key!r} is "
                                 f"{v_dd!r} for the training set but {v_tt!r} for the test set.")
        kw_td[key], kw_tt[key] = v_td, v_tt
    return kw_td, kw_tt


def gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate: float = 1.0,
                                  diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                                  trace_axes=(-1,), *, solver="cholesky",
                                  finite_time_method="auto", **kernel_fn_train_train_kwargs):
    r"""Mean and covariance of an infinite ensemble of infinitely wide networks trained by
    gradient flow on MSE for time ``t`` (arXiv:1902.06720, Section 2.3), or, with ``'nngp'``,
    of training only the last layer (the NNGP posterior at ``t = ∞``, arXiv:1711.00165).

    With ``Θ`` the NTK, ``K`` the NNGP, ``E(t) = Θ^{-1}(I - e^{-η Θ t / n})`` and
    ``n = y_train.size``, the test mean is ``Θ_*d E(t) y`` and the covariance
    ``K_** + Θ_*d E K E Θ_d* - (Θ_*d E K_d* + h.c.)``; the ``'nngp'`` mode uses ``K`` in place
    of ``Θ`` and covariance ``K_** - K_*d K^{-1} (I - e^{-2 η K t / n}) K_d*``.

    Kernels are computed once (``kernel_fn(x_train, None, get)``) and the eigendecomposition
    (finite ``t``) or the Cholesky factor (``t=None``) reused by every later call; the
    covariance at several times costs one ``N_test x N x N`` product per time. Means without
    covariance on large float64 kernels use the Chebyshev expansion of `gradient_descent_mse`
    instead of the eigendecomposition (``finite_time_method``).

    Args:
      kernel_fn: ``kernel_fn(x1, x2, get, **kwargs)`` giving a `Kernel` or a namedtuple with
        ``nngp`` / ``ntk`` (an infwidth or neural-tangents ``kernel_fn``).
      x_train, y_train: training inputs and targets.
      learning_rate: step size ``η``.
      diag_reg, diag_reg_absolute_scale: diagonal regularization as in `gradient_descent_mse`.
      trace_axes: output axes along which the kernel is ``K (x) I``.
      solver: the solver for ``t=None``: ``'cholesky'``, ``'cg'``, or a `Cholesky` / `CG`.
      finite_time_method: ``'auto'``, ``'eigh'`` or ``'chebyshev'``, for means at finite times
        as in `gradient_descent_mse` (covariances always use the eigendecomposition).
      **kernel_fn_train_train_kwargs: passed to ``kernel_fn`` for the training set.

    Returns:
      ``predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs)``
      returning the mean (or a `Gaussian` with ``compute_cov``) on ``x_test`` (``None``: on the
      training set, without ``diag_reg``), with leading axes of ``t``'s shape; ``get`` is
      ``'nngp'``, ``'ntk'`` or a tuple (a namedtuple is returned, ``None`` means both).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import predict, stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(512, b_std=0.5), stax.Relu(),
      ...                                  stax.Dense(1, b_std=0.5))
      >>> x_train = jnp.array([[-1.], [0.], [1.]])
      >>> predict_fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, x_train ** 2)
      >>> out = predict_fn(x_test=x_train, get='ntk', compute_cov=True)  # t=None: converged
      >>> out.mean.round(4).ravel(), abs(out.covariance).max() < 1e-4
      (Array([1., 0., 1.], dtype=float32), Array(True, dtype=bool))
    """
    where = "gradient_descent_mse_ensemble"
    y_train = jnp.asarray(y_train)
    layout = Layout(y_train, trace_axes, where)
    check_learning_rate(learning_rate, where)
    check_diag_reg(diag_reg, where)
    if finite_time_method not in FINITE_TIME_METHODS:
        raise ValueError(f"{where}(finite_time_method={finite_time_method!r}): must be one of "
                         f"{FINITE_TIME_METHODS}.")
    k_dd_cache, eigen_cache, gp_cache, expansions = {}, {}, {}, {}

    def train_kernels(names):
        missing = tuple(g for g in names if g not in k_dd_cache)
        if missing:
            k = kernel_fn(x_train, None, missing, **kernel_fn_train_train_kwargs)
            for g in missing:
                k_dd_cache[g] = layout.check_train_kernel(
                    kernel_attr(k, g, "kernel_fn(x_train)"), f"kernel_fn(x_train).{g}")
        return {g: k_dd_cache[g] for g in names}

    def eigen(g):
        if g not in eigen_cache:
            k2d = regularize(make_2d(train_kernels((g,))[g]), diag_reg, diag_reg_absolute_scale)
            eigen_cache[g] = Eigen(k2d)
        return eigen_cache[g]

    def gp(deps):
        if deps not in gp_cache:
            k_dd = _Pair(**train_kernels(deps))
            gp_cache[deps] = gp_inference(k_dd, y_train, diag_reg, diag_reg_absolute_scale,
                                          trace_axes, solver=solver)
        return gp_cache[deps]

    def predict_fn(t=None, x_test=None, get=None, compute_cov: bool = False,
                   **kernel_fn_test_test_kwargs):
        """Ensemble mean [and covariance] on ``x_test`` at time(s) ``t``."""
        names, single = canonicalize_get(get, where + ".predict_fn")
        deps = tuple(g for g in ("nngp", "ntk")
                     if g in names or (g == "nngp" and "ntk" in names and compute_cov))
        k_dd = train_kernels(deps)
        k_td = nngp_tt = None
        if x_test is not None:
            kw_td, kw_tt = _merge_kwargs(kernel_fn_train_train_kwargs, kernel_fn_test_test_kwargs)
            k = kernel_fn(x_test, x_train, deps, **kw_td)
            k_td = {g: layout.check_test_kernel(kernel_attr(k, g, "kernel_fn(x_test, x_train)"),
                                                f"kernel_fn(x_test, x_train).{g}")
                    for g in deps}
            if compute_cov:
                nngp_tt = kernel_attr(kernel_fn(x_test, None, ("nngp",), **kw_tt), "nngp",
                                      "kernel_fn(x_test)")

        if t is None:
            k_test_test = nngp_tt if x_test is not None else (True if compute_cov else None)
            return gp(deps)(names if not single else names[0],
                            None if k_td is None else _Pair(**k_td), k_test_test)

        dtype = k_dd[deps[0]].dtype
        t = as_times(t, where + ".predict_fn", dtype)
        t_shape = t.shape
        s = (t * learning_rate / layout.size).reshape(-1)
        y_rows = layout.to_rows(y_train).astype(dtype)
        test_shape = layout.nontrace_shape if k_td is None else k_td[deps[0]].shape[::2]

        out = {}
        for g in names:
            k_td2 = None if k_td is None else make_2d(k_td[g])
            mean = None
            if not compute_cov and g not in eigen_cache:
                if g not in expansions:
                    expansions[g] = _Expansion(
                        lambda g=g: regularize(make_2d(k_dd[g]), diag_reg, diag_reg_absolute_scale),
                        finite_time_method, dtype, layout, where)
                res = expansions[g].apply(s, -y_rows, k_td2, k_td2 is None)
                if res is not None:
                    mean = res[0] if k_td2 is None else res[1]
            if mean is None:
                e = eigen(g)
                mean = _ens_mean(e.evals, e.evecs, y_rows, s, k_td2)
            mean = layout.from_rows(mean, t_shape, test_shape)
            if not compute_cov:
                out[g] = mean
                continue
            nngp_dd = make_2d(k_dd["nngp"])
            if k_td is None:
                cov = _train_cov(g, e.evals, e.evecs, s, nngp_dd)
            else:
                cov = _test_cov(g, e.evals, e.evecs, s, k_td2, make_2d(k_td["nngp"]), nngp_dd,
                                make_2d(nngp_tt))
            cov = zip_axes(cov.reshape(t_shape + test_shape + test_shape), len(t_shape))
            out[g] = Gaussian(mean, cov)
        return pack(out, names, single)

    return predict_fn


class _Pair:
    """A minimal kernel holder with ``nngp`` / ``ntk`` attributes."""

    def __init__(self, nngp=None, ntk=None):
        self.nngp, self.ntk = nngp, ntk


@jax.jit
def _ens_mean(evals, evecs, y_rows, s, k_td2):
    """Ensemble mean at times ``s`` (T,) on the training set (``k_td2=None``) or the test set."""
    b = _mm(evecs.T, y_rows)[None]
    ev, s3 = evals[None, :, None], s[:, None, None]
    if k_td2 is None:
        return _mm(evecs, -expm1_neg(ev, s3) * b)
    return _mm(k_td2, _mm(evecs, phi(ev, s3) * b))


@functools.partial(jax.jit, static_argnums=0)
def _train_cov(g, evals, evecs, s, nngp_dd):
    """Covariance on the training set at times ``s`` (T,): (T, N, N)."""
    s = s[:, None]
    if g == "nngp":
        w = evals * jnp.exp(-2 * jnp.where(evals > 0, evals * s, 0))
        return _mm(evecs * w[:, None, :], evecs.T)
    decay = _mm(evecs * jnp.exp(-jnp.where(evals > 0, evals * s, 0))[:, None, :],
                evecs.T)  # e^{-Θ s}
    return _mm(decay, _mm(nngp_dd, decay))


@functools.partial(jax.jit, static_argnums=0)
def _test_cov(g, evals, evecs, s, k_td2, nngp_td, nngp_dd, nngp_tt):
    """Covariance on the test set at times ``s`` (T,): (T, N*, N*).

    The mode's test-train kernel is rotated once into the eigenbasis of its regularized
    train-train kernel (``a = K_*d V``); each time then costs one ``N* x N x N`` product.
    """
    a = _mm(k_td2, evecs)
    if g == "nngp":
        return nngp_tt[None] - _mm(a * phi(evals, 2 * s[:, None])[:, None, :], a.T)

    def one(s1):
        m = _mm(a * phi(evals, s1), evecs.T)  # Θ_*d Θ^{-1}(I - e^{-Θ s}): (N*, N)
        cross = _mm(m, nngp_td.T)
        return _mm(_mm(m, nngp_dd), m.T) - cross - cross.T + nngp_tt

    return jax.lax.map(one, s)


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0.0, eps: float = 1e-12):
    r"""The largest learning rate for which gradient descent on MSE is stable (infinite width).

    With loss ``||f - y||^2 / (2 n)``, ``n = y_train_size``, gradient descent is a contraction
    for ``η < 2 n / λ_max(Θ)``; with heavy-ball momentum ``β`` the bound is
    ``2 (1 + β) n / λ_max(Θ)`` (arXiv:1806.07572; distill.pub/2017/momentum).

    Args:
      ntk_train_train: the NTK on the training set (any interleaved layout).
      y_train_size: ``y_train.size``; default: the number of rows of the 2-D kernel
        (i.e. ``trace_axes=()``).
      momentum: momentum ``β``.
      eps: added to ``λ_max`` to avoid dividing by zero.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import predict
      >>> round(float(predict.max_learning_rate(jnp.array([[3., 1.], [1., 3.]]))), 6)  # 2*2/4
      1.0
    """
    k = make_2d(ntk_train_train)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"max_learning_rate: ntk_train_train must be square, got {k.shape}.")
    n = k.shape[0] if y_train_size is None else y_train_size
    if is_concrete(k):
        lam = float(np.linalg.eigvalsh(np.asarray(k, np.float64))[-1])
    else:
        lam = jnp.linalg.eigvalsh(k)[-1]
    return 2 * (1 + momentum) * n / (lam + eps)
