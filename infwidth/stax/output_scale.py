"""`OutputScale`: a fixed output multiplier alpha, the knob between lazy and rich training."""

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

    def init_fn(key, input_shape):
        return input_shape, ()

    def apply_fn(params, x, **kwargs):
        return alpha * x

    def transform(k, **kwargs):
        if isinstance(k, (list, tuple)):
            return [kk.scale(alpha) for kk in k]
        return check_kernel_input(k, name).scale(alpha)

    return make_layer(name, init_fn, apply_fn, transform, shape_fn=None)
