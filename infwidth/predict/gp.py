"""Gaussian-process inference with the NNGP or the NTK: posterior mean and covariance."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from ._helpers import (
    Layout,
    Solves,
    canonicalize_get,
    check_diag_reg,
    check_not_empty,
    check_real,
    check_train_values,
    clip_variances,
    first_kernel,
    is_array,
    kernel_attr,
    make_2d,
    mm,
    pack,
    zip_axes,
)
from .solvers import get_solver


class Gaussian(NamedTuple):
    """A ``(mean, covariance)`` pair.

    Attributes:
      mean: shaped like the network outputs (with leading time axes if several ``t``).
      covariance: shaped like the kernel between the predicted inputs, e.g. ``(N, N)``.
    """

    mean: Any
    covariance: Any


def gp_inference(k_train_train, y_train, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False, trace_axes=(-1,), *,
                 solver="cholesky"):
    r"""Posterior of the NNGP / NTK Gaussian process given training data.

    ``'nngp'``: the exact posterior of an infinitely wide Bayesian network (arXiv:1711.00165),
    ``K_*d K^{-1} y`` with covariance ``K_** - K_*d K^{-1} K_d*``. ``'ntk'``: the distribution of
    an infinite ensemble of infinitely wide networks trained to convergence by gradient flow on
    MSE (arXiv:1902.06720), mean ``Θ_*d Θ^{-1} y`` and covariance
    ``K_** + Θ_*d Θ^{-1} K Θ^{-1} Θ_d* - (Θ_*d Θ^{-1} K_d* + h.c.)``. ``'ntkgp'``: the GP
    posterior with the NTK as covariance (arXiv:2007.05864).

    A kernel that is not positive definite raises
    :class:`~infwidth.predict.NotPositiveDefiniteError`; numerics as in `infwidth.predict`.

    Args:
      k_train_train: train-train kernel: an array (used for every ``get``), or a `Kernel` /
        namedtuple with ``nngp`` and/or ``ntk``. For the NTK covariance it needs both.
      y_train: training targets; its non-``trace_axes`` axes index the kernel.
      diag_reg: diagonal regularization (``k + diag_reg * mean(diag k) * I``).
      diag_reg_absolute_scale: take ``diag_reg`` in absolute units instead.
      trace_axes: output axes along which the kernel is ``K (x) I`` (independent channels).
      solver: ``'cholesky'`` (default), ``'cg'``, or a `Cholesky` / `CG` instance.

    Returns:
      ``predict_fn(get=None, k_test_train=None, k_test_test=None)``: with ``k_test_train`` the
      test-set posterior mean, and with ``k_test_test`` also the covariance (a `Gaussian`); without
      ``k_test_train`` the training set (``y_train``, zero covariance). ``get`` is ``'nngp'``,
      ``'ntk'``, ``'ntkgp'`` or a tuple (a namedtuple is returned); ``None`` means
      ``('nngp', 'ntk')``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import predict
      >>> k_dd = jnp.array([[2., 1.], [1., 2.]])
      >>> y = jnp.array([[1.], [-1.]])
      >>> predict_fn = predict.gp_inference(k_dd, y)
      >>> out = predict_fn('nngp', k_test_train=jnp.array([[1., 0.]]),
      ...                  k_test_test=jnp.array([[2.]]))
      >>> out.mean.tolist(), round(float(out.covariance[0, 0]), 5)
      ([[1.0]], 1.33333)
    """
    where = "gp_inference"
    y_train = check_real(y_train, "y_train", where)
    check_not_empty(y_train, where)
    layout = Layout(y_train, trace_axes, where)
    check_diag_reg(diag_reg, where)
    layout.check_train_kernel(first_kernel(k_train_train, "k_train_train"))
    for g in ("nngp", "ntk"):  # bad values fail here, before any factorization
        if is_array(k_train_train) or getattr(k_train_train, g, None) is not None:
            name = "k_train_train" + ("" if is_array(k_train_train) else f".{g}")
            check_train_values(make_2d(kernel_attr(k_train_train, g, name)), name, where)
            if is_array(k_train_train):
                break
    solves = Solves(k_train_train, diag_reg, diag_reg_absolute_scale, get_solver(solver),
                    "k_train_train", where)
    y_rows = layout.to_rows(y_train)
    k_inv_y = {}

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        """Posterior mean [and covariance] on the test set (or the training set)."""
        names, single = canonicalize_get(get, "gp_inference.predict_fn",
                                         allowed=("nngp", "ntk", "ntkgp"))
        out = {}
        for g in names:
            k = "ntk" if g == "ntkgp" else g
            k_dd = kernel_attr(k_train_train, k, "k_train_train")
            if k_test_train is None:
                mean = y_train.astype(k_dd.dtype)
                out[g] = mean if k_test_test is None else Gaussian(mean, jnp.zeros_like(k_dd))
                continue

            k_td = layout.check_test_kernel(kernel_attr(k_test_train, k, "k_test_train"))
            test_shape = k_td.shape[::2]
            k_td2 = make_2d(k_td)
            if k not in k_inv_y:
                k_inv_y[k] = solves.solve(k, y_rows.astype(k_dd.dtype))
            mean = layout.from_rows(mm(k_td2, k_inv_y[k]),
                                    nontrace_shape=test_shape)
            if k_test_test is None:
                out[g] = mean
                continue

            g_init = "ntk" if g == "ntkgp" else "nngp"
            if g == "ntk":
                hint = ("the NTK posterior covariance needs both the NNGP and the NTK in "
                        "k_train_train and k_test_train (Kernels or namedtuples)")
                if is_array(k_train_train) or is_array(k_test_train):
                    raise ValueError(f"gp_inference: {hint}; got a plain array.")
            k_td_init = make_2d(kernel_attr(k_test_train, g_init, "k_test_train"))
            k_tt = kernel_attr(k_test_test, g_init, "k_test_test")
            if g == "ntk":  # one solve: Θ^{-1} Θ_d* serves both terms (Θ is symmetric)
                nngp_dd = make_2d(kernel_attr(k_train_train, "nngp", "k_train_train"))
                term = solves.solve(k, k_td2.T)
                cross = mm(term.T, k_td_init.T)  # Θ_*d Θ^{-1} K_d*
                cov = mm(term.T, mm(nngp_dd, term)) - cross - cross.T
                sign = 1
            else:
                cov, sign = mm(k_td2, solves.solve(k, k_td_init.T)), -1  # K_*d K^{-1} K_d*
            k_tt2 = make_2d(k_tt)
            cov = clip_variances(sign * cov + k_tt2, k_tt2, where)
            cov = zip_axes(cov.reshape(test_shape + test_shape))
            out[g] = Gaussian(mean, cov)
        return pack(out, names, single)

    return predict_fn
