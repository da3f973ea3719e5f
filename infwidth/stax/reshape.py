"""`Flatten`: from ``(N, *spatial, C)`` activations to ``(N, features)``."""

from __future__ import annotations

import math

import jax.numpy as jnp

from . import _masking
from ._layer import Layer, check_kernel_input, check_shape, make_layer


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
      batch_axis, batch_axis_out: only 0 (batch first) is supported.

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
    if batch_axis != 0 or batch_axis_out not in (0, -2):
        raise ValueError(f"{name}(batch_axis={batch_axis}, batch_axis_out={batch_axis_out}): "
                         f"infwidth keeps the batch first; move it with jnp.moveaxis.")

    def shape_fn(input_shape):
        return (input_shape[0], math.prod(input_shape[1:]))

    def init_fn(key, input_shape):
        check_shape(input_shape, name, min_ndim=1)
        return shape_fn(input_shape), ()

    def apply_fn(params, x, **kwargs):
        return x.reshape(shape_fn(x.shape))

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        n = k.n_spatial
        if n == 0:
            return k

        def flat(cov):
            if cov is None:
                return None
            lead = cov.ndim - (n if k.diagonal_spatial else 2 * n)
            return _position_mean(cov, lead, k.diagonal_spatial)

        return k.replace(nngp=flat(k.nngp), ntk=flat(k.ntk), cov1=flat(k.cov1),
                         cov2=flat(k.cov2), is_gaussian=False, diagonal_spatial=False)

    # parameterless and linear: its kernel map is apply_fn on features (infwidth.features)
    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn, family="linear",
                      hparams={"apply_fn": apply_fn}, mask_fn=_masking.flatten)
