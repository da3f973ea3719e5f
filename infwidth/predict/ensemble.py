"""The infinite ensemble of infinitely wide networks trained by gradient flow on MSE:
mean and covariance at any time, straight from ``kernel_fn`` (`gradient_descent_mse_ensemble`).
"""

from __future__ import annotations

import jax.numpy as jnp

from ._helpers import (
    Eigen,
    Layout,
    Pair,
    as_times,
    canonicalize_get,
    check_diag_reg,
    check_inputs,
    check_learning_rate,
    check_not_empty,
    check_real,
    check_train_values,
    clip_variances,
    ens_mean,
    kernel_attr,
    make_2d,
    merge_kwargs,
    pack,
    regularize,
    test_cov,
    train_cov,
    zip_axes,
)
from .chebyshev import ChebyshevExpansion
from .gp import Gaussian, gp_inference
from .mse import FINITE_TIME_METHODS


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
      >>> out.mean.round(4).ravel().tolist(), bool(abs(out.covariance).max() < 1e-4)
      ([1.0, 0.0, 1.0], True)
    """
    where = "gradient_descent_mse_ensemble"
    y_train = check_real(y_train, "y_train", where)
    check_not_empty(y_train, where)
    check_inputs(x_train, "x_train", where)
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
                name = f"kernel_fn(x_train).{g}"
                k_dd = layout.check_train_kernel(kernel_attr(k, g, "kernel_fn(x_train)"), name)
                check_train_values(make_2d(k_dd), name, where)
                k_dd_cache[g] = k_dd
        return {g: k_dd_cache[g] for g in names}

    def eigen(g):
        if g not in eigen_cache:
            k2d = regularize(make_2d(train_kernels((g,))[g]), diag_reg, diag_reg_absolute_scale)
            eigen_cache[g] = Eigen(k2d)
        return eigen_cache[g]

    def gp(deps):
        if deps not in gp_cache:
            k_dd = Pair(**train_kernels(deps))
            gp_cache[deps] = gp_inference(k_dd, y_train, diag_reg, diag_reg_absolute_scale,
                                          trace_axes, solver=solver)
        return gp_cache[deps]

    def predict_fn(t=None, x_test=None, get=None, compute_cov: bool = False,
                   **kernel_fn_test_test_kwargs):
        """Ensemble mean [and covariance] on ``x_test`` at time(s) ``t``."""
        fn = where + ".predict_fn"
        names, single = canonicalize_get(get, fn)
        if t is not None:  # argument errors before any kernel is computed
            t = as_times(t, fn, jnp.result_type(float))
        if compute_cov not in (True, False):
            raise TypeError(f"{fn}(compute_cov={compute_cov!r}): compute_cov must be a bool.")
        if x_test is not None:
            check_inputs(x_test, "x_test", fn, x_train)
        deps = tuple(g for g in ("nngp", "ntk")
                     if g in names or (g == "nngp" and "ntk" in names and compute_cov))
        k_dd = train_kernels(deps)
        k_td = nngp_tt = None
        if x_test is not None:
            kw_td, kw_tt = merge_kwargs(kernel_fn_train_train_kwargs, kernel_fn_test_test_kwargs)
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
                            None if k_td is None else Pair(**k_td), k_test_test)

        dtype = k_dd[deps[0]].dtype
        t = t.astype(dtype)
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
                    expansions[g] = ChebyshevExpansion(
                        lambda g=g: regularize(make_2d(k_dd[g]), diag_reg, diag_reg_absolute_scale),
                        finite_time_method, dtype, layout, where)
                res = expansions[g].apply(s, -y_rows, k_td2, k_td2 is None)
                if res is not None:
                    mean = res[0] if k_td2 is None else res[1]
            if mean is None:
                e = eigen(g)
                mean = ens_mean(e.evals, e.evecs, y_rows, s, k_td2)
            mean = layout.from_rows(mean, t_shape, test_shape)
            if not compute_cov:
                out[g] = mean
                continue
            nngp_dd = make_2d(k_dd["nngp"])
            if k_td is None:
                prior = nngp_dd
                cov = train_cov(g, e.evals, e.evecs, s, nngp_dd)
            else:
                prior = make_2d(nngp_tt)
                cov = test_cov(g, e.evals, e.evecs, s, k_td2, make_2d(k_td["nngp"]), nngp_dd,
                                prior)
            cov = clip_variances(cov, prior, fn)
            cov = zip_axes(cov.reshape(t_shape + test_shape + test_shape), len(t_shape))
            out[g] = Gaussian(mean, cov)
        return pack(out, names, single)

    return predict_fn


