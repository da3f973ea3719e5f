"""The coordinate check: does each layer's activation, and its change over the first training
steps, stay the same size as the width grows? (Yang et al. 2022, "Tensor Programs V",
arXiv:2203.03466, Appendix D.)

Under muP every curve is flat in width; under the standard parameterization with a fixed
learning rate the updates (and soon the activations) grow with width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._training import check_positive_int, make_step, mse_loss


class CoordCheck(NamedTuple):
    """What `coord_check` records, averaged over seeds.

    Attributes:
      widths: the widths, shape ``(W,)``.
      names: a label per recorded layer (``'0:Dense'``, ``'1:Erf(1.0, 1.0, 0.0)'``, ...),
        length ``L``.
      activation: root-mean-square of each layer's output entries, shape ``(W, T + 1, L)``
        for steps ``0..T``.
      update: root-mean-square of each layer's output change since step 0, ``(W, T + 1, L)``.
      loss: training loss before each step, shape ``(W, T + 1)``.
    """

    widths: np.ndarray
    names: list
    activation: np.ndarray
    update: np.ndarray
    loss: np.ndarray

    def width_exponents(self, quantity: str = "update", step: int = -1) -> np.ndarray:
        """Least-squares slope of ``log(size)`` against ``log(width)`` for each layer.

        About 0 means width-independent (muP); positive means growing with width.
        """
        if quantity not in ("update", "activation"):
            raise ValueError(f"CoordCheck.width_exponents(quantity={quantity!r}): quantity must "
                             f"be 'update' or 'activation'.")
        values = getattr(self, quantity)[:, step, :]
        logw = np.log(self.widths)
        return np.polyfit(logw, np.log(np.maximum(values, 1e-30)), 1)[0]


def _rms(x):
    return jnp.sqrt(jnp.mean(x**2))


def _layer_name(i, layer):
    return f"{i}:{getattr(layer.kernel_fn, '__name__', 'layer').removesuffix('.kernel_fn')}"


def coord_check(make_layers: Callable[[int], Sequence], x, y, widths: Sequence[int],
                make_optimizer, steps: int = 3, seeds: int = 1, loss_fn=mse_loss,
                key=None) -> CoordCheck:
    """Trains the network at each width for a few steps and records per-layer sizes.

    Args:
      make_layers: ``width -> [layer, layer, ...]``, the network's layers in order (the list
        you would pass to ``stax.serial``), so that each layer's output can be recorded.
      x, y: a training batch (full-batch training).
      widths: at least two widths.
      make_optimizer: ``params -> optimizer`` (an optax transform such as
        ``lambda p: infwidth.mup.sgd(0.1, p)``, or a float learning rate), or a float used at
        every width.
      steps: number of training steps recorded after initialisation.
      seeds: random initialisations averaged over.
      loss_fn: ``(outputs, y) -> scalar``; half the mean squared error by default.
      key: a PRNG key (default ``PRNGKey(0)``).

    Returns:
      A `CoordCheck`; ``result.width_exponents('update')`` gives each layer's growth exponent.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax, mup
      >>> def layers(n):
      ...     return [stax.Dense(n, parameterization='mup'), stax.Relu(),
      ...             stax.Dense(1, parameterization='mup')]
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 4)); y = jnp.ones((8, 1))
      >>> res = coord_check(layers, x, y, [64, 256], lambda p: mup.sgd(0.5, p), steps=2)
      >>> res.update.shape, res.names
      ((2, 3, 3), ['0:Dense', '1:Relu', '2:Dense'])
      >>> bool(abs(res.width_exponents('update')[-1]) < 0.3)  # readout update: flat in width
      True
    """
    widths = [check_positive_int(int(w), "widths", "coord_check") for w in widths]
    if len(widths) < 2:
        raise ValueError(f"coord_check(widths={widths!r}): give at least two widths.")
    steps = check_positive_int(steps, "steps", "coord_check")
    seeds = check_positive_int(seeds, "seeds", "coord_check")
    key = jax.random.PRNGKey(0) if key is None else key
    x, y = jnp.asarray(x), jnp.asarray(y)

    acts, upds, losses, names = [], [], [], None
    for width in widths:
        layers = list(make_layers(width))
        if not layers:
            raise ValueError("coord_check(make_layers=...): make_layers returned no layers.")
        names = [_layer_name(i, layer) for i, layer in enumerate(layers)]

        def forward(params, layers=layers):
            outs, h = [], x
            for layer, p in zip(layers, params):
                h = layer.apply_fn(p, h)
                outs.append(h)
            return outs

        def loss(params, forward=forward):
            return loss_fn(forward(params)[-1], y)

        a_w, u_w, l_w = [], [], []
        for seed in range(seeds):
            params, shape = [], x.shape
            for i, layer in enumerate(layers):
                shape, p = layer.init_fn(jax.random.fold_in(jax.random.fold_in(key, seed), i),
                                         shape)
                params.append(p)
            opt = make_optimizer(params) if callable(make_optimizer) else make_optimizer
            init, step = make_step(loss, opt, "coord_check")
            state = init(params)
            fwd = jax.jit(forward)
            h0 = fwd(params)
            a_s, u_s, l_s = [], [], []
            for _ in range(steps + 1):
                h = fwd(params)
                a_s.append([float(_rms(o)) for o in h])
                u_s.append([float(_rms(o - o0)) for o, o0 in zip(h, h0)])
                params, state, value = step(params, state)
                l_s.append(float(value))
            a_w.append(a_s)
            u_w.append(u_s)
            l_w.append(l_s)
        acts.append(np.mean(a_w, 0))
        upds.append(np.mean(u_w, 0))
        losses.append(np.mean(l_w, 0))
    return CoordCheck(np.asarray(widths), names, np.asarray(acts), np.asarray(upds),
                      np.asarray(losses))


def plot_coord_check(result: CoordCheck, quantity: str = "update", steps=None, ax=None):
    """Plots a `CoordCheck`: size against width (log-log), a line per layer, a panel per step.

    Needs matplotlib. Returns the figure.

    Example:
      >>> import numpy as np
      >>> res = CoordCheck(np.array([64, 256]), ['0:Dense', '1:Relu'], np.ones((2, 3, 2)),
      ...                  np.ones((2, 3, 2)), np.ones((2, 3)))
      >>> fig = plot_coord_check(res, steps=[1, 2])
      >>> len(fig.axes)
      2
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is a declared extra
        raise ImportError("plot_coord_check needs matplotlib: pip install 'infwidth[plot]'.") from e
    if quantity not in ("update", "activation"):
        raise ValueError(f"plot_coord_check(quantity={quantity!r}): quantity must be 'update' "
                         f"or 'activation'.")
    values = getattr(result, quantity)
    steps = list(range(1, values.shape[1])) if steps is None else list(steps)
    if ax is None:
        fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    for a, t in zip(axes, steps):
        for j, name in enumerate(result.names):
            a.loglog(result.widths, values[:, t, j], "o-", label=name)
        a.set_title(f"step {t}")
        a.set_xlabel("width")
    axes[0].set_ylabel("RMS of " + ("change since init" if quantity == "update" else "output"))
    axes[-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig
