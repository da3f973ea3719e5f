"""Constant multipliers, one implementation under two names: `Scale` (any constant, e.g. a
residual branch multiplier) and `OutputScale` (a positive output multiplier alpha, the knob
between lazy and rich training). Both multiply outputs by the constant and every kernel by its
square."""

from __future__ import annotations

import jax

from ._layer import Layer, check_kernel_input, make_layer


def OutputScale(alpha: float) -> Layer:
    """Multiplies its input by a fixed (not trained) ``alpha``: ``f_alpha = alpha * f``.

    Put it after the readout. The NNGP and the NTK of ``alpha * f`` are ``alpha**2`` times those
    of ``f`` (every covariance in the `Kernel` scales by ``alpha**2``). Trained by gradient
    descent with learning rate ``eta / alpha**2``, a network with large ``alpha`` stays close to
    its linearization (lazy / kernel regime) and one with small ``alpha`` has to move its
    features (rich regime): Chizat, Oyallon & Bach 2019, "On lazy training in differentiable
    programming", arXiv:1812.07956; Geiger et al. 2020, arXiv:1906.08034. With 'ntk' layers and
    ``alpha = 1 / sqrt(width)`` this is the mean-field / muP scaling (Yang & Hu 2021,
    arXiv:2011.14522). `infwidth.analysis` measures the distance from the linearization.

    Args:
      alpha: the multiplier, a positive number.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> net = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(1))
      >>> scaled = stax.serial(net, stax.OutputScale(3.0))
      >>> x = jnp.array([[1., 0.], [0.5, 2.]])
      >>> ratio = scaled.kernel_fn(x, get='ntk') / net.kernel_fn(x, get='ntk')
      >>> ratio.round(4).tolist()
      [[9.0, 9.0], [9.0, 9.0]]
    """
    name = f"OutputScale({alpha!r})"
    if not isinstance(alpha, jax.core.Tracer):
        try:
            ok = float(alpha) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"OutputScale(alpha={alpha!r}): alpha must be a positive number; alpha > 1 "
                f"moves towards lazy (kernel) training, alpha < 1 towards rich training.")
    return _multiplier(alpha, name, name)


def Scale(c: float) -> Layer:
    """Multiplies its input by a constant ``c``: every covariance and the NTK scale by ``c**2``.

    Not in neural-tangents; useful for branch multipliers such as the ``1/sqrt(depth)`` residual
    scaling of the depth-wise limit (Hayou et al. 2021, arXiv:2105.01591; Li et al. 2021,
    arXiv:2106.04013). `OutputScale` is the same layer, restricted to positive constants.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(4), stax.Scale(0.5))
      >>> k = kernel_fn(jnp.array([[2., 0.]]), get=('nngp', 'ntk'))
      >>> k.nngp.tolist(), k.ntk.tolist()
      ([[0.5]], [[0.5]])
    """
    name = f"Scale({c!r})"
    try:
        float(c)
    except TypeError:
        if not hasattr(c, "dtype"):
            raise TypeError(f"{name}: c must be a number.") from None
    return _multiplier(c, "Scale", name)


def _multiplier(c, layer_name: str, where: str) -> Layer:
    """The layer ``x -> c * x``; kernels (every covariance and the NTK) times ``c**2``."""

    def init_fn(key, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, x, **kwargs):
        return c * x

    def kernel_map(k, **kwargs):
        if isinstance(k, (list, tuple)):
            raise ValueError(f"{where}: got {len(k)} inputs; wrap it in parallel(...) to scale "
                             f"one branch.")
        return check_kernel_input(k, where).scale(c)

    return make_layer(layer_name, init_fn, apply_fn, kernel_map, shape_fn=None, any_axes=True)
