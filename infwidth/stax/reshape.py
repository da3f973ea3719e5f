"""`Flatten`: from ``(N, *spatial, C)`` activations to ``(N, features)``."""

from __future__ import annotations

import math

import jax.numpy as jnp

from ._layer import Layer, check_kernel_input, check_shape, make_layer
from ._layouts import axis_index


def _position_mean(cov, lead: int, diagonal_spatial: bool):
    """Mean over positions of the covariance at equal positions."""
    if diagonal_spatial:
        return jnp.mean(cov, axis=tuple(range(lead, cov.ndim)))
    while cov.ndim > lead:
        cov = jnp.trace(cov, axis1=-2, axis2=-1) / cov.shape[-1]
    return cov


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0) -> Layer:
    """Flattens every axis but the batch, as neural-tangents' `stax.Flatten`.

    The features of the flattened vector are (position, channel) pairs; a layer after it
    averages over them, so the kernel is the mean over positions of the covariance at equal
    positions (Novak et al. 2019, arXiv:1810.05148). It only needs per-position covariances,
    which is why networks of convolutions and nonlinearities that end in Flatten can be
    evaluated with ``kernel_fn(..., diagonal_spatial=True)``, at a fraction of the cost.

    Args:
      batch_axis: the inputs' batch axis; every other axis is flattened (in order).
      batch_axis_out: 0 for ``(N, features)`` outputs, 1 for ``(features, N)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.Flatten()
      >>> x = jnp.arange(8.).reshape(1, 2, 2, 2)
      >>> apply_fn((), x).shape
      (1, 8)
      >>> float(kernel_fn(x, get='nngp')[0, 0]), float((x**2).mean())
      (17.5, 17.5)
    """
    name = "Flatten"
    for arg, v in (("batch_axis", batch_axis), ("batch_axis_out", batch_axis_out)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name}({arg}={v!r}): expected an int axis.")
    if batch_axis_out not in (0, 1, -1, -2):
        raise ValueError(f"{name}(batch_axis_out={batch_axis_out}): the output is (N, features) "
                         f"or (features, N): batch_axis_out must be 0 or 1 (or -2, -1).")
    out_b = batch_axis_out % 2

    def shape_fn(input_shape, b=None):
        ndim = len(input_shape)
        b = axis_index(batch_axis if b is None else b, ndim, "batch_axis", name)
        n = input_shape[b]
        f = math.prod(s for i, s in enumerate(input_shape) if i != b)
        return (n, f) if out_b == 0 else (f, n)

    def init_fn(key, input_shape):
        check_shape(input_shape, name, min_ndim=1)
        return shape_fn(input_shape), ()

    def apply_fn(params, x, **kwargs):
        b = axis_index(batch_axis, x.ndim, "batch_axis", name)
        y = jnp.moveaxis(x, b, 0).reshape(x.shape[b], -1)
        return y if out_b == 0 else y.T

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        n = k.n_spatial
        axes = {"batch_axis": out_b, "channel_axis": 1 - out_b}
        shapes = {"shape1": shape_fn(k.shape1, k.batch_axis),
                  "shape2": shape_fn(k.shape2, k.batch_axis)}
        if n == 0:
            if len(k.shape1) == 2 and (k.batch_axis % 2, k.channel_axis % 2) == (out_b,
                                                                                 1 - out_b):
                return k  # the same object: nothing to flatten
            return k.replace(**axes, **shapes)

        def flat(cov):
            if cov is None:
                return None
            lead = cov.ndim - (n if k.diagonal_spatial else 2 * n)
            return _position_mean(cov, lead, k.diagonal_spatial)

        return k.replace(nngp=flat(k.nngp), ntk=flat(k.ntk), cov1=flat(k.cov1),
                         cov2=flat(k.cov2), is_gaussian=False, diagonal_spatial=False, **axes,
                         **shapes)

    # parameterless and linear: its kernel map is apply_fn on features (infwidth.features);
    # the map is that of the kernel's own layout (the channel axis may be anywhere)
    def mask_fn(mask, input_shape):  # masking: the mask of every (position, channel) feature
        b = axis_index(batch_axis, len(input_shape), "batch_axis", name)
        m = jnp.broadcast_to(mask, tuple(input_shape))
        m = jnp.moveaxis(m, b, 0).reshape(input_shape[b], -1)
        return m if out_b == 0 else m.T

    return make_layer(name, init_fn, apply_fn, kernel_map, None, family="linear",
                      hparams={"apply_fn": apply_fn}, any_axes=True, sets_axes=True,
                      mask_fn=mask_fn)
