"""Closed-form gradient-flow dynamics under MSE loss of one network given its kernels
(`gradient_descent_mse`), and the largest stable learning rate (`max_learning_rate`).

Time convention (neural-tangents'): the loss is ``||f - y||^2 / (2 * y_train.size)`` and
``t`` counts gradient-descent steps of size ``learning_rate``, so the training outputs follow
``f(t) = y + exp(-learning_rate * t * K / y_train.size) (f(0) - y)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._helpers import (
    Eigen,
    Layout,
    Solves,
    as_times,
    broadcast_output,
    check_diag_reg,
    check_learning_rate,
    check_not_empty,
    check_outputs,
    check_real,
    check_train_values,
    is_concrete,
    make_2d,
    mm,
    mse_finite,
    regularize,
)
from .chebyshev import ChebyshevExpansion
from .solvers import get_solver

FINITE_TIME_METHODS = ("auto", "eigh", "chebyshev")


def gradient_descent_mse(k_train_train, y_train, learning_rate: float = 1.0,
                         diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                         trace_axes=(-1,), *, solver="cholesky", finite_time_method="auto"):
    r"""Outputs of a network trained by gradient flow on MSE, in closed form from its kernel.

    For the linearized network (exact at infinite width, arXiv:1806.07572, arXiv:1902.06720)
    with NTK ``Θ`` on the training set, ``f_train(t) = y + e^{-η Θ t / n} (f_train(0) - y)`` and
    ``f_test(t) = f_test(0) + Θ_*d Θ^{-1} (I - e^{-η Θ t / n}) (y - f_train(0))`` with
    ``n = y_train.size``.

    Finite times use the eigendecomposition of ``k_train_train`` (plus ``diag_reg``), ``t=None``
    (infinite time) a Cholesky factorization (or ``solver='cg'``); numerics as in
    `infwidth.predict`.

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
        above ``max(N, 1024)``). Only the speed differs, not the result.

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
      >>> predict_fn(t=2., fx_train_0=0.).round(5).tolist()  # 1 - exp(-k t / 2)
      [[0.86466], [0.63212]]
    """
    where = "gradient_descent_mse"
    y_train = check_real(y_train, "y_train", where)
    check_not_empty(y_train, where)
    layout = Layout(y_train, trace_axes, where)
    k_train_train = layout.check_train_kernel(k_train_train)
    check_train_values(make_2d(k_train_train), "k_train_train", where)
    check_learning_rate(learning_rate, where)
    check_diag_reg(diag_reg, where)
    if finite_time_method not in FINITE_TIME_METHODS:
        raise ValueError(f"{where}(finite_time_method={finite_time_method!r}): must be one of "
                         f"{FINITE_TIME_METHODS}.")
    dtype = k_train_train.dtype
    solves = Solves(k_train_train, diag_reg, diag_reg_absolute_scale, get_solver(solver),
                    "k_train_train", where)
    eigen_cache = []

    def k2d_reg():
        return regularize(make_2d(k_train_train), diag_reg, diag_reg_absolute_scale)

    expansion = ChebyshevExpansion(k2d_reg, finite_time_method, dtype, layout, where)

    def eigen():
        if eigen_cache:
            return eigen_cache[0]
        e = Eigen(k2d_reg())
        if is_concrete(e.evals):
            eigen_cache.append(e)
        return e

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        """Train [and test] outputs at time(s) ``t`` (``None``: infinite time)."""
        check_outputs(fx_train_0, fx_test_0, k_test_train, where + ".predict_fn")
        if t is not None:
            t = as_times(t, where + ".predict_fn", dtype)
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
            fx_test_t = fx_test_0 + layout.from_rows(mm(k_td2, x), nontrace_shape=test_shape)
            return fx_test_t if fx_train_0 is None else (fx_train_t, fx_test_t)

        t_shape = t.shape
        s = (t * learning_rate / layout.size).reshape(-1)
        rhs = layout.to_rows(-y_train if fx_train_0 is None else fx_train_0 - y_train)
        rhs = rhs.astype(dtype)
        k_td2_used = None if fx_test_0 is None else k_td2
        result = None if eigen_cache else expansion.apply(s, rhs, k_td2_used,
                                                          fx_train_0 is not None)
        if result is None:
            e = eigen()
            result = mse_finite(e.evals, e.evecs, rhs, s, k_td2_used, fx_train_0 is not None)
        dfx_train, dfx_test = result
        outs = []
        if fx_train_0 is not None:
            outs.append(fx_train_0[(None,) * len(t_shape)]
                        + layout.from_rows(dfx_train, t_shape))
        if fx_test_0 is not None:
            outs.append(fx_test_0[(None,) * len(t_shape)]
                        + layout.from_rows(dfx_test, t_shape, test_shape))
        return outs[0] if len(outs) == 1 else tuple(outs)

    return predict_fn


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
