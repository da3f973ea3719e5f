"""A fixed linear map over positions: `ImageResize` (``jax.image.resize``), with
neural-tangents' arguments (`DotGeneral`, the general constant factor, is in `dot_general`).

It acts on each input ``x`` of shape ``(N, *spatial, C)`` by the same linear map ``T`` of its
positions, channel by channel, without parameters. The outputs stay jointly Gaussian, with
covariance ``T K T^T``: ``T`` is applied to the first and to the second position of every
position pair of the NNGP, the NTK and ``cov1``/``cov2`` (Novak et al. 2019, arXiv:1810.05148,
where pooling and strided readouts are such maps). The map is applied with the finite layer's
own function, so the kernel uses exactly the arithmetic of ``apply_fn``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from . import _masking
from ._layer import Layer, check_kernel_input, make_layer
from ._spatial import n_lead, no_diagonal_spatial


def _map_pairs(cov, lead: int, n_spatial: int, fn):
    """``T cov T^T`` for ``cov`` laid out ``(lead..., S1, S1', S2, S2', ...)``; ``fn`` maps an
    array ``(B, S1, S2, ..., C)`` to ``(B, S1o, S2o, ..., C)``."""
    lead_shape = cov.shape[:lead]
    sp = cov.shape[lead:]
    left, right = sp[0::2], sp[1::2]
    # (lead, L..., R...) -> (prod lead, L..., prod R): map the first positions
    perm = (tuple(range(lead)) + tuple(lead + 2 * i for i in range(n_spatial))
            + tuple(lead + 2 * i + 1 for i in range(n_spatial)))
    c = jnp.transpose(cov, perm).reshape((math.prod(lead_shape),) + left + (math.prod(right),))
    c = fn(c)
    left_out = c.shape[1:-1]  # the map may drop (contract) spatial axes
    n_out = len(left_out)
    # -> (prod lead, R..., prod Lo): map the second positions
    c = c.reshape((math.prod(lead_shape),) + left_out + right)
    c = jnp.moveaxis(c, tuple(range(1, 1 + n_out)), tuple(range(c.ndim - n_out, c.ndim)))
    c = c.reshape((math.prod(lead_shape),) + right + (math.prod(left_out),))
    c = fn(c)
    right_out = c.shape[1:-1]
    c = c.reshape(lead_shape + right_out + left_out)
    # (lead, Ro..., Lo...) -> (lead, Lo1, Ro1, Lo2, Ro2, ...)
    perm = tuple(range(lead))
    for i in range(n_out):
        perm += (lead + n_out + i, lead + i)
    return jnp.transpose(c, perm)


def _linear_position_layer(name: str, fn, shape_fn) -> Layer:
    """A parameter-free layer applying ``fn`` (positions only) to inputs and covariances."""

    def init_fn(key, input_shape):
        return shape_fn(tuple(input_shape)), ()

    def apply_fn(params, x, **kwargs):
        return fn(x)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        no_diagonal_spatial(k, name)
        n = k.n_spatial

        def one(c):
            return None if c is None else _map_pairs(c, n_lead(c, k, n), n, fn)

        return k.replace(nngp=one(k.nngp), ntk=one(k.ntk), cov1=one(k.cov1), cov2=one(k.cov2),
                         shape1=shape_fn(k.shape1), shape2=shape_fn(k.shape2))

    def mask_fn(mask, input_shape):  # an output is present if a present input reaches it
        present = ~_masking.reduce_channels(-1)(mask, input_shape)
        return fn(present.astype(jnp.result_type(float))) == 0

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None, mask_fn=mask_fn)


def ImageResize(shape, method, antialias: bool = True, precision=lax.Precision.HIGHEST,
                batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Resizes the spatial axes with ``jax.image.resize``, as neural-tangents'
    `stax.ImageResize`.

    ``shape`` is the full output shape, ``-1`` keeping an axis unchanged; the batch and channel
    entries must be ``-1``. Every method of ``jax.image.resize`` (``'nearest'``, ``'linear'``,
    ``'cubic'``, ``'lanczos3'``, ``'lanczos5'``) is a linear map of the positions, so the kernel
    is ``T K T^T`` for all of them (neural-tangents computes the kernel only for 'nearest' and
    'linear'). The kernel needs ``diagonal_spatial=False``.

    Args:
      shape: output shape, e.g. ``(-1, 16, 16, -1)`` for NHWC images.
      method: a ``jax.image.ResizeMethod`` or its name.
      antialias: antialiasing when downsampling (as ``jax.image.resize``).
      precision: passed to ``jax.image.resize``.
      batch_axis, channel_axis: only the default layout (batch first, channels last).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> up = stax.ImageResize((-1, 4, -1), 'nearest')
      >>> up.apply_fn((), jnp.array([[[1.], [2.]]]))[0, :, 0].tolist()
      [1.0, 1.0, 2.0, 2.0]
      >>> up.kernel_fn(jnp.array([[[1.], [2.]]]), get='nngp')[0, 0].tolist()[0]
      [1.0, 1.0, 2.0, 2.0]
    """
    name = "ImageResize"
    if batch_axis != 0 or channel_axis not in (-1,):
        raise ValueError(f"{name}(batch_axis={batch_axis}, channel_axis={channel_axis}): "
                         f"infwidth keeps the batch first and channels last; move the axes of "
                         f"your inputs with jnp.moveaxis.")
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name}(shape={shape!r}): shape must be a sequence of integers, one "
                         f"per input axis (-1 keeps an axis).") from None
    if len(shape) < 2 or shape[0] != -1 or shape[-1] != -1:
        raise ValueError(f"{name}(shape={shape!r}): the batch (first) and channel (last) "
                         f"entries must be -1; only the spatial axes are resized.")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{name}(shape={shape!r}): entries must be positive sizes or -1.")
    method_name = method if isinstance(method, str) else getattr(method, "name", method)
    try:
        jax.image.ResizeMethod.from_string(str(method_name).lower())
    except ValueError as e:
        raise ValueError(f"{name}(method={method!r}): {e}") from None

    def shape_fn(in_shape):
        if len(in_shape) != len(shape):
            raise ValueError(f"{name}(shape={shape}): inputs have shape {tuple(in_shape)}; "
                             f"give one entry per input axis.")
        return tuple(i if s == -1 else s for i, s in zip(in_shape, shape))

    def fn(x):
        out = (x.shape[0],) + shape_fn((1,) + x.shape[1:-1] + (1,))[1:-1] + (x.shape[-1],)
        return jax.image.resize(x, out, method=method, antialias=antialias, precision=precision)

    return _linear_position_layer(name, fn, shape_fn)
