"""Function-space gradient descent (with optional momentum) for any loss, by integrating the
ODE ``df/dt = -η Θ ∇_f L(f)`` with an adaptive Runge-Kutta solver (arXiv:1902.06720)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._helpers import (
    Layout,
    as_times,
    broadcast_output,
    check_learning_rate,
    check_not_empty,
    check_outputs,
    check_real,
    check_train_values,
    is_concrete,
    make_2d,
    mm,
)


@dataclasses.dataclass
class ODEState:
    """The state of the function-space ODE.

    Attributes:
      fx_train, fx_test: outputs on the training / test set.
      qx_train, qx_test: auxiliary variables (the momentum, when ``momentum`` is not None).
    """

    fx_train: Any = None
    fx_test: Any = None
    qx_train: Any = None
    qx_test: Any = None


jax.tree_util.register_dataclass(ODEState, data_fields=["fx_train", "fx_test", "qx_train",
                                                        "qx_test"], meta_fields=[])


def gradient_descent(loss, k_train_train, y_train, learning_rate: float = 1.0,
                     momentum: float | None = None, trace_axes=(-1,), *, rtol: float = 1.4e-8,
                     atol: float = 1.4e-8):
    r"""Outputs of a network trained by gradient descent on any ``loss``, from its NTK.

    Integrates ``df_train/dt = -η Θ ∇L(f_train)`` and ``df_test/dt = -η Θ_*d ∇L(f_train)``
    (the linearized network, exact at infinite width; arXiv:1902.06720) with
    ``jax.experimental.ode.odeint`` (Dormand-Prince, relative and absolute tolerances ``rtol``,
    ``atol``). With ``momentum`` ``β`` it integrates the continuous heavy-ball dynamics
    ``f'' = -Θ ∇L(f) + ((β - 1) / sqrt(η)) f'`` in time units of ``sqrt(η)``, as
    neural-tangents does. Unlike `gradient_descent_mse` the loss is used as given (no division
    by ``y_train.size``).

    Args:
      loss: ``loss(fx_train, y_train) -> scalar``, e.g. the cross-entropy.
      k_train_train: the NTK on the training set (non-``trace_axes`` axes of ``y_train`` in pairs).
      y_train: training targets.
      learning_rate: step size ``η``.
      momentum: heavy-ball momentum ``β``, or ``None`` for plain gradient descent.
      trace_axes: output axes along which the kernel is ``K (x) I``.
      rtol, atol: tolerances of the ODE solver.

    Returns:
      ``predict_fn(t, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)``; ``t`` is a
      number or an array of non-decreasing times (finite). Given an `ODEState` it returns one
      (with the momentum variables), otherwise ``fx_train_t``, ``fx_test_t`` or both.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import predict
      >>> mse = lambda f, y: 0.5 * jnp.sum((f - y) ** 2)
      >>> predict_fn = predict.gradient_descent(mse, jnp.array([[2.]]), jnp.array([[1.]]))
      >>> round(float(predict_fn(1., 0.)[0, 0]), 5)  # 1 - exp(-2)
      0.86466
    """
    where = "gradient_descent"
    y_train = check_real(y_train, "y_train", where)
    check_not_empty(y_train, where)
    layout = Layout(y_train, trace_axes, where)
    k_train_train = layout.check_train_kernel(k_train_train)
    check_train_values(make_2d(k_train_train), "k_train_train", where)
    check_learning_rate(learning_rate, where)
    if momentum is not None and is_concrete(momentum) and not 0 <= float(momentum) <= 1:
        raise ValueError(f"{where}(momentum={momentum!r}): momentum must be None or in [0, 1].")
    if not callable(loss):
        raise TypeError(f"{where}: loss must be a function loss(fx_train, y_train), got {loss!r}.")
    dtype = k_train_train.dtype
    k_dd2 = make_2d(k_train_train)
    grad_loss = jax.grad(lambda fx: loss(fx, y_train))
    time_scale = learning_rate if momentum is None else learning_rate ** 0.5
    friction = None if momentum is None else (momentum - 1.0) / learning_rate ** 0.5

    def apply(k2, g, shape):
        return layout.from_rows(mm(k2, layout.to_rows(g)), nontrace_shape=shape)

    def predict_fn(t=None, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None):
        """Outputs (or the ODE state) at time(s) ``t``."""
        fn = where + ".predict_fn"
        is_state = isinstance(fx_train_or_state_0, ODEState)
        if is_state:
            if fx_test_0 is not None:
                raise ValueError(f"{fn}: fx_test_0 is part of the ODEState; pass fx_test_0=None.")
            st = fx_train_or_state_0
            fx_train_0, fx_test_0, qx_train_0, qx_test_0 = (st.fx_train, st.fx_test, st.qx_train,
                                                            st.qx_test)
        else:
            fx_train_0, qx_train_0, qx_test_0 = fx_train_or_state_0, None, None
        check_outputs(fx_train_0, fx_test_0, k_test_train, fn)
        if t is None:
            raise ValueError(f"{fn}(t=None): the ODE is integrated to finite times only; for "
                             f"infinite time under MSE use gradient_descent_mse(t=None).")
        if momentum is None and (qx_train_0 is not None or qx_test_0 is not None):
            raise ValueError(f"{fn}: the ODEState has momentum variables but momentum=None.")

        test_shape = k_td2 = None
        if k_test_train is not None:
            k_test_train = layout.check_test_kernel(k_test_train)
            test_shape = k_test_train.shape[::2]
            k_td2 = make_2d(k_test_train)
        test_out_shape = layout.out_shape(test_shape) if test_shape is not None else None

        t = as_times(t, fn, dtype)
        t_shape = t.shape
        ts = t.reshape(-1) * time_scale
        if is_concrete(ts):
            if not bool(jnp.all(jnp.isfinite(ts))):
                raise ValueError(f"{fn}: times must be finite (use gradient_descent_mse for "
                                 f"t=None / inf).")
            if ts.size > 1 and bool(jnp.any(jnp.diff(ts) < 0)):
                raise ValueError(f"{fn}: t must be in non-decreasing order, got {np.asarray(t)}.")

        fx_train = (jnp.zeros(layout.y_shape, dtype) if fx_train_0 is None else
                    broadcast_output(fx_train_0, layout.y_shape, "fx_train_0", fn).astype(dtype))
        fx_test = (None if fx_test_0 is None else
                   broadcast_output(fx_test_0, test_out_shape, "fx_test_0", fn).astype(dtype))
        state0 = ODEState(fx_train, fx_test)
        if momentum is not None:
            state0.qx_train = (jnp.zeros(layout.y_shape, dtype) if qx_train_0 is None else
                               broadcast_output(qx_train_0, layout.y_shape, "qx_train", fn))
            if fx_test is not None:
                state0.qx_test = (jnp.zeros(test_out_shape, dtype) if qx_test_0 is None else
                                  broadcast_output(qx_test_0, test_out_shape, "qx_test", fn))

        def rhs(state, _t):
            g = grad_loss(state.fx_train)
            d_train = -apply(k_dd2, g, layout.nontrace_shape)
            d_test = None if state.fx_test is None else -apply(k_td2, g, test_shape)
            if momentum is None:
                return ODEState(d_train, d_test)
            d_qtrain = d_train + friction * state.qx_train
            d_qtest = None if d_test is None else d_test + friction * state.qx_test
            return ODEState(state.qx_train, state.qx_test, d_qtrain, d_qtest)

        # odeint starts at its first time: integrate from 0 (a hair earlier if t[0] == 0).
        start = jnp.where(ts[:1] == 0, -1e-24, 0.0).astype(dtype)
        from jax.experimental.ode import odeint

        traj = odeint(rhs, state0, jnp.concatenate([start, ts]), rtol=rtol, atol=atol)
        traj = jax.tree_util.tree_map(lambda x: x[1:].reshape(t_shape + x.shape[1:]), traj)
        if is_state:
            return traj
        if fx_train_0 is not None and fx_test_0 is not None:
            return traj.fx_train, traj.fx_test
        return traj.fx_train if fx_test_0 is None else traj.fx_test

    return predict_fn
