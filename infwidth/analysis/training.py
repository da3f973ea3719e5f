"""Lazy or rich? Diagnostics of a training run against its kernel (linearized) description.

* `kernel_movement`: ``||K_t - K_0||_F / ||K_0||_F`` of the empirical NTK (Jacot et al. 2018,
  arXiv:1806.07572); it vanishes like ``1 / sqrt(width)`` under the NTK parameterization and
  stays of order one under muP (Yang & Hu 2021, arXiv:2011.14522).
* `weight_movement`: ``||theta_t - theta_0|| / ||theta_0||``, per leaf or in total.
* `track_training`: trains the network and its first-order Taylor expansion in the weights
  (`infwidth.empirical.linearize`; Lee et al. 2019, arXiv:1902.06720) side by side and records
  how far the outputs drift apart; with an output multiplier ``alpha``
  (`infwidth.stax.OutputScale`) and learning rate ``eta / alpha**2`` the distance shrinks like
  ``1 / alpha`` (lazy training, Chizat et al. 2019, arXiv:1812.07956).

When the per-layer learning rates differ (muP), the kernel that drives the
outputs is the learning-rate-weighted one, ``sum_p lr_p df/dp df/dp^T``: pass the rates as
``lr_scales`` (e.g. ``infwidth.mup.mup_learning_rates(params)``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import safe_divide
from .._training import check_optimizer, check_positive_int, mse_loss
from ..empirical import empirical_ntk_fn, linearize

_tm = jax.tree_util.tree_map


def _check_scales(lr_scales, caller):
    if lr_scales is None:
        return None
    if any(np.any(np.asarray(r) <= 0) for r in jax.tree_util.tree_leaves(lr_scales)):
        raise ValueError(f"{caller}(lr_scales=...): every learning-rate multiplier must be "
                         f"positive (a frozen parameter does not enter the kernel; leave it out "
                         f"of apply_fn's params instead).")
    return lr_scales


def _sqrt_scales(params, lr_scales):
    if lr_scales is None:
        return None
    return _tm(lambda p, s: jnp.sqrt(jnp.asarray(s, p.dtype)), params, lr_scales)


def _ntk(apply_fn, params, x, lr_scales=None):
    """Empirical NTK ``(N, N)``, traced (averaged) over output channels, learning-rate weighted.

    The weighting uses ``J diag(s) J^T = J_u J_u^T`` for ``theta = sqrt(s) * u``, so the plain
    `infwidth.empirical.empirical_ntk_fn` computes it.
    """
    root = _sqrt_scales(params, lr_scales)

    def f(u, x):
        p = u if root is None else _tm(lambda a, r: a * r, u, root)
        out = apply_fn(p, x)
        return out.reshape(out.shape[0], -1)

    u = params if root is None else _tm(lambda a, r: a / r, params, root)
    return empirical_ntk_fn(f, trace_axes=(-1,))(x, None, u)


_ntk_jit = jax.jit(_ntk, static_argnums=0)


def empirical_kernel(apply_fn, params, x, lr_scales=None):
    """The (learning-rate-weighted) empirical NTK of ``apply_fn`` at ``params`` on ``x``.

    ``sum_p lr_p J_p J_p^T`` averaged over output channels, shape ``(N, N)``; with
    ``lr_scales=None`` every parameter has weight 1 (the usual empirical NTK).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, _ = stax.Dense(1)
      >>> _, params = init_fn(jax.random.PRNGKey(0), (2, 3))
      >>> x = jnp.array([[1., 0., 0.], [1., 1., 0.]])
      >>> empirical_kernel(apply_fn, params, x).round(4).tolist()  # x @ x.T / 3
      [[0.3333, 0.3333], [0.3333, 0.6667]]
    """
    lr_scales = _check_scales(lr_scales, "empirical_kernel")
    return _ntk_jit(apply_fn, params, jnp.asarray(x), lr_scales)


def _rel(a, b):
    return float(safe_divide(jnp.linalg.norm(a - b), jnp.linalg.norm(b)))


def kernel_movement(apply_fn, params0, params_t, x, lr_scales=None) -> float:
    """Relative movement of the empirical NTK, ``||K_t - K_0||_F / ||K_0||_F``.

    Args:
      apply_fn: the network ``apply_fn(params, x)``.
      params0, params_t: parameters at initialisation and after training.
      x: inputs on which the kernel is measured, ``(N, ...)``.
      lr_scales: optional per-parameter learning-rate multipliers (a pytree like ``params``)
        weighting the kernel, as used in training (see `infwidth.mup.mup_learning_rates`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(32), stax.Relu(), stax.Dense(1))
      >>> _, p0 = init_fn(jax.random.PRNGKey(0), (4, 3))
      >>> x = jnp.eye(3)
      >>> kernel_movement(apply_fn, p0, p0, x)
      0.0
      >>> p1 = jax.tree_util.tree_map(lambda a: 1.1 * a, p0)
      >>> kernel_movement(apply_fn, p0, p1, x) > 0.1
      True
    """
    k0 = empirical_kernel(apply_fn, params0, x, lr_scales)
    kt = empirical_kernel(apply_fn, params_t, x, lr_scales)
    return _rel(kt, k0)


def weight_movement(params0, params_t, per_leaf: bool = False):
    """Relative weight movement ``||theta_t - theta_0|| / ||theta_0||``.

    With ``per_leaf=True``, a pytree like ``params`` holding each leaf's relative movement.

    Example:
      >>> import jax.numpy as jnp
      >>> p0 = {'w': jnp.array([3., 4.]), 'b': jnp.array([1.])}
      >>> p1 = {'w': jnp.array([3., 4.5]), 'b': jnp.array([1.])}
      >>> round(weight_movement(p0, p1), 4), weight_movement(p0, p1, per_leaf=True)['w']
      (0.0981, 0.1)
    """
    if jax.tree_util.tree_structure(params0) != jax.tree_util.tree_structure(params_t):
        raise ValueError("weight_movement(params0, params_t): the two parameter pytrees have "
                         "different structures; pass the same network's parameters twice.")
    if per_leaf:
        return _tm(lambda a, b: _rel(b, a), params0, params_t)
    d = sum(float(jnp.sum((b - a) ** 2)) for a, b in zip(jax.tree_util.tree_leaves(params0),
                                                          jax.tree_util.tree_leaves(params_t)))
    n = sum(float(jnp.sum(a**2)) for a in jax.tree_util.tree_leaves(params0))
    return float(np.sqrt(d / n)) if n > 0 else 0.0


class TrainingTrace(NamedTuple):
    """What `track_training` records at each recorded step.

    Attributes:
      steps: the recorded step numbers ``(R,)`` (0 is initialisation).
      loss, loss_lin: training loss of the network and of its linearization, ``(R,)``.
      kernel_movement: ``||K_t - K_0|| / ||K_0||`` of the (weighted) empirical NTK, ``(R,)``.
      weight_movement: ``||theta_t - theta_0|| / ||theta_0||``, ``(R,)``.
      linearization_distance: ``||f_t - f_lin_t|| / ||f_lin_t - f_0||`` on the evaluation
        inputs, ``(R,)`` (0 at step 0): small means the network trains like its linearization.
      params: the trained parameters of the network.
      params_lin: the trained parameters of the linearization.
    """

    steps: np.ndarray
    loss: np.ndarray
    loss_lin: np.ndarray
    kernel_movement: np.ndarray
    weight_movement: np.ndarray
    linearization_distance: np.ndarray
    params: object
    params_lin: object


def track_training(apply_fn, params, x, y, optimizer, steps: int, record_every: int = 1,
                   x_eval=None, lr_scales=None, loss_fn=mse_loss) -> TrainingTrace:
    """Trains the network and its linearization side by side, recording lazy-vs-rich measures.

    Both start from ``params`` and take the same full-batch optimizer steps on ``(x, y)``.

    Args:
      apply_fn: the network.
      params: initial parameters.
      x, y: training inputs and targets.
      optimizer: a float learning rate (plain gradient descent) or an optax transform, e.g.
        ``infwidth.mup.sgd(lr, params)``; a fresh state is used for each of the two models.
      steps: number of training steps.
      record_every: record the measures every this many steps (and at the end).
      x_eval: inputs on which kernels and output distances are measured (default ``x``).
      lr_scales: per-parameter learning-rate multipliers weighting the kernel (see
        `kernel_movement`); pass the same rates the optimizer applies.
      loss_fn: ``(outputs, y) -> scalar``; half the mean squared error by default.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(256), stax.Relu(), stax.Dense(1))
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 3)); y = jnp.sign(x[:, :1])
      >>> _, p0 = init_fn(jax.random.PRNGKey(1), x.shape)
      >>> tr = track_training(apply_fn, p0, x, y, optimizer=1.0, steps=20, record_every=10)
      >>> tr.steps.tolist(), bool(tr.loss[-1] < tr.loss[0])
      ([0, 10, 20], True)
      >>> bool(tr.kernel_movement[-1] < 0.2 and tr.linearization_distance[-1] < 0.2)
      True
    """
    caller = "track_training"
    steps = check_positive_int(steps, "steps", caller)
    record_every = check_positive_int(record_every, "record_every", caller)
    lr_scales = _check_scales(lr_scales, caller)
    x, y = jnp.asarray(x), jnp.asarray(y)
    x_eval = x if x_eval is None else jnp.asarray(x_eval)
    f_lin = linearize(apply_fn, params)
    init, update = check_optimizer(optimizer, caller)

    def one_step(p, s, model):
        grads = jax.grad(lambda q: loss_fn(model(q, x), y))(p)
        updates, s = update(grads, s, p)
        return _tm(lambda a, u: a + u, p, updates), s

    @jax.jit
    def both_steps(p, s, pl, sl):  # one compiled step for the network and its linearization
        return one_step(p, s, apply_fn) + one_step(pl, sl, f_lin)

    @jax.jit
    def measure(p, pl):
        ft, fl = apply_fn(p, x_eval), f_lin(pl, x_eval)
        return (loss_fn(apply_fn(p, x), y), loss_fn(f_lin(pl, x), y),
                _ntk(apply_fn, p, x_eval, lr_scales), ft, fl)

    _, _, k0, f0, _ = measure(params, params)
    p, s, pl, sl = params, init(params), params, init(params)
    rec = {k: [] for k in ("steps", "loss", "loss_lin", "km", "wm", "ld")}

    def record(t):
        loss, loss_lin, kt, ft, fl = measure(p, pl)
        rec["steps"].append(t)
        rec["loss"].append(float(loss))
        rec["loss_lin"].append(float(loss_lin))
        rec["km"].append(_rel(kt, k0))
        rec["wm"].append(weight_movement(params, p))
        rec["ld"].append(float(safe_divide(jnp.linalg.norm(ft - fl), jnp.linalg.norm(fl - f0))))

    record(0)
    for t in range(1, steps + 1):
        p, s, pl, sl = both_steps(p, s, pl, sl)
        if t % record_every == 0 or t == steps:
            record(t)
    return TrainingTrace(np.asarray(rec["steps"]), np.asarray(rec["loss"]),
                         np.asarray(rec["loss_lin"]), np.asarray(rec["km"]),
                         np.asarray(rec["wm"]), np.asarray(rec["ld"]), p, pl)
