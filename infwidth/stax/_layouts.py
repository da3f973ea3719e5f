"""Layers on inputs whose batch and channel axes are anywhere (neural-tangents' ``batch_axis``,
``channel_axis`` and convolution ``dimension_numbers``), built from the channel-last layer.

A kernel does not depend on where the channel axis of the inputs is: its arrays are always
``(N1, N2, *spatial)`` with the spatial axes in the order they have in the inputs, and the
`Kernel` records ``batch_axis``, ``channel_axis`` and the shapes. So a layer written for
``(N, *spatial, C)`` inputs serves any layout: its finite network runs on the inputs moved to
that layout (and its outputs are moved back), and its kernel map runs on the same arrays with
the shapes re-read. ``spatial_order`` reorders the spatial axes of the output (a convolution
whose output spec lists them in another order than its input spec).

Example:
  >>> import jax.numpy as jnp
  >>> from infwidth import stax
  >>> x = jnp.arange(24.).reshape(2, 3, 4) / 10   # (N, C, W): channels first
  >>> first = stax.AvgPool((2,), batch_axis=0, channel_axis=1).kernel_fn(x, get='nngp')
  >>> last = stax.AvgPool((2,)).kernel_fn(jnp.moveaxis(x, 1, -1), get='nngp')
  >>> bool(jnp.allclose(first, last))
  True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from ..kernel import Kernel

__all__ = ["check_layout", "to_channels_last", "from_channels_last", "reorder_spatial",
           "kernel_to_channels_last", "kernel_from_channels_last", "axis_index"]


def axis_index(axis: int, ndim: int, arg: str, layer: str) -> int:
    """``axis`` as a non-negative index of ``ndim`` axes, or a clear error."""
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ValueError(f"{layer}({arg}={axis!r}): must be an int axis of the {ndim}-axis "
                         f"inputs (between {-ndim} and {ndim - 1}).")
    return axis % ndim


def check_layout(batch_axis, channel_axis, layer: str) -> tuple[int, int]:
    """The ``batch_axis``/``channel_axis`` arguments of a layer: ints that differ (checked when
    the layer is built; their range is checked against each input's rank)."""
    for arg, v in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{layer}({arg}={v!r}): expected an int axis of the inputs.")
    if batch_axis == channel_axis:
        raise ValueError(f"{layer}(batch_axis={batch_axis}, channel_axis={channel_axis}): the "
                         f"batch and channel axes must differ.")
    return int(batch_axis), int(channel_axis)


def _axes(ndim: int, batch_axis: int, channel_axis: int, layer: str) -> tuple[int, int]:
    b = axis_index(batch_axis, ndim, "batch_axis", layer)
    c = axis_index(channel_axis, ndim, "channel_axis", layer)
    if b == c:
        raise ValueError(f"{layer}(batch_axis={batch_axis}, channel_axis={channel_axis}): the "
                         f"batch and channel axes must differ.")
    return b, c


def to_channels_last(shape: Sequence[int], batch_axis: int, channel_axis: int,
                     layer: str) -> tuple:
    """``shape`` with the batch axis moved first and the channel axis last."""
    b, c = _axes(len(shape), batch_axis, channel_axis, layer)
    rest = [s for i, s in enumerate(shape) if i not in (b, c)]
    return (shape[b], *rest, shape[c])


def from_channels_last(shape: Sequence[int], batch_axis: int, channel_axis: int,
                       spatial_order: Sequence[int] | None = None, layer: str = "") -> tuple:
    """The inverse of `to_channels_last` (after reordering the spatial axes)."""
    ndim = len(shape)
    b, c = _axes(ndim, batch_axis, channel_axis, layer)
    spatial = list(shape[1:-1])
    if spatial_order is not None:
        spatial = [spatial[i] for i in spatial_order]
    out, it = [], iter(spatial)
    for i in range(ndim):
        out.append(shape[0] if i == b else shape[-1] if i == c else next(it))
    return tuple(out)


def array_to_channels_last(x, batch_axis: int, channel_axis: int, layer: str):
    b, c = _axes(x.ndim, batch_axis, channel_axis, layer)
    return jnp.moveaxis(x, (b, c), (0, x.ndim - 1))


def array_from_channels_last(y, batch_axis: int, channel_axis: int,
                             spatial_order: Sequence[int] | None = None, layer: str = ""):
    b, c = _axes(y.ndim, batch_axis, channel_axis, layer)
    if spatial_order is not None and list(spatial_order) != sorted(spatial_order):
        y = jnp.transpose(y, (0, *(1 + i for i in spatial_order), y.ndim - 1))
    return jnp.moveaxis(y, (0, y.ndim - 1), (b, c))


def reorder_spatial(k: Kernel, spatial_order: Sequence[int] | None) -> Kernel:
    """The kernel with its spatial axes in ``spatial_order`` (arrays and shapes)."""
    if spatial_order is None or list(spatial_order) == sorted(spatial_order):
        return k
    n = len(spatial_order)
    per = 1 if k.diagonal_spatial else 2

    def move(a):
        if a is None or getattr(a, "ndim", 0) < n * per:
            return a
        lead = a.ndim - n * per
        order = list(range(lead)) + [lead + i * per + j for i in spatial_order
                                     for j in range(per)]
        return jnp.transpose(a, order)

    def shape(s):
        sp = [s[1 + i] for i in spatial_order]
        return (s[0], *sp, s[-1])

    return k.replace(nngp=move(k.nngp), ntk=move(k.ntk), cov1=move(k.cov1), cov2=move(k.cov2),
                     shape1=shape(k.shape1), shape2=shape(k.shape2))


def _move_mask(mask, ndim, batch_axis, channel_axis, layer, to_last=True, spatial_order=None):
    """A mask (masking: the activations' shape, size-1 axes where reduced) moved like them."""
    if mask is None:
        return None
    mask = jnp.reshape(mask, (1,) * (ndim - mask.ndim) + mask.shape) if mask.ndim < ndim \
        else mask
    if to_last:
        return array_to_channels_last(mask, batch_axis, channel_axis, layer)
    return array_from_channels_last(mask, batch_axis, channel_axis, spatial_order, layer)


def kernel_to_channels_last(k: Kernel, layer: str) -> Kernel:
    """The same arrays, read as the kernel of channel-last inputs (masks moved too)."""
    ndim = len(k.shape1)
    b, c = k.batch_axis % ndim, k.channel_axis % ndim
    if (b, c) == (0, ndim - 1):
        return k
    return k.replace(shape1=to_channels_last(k.shape1, b, c, layer),
                     shape2=to_channels_last(k.shape2, b, c, layer), batch_axis=0,
                     channel_axis=ndim - 1, mask1=_move_mask(k.mask1, ndim, b, c, layer),
                     mask2=_move_mask(k.mask2, ndim, b, c, layer))


def kernel_from_channels_last(k: Kernel, batch_axis: int, channel_axis: int,
                              spatial_order: Sequence[int] | None = None,
                              layer: str = "") -> Kernel:
    """A channel-last layer's output kernel in the layout ``(batch_axis, channel_axis)``."""
    ndim = len(k.shape1)
    b, c = _axes(ndim, batch_axis, channel_axis, layer)
    if (b, c) == (0, ndim - 1) and spatial_order is None:
        return k
    masks = {f: _move_mask(getattr(k, f), ndim, b, c, layer, False, spatial_order)
             for f in ("mask1", "mask2")}
    k = reorder_spatial(k, spatial_order)
    return k.replace(shape1=from_channels_last(k.shape1, b, c, layer=layer),
                     shape2=from_channels_last(k.shape2, b, c, layer=layer), batch_axis=b,
                     channel_axis=c, **masks)


def relaid_kernel_map(kernel_map: Callable, batch_axis: int, channel_axis: int, layer: str,
                      out_axes=None,
                      spatial_order: Sequence[int] | None = None) -> Callable:
    """``kernel_map`` (written for channel-last kernels) on kernels of any layout; the output
    has the layout ``out_axes`` (default: the input's; a function of the input rank if the
    layer changes the rank)."""
    def relaid(k, **kwargs):
        ndim = len(k.shape1)
        axes = (k.batch_axis % ndim, k.channel_axis % ndim)
        expected = _axes(ndim, batch_axis, channel_axis, layer)
        if axes != expected:
            raise ValueError(
                f"{layer}(batch_axis={batch_axis}, channel_axis={channel_axis}): its input has "
                f"batch_axis={axes[0]} and channel_axis={axes[1]} (shape {tuple(k.shape1)}); "
                f"give the layer the axes of its inputs.")
        out = kernel_map(kernel_to_channels_last(k, layer), **kwargs)
        if out_axes is None:
            ob, oc = expected
        else:
            ob, oc = out_axes(ndim) if callable(out_axes) else out_axes
        return kernel_from_channels_last(out, ob, oc, spatial_order, layer)

    return relaid


def relaid_layer(init_fn: Callable, apply_fn: Callable, kernel_map: Callable,
                 shape_fn: Callable, batch_axis: int, channel_axis: int, layer: str,
                 out_axes: tuple[int, int] | None = None,
                 spatial_order: Sequence[int] | None = None):
    """``(init_fn, apply_fn, kernel_map)`` of a channel-last layer (``shape_fn`` its output
    shape) for inputs with the given axes; pass them to `make_layer` with ``shape_fn=None``,
    ``input_axes=(batch_axis, channel_axis)`` and ``any_axes=True``."""
    def out(ndim):  # ``out_axes`` may depend on the rank of the inputs
        if out_axes is None:
            return batch_axis, channel_axis
        return out_axes(ndim) if callable(out_axes) else out_axes

    def init(key, input_shape):
        out_shape, params = init_fn(key, to_channels_last(input_shape, batch_axis, channel_axis,
                                                          layer))
        return from_channels_last(out_shape, *out(len(input_shape)), spatial_order,
                                  layer), params

    def apply(params, x, **kwargs):
        from ._masking import MaskedArray

        if isinstance(x, MaskedArray):  # masked inputs: the mask moves with the activations
            value, ndim = x.masked_value, x.masked_value.ndim
            moved = MaskedArray(array_to_channels_last(value, batch_axis, channel_axis, layer),
                                _move_mask(x.mask, ndim, batch_axis, channel_axis, layer))
            y = apply_fn(params, moved, **kwargs)
            if not isinstance(y, MaskedArray):
                return array_from_channels_last(y, *out(ndim), spatial_order, layer)
            return MaskedArray(
                array_from_channels_last(y.masked_value, *out(ndim), spatial_order, layer),
                _move_mask(y.mask, y.masked_value.ndim, *out(ndim), layer, False,
                           spatial_order))
        y = apply_fn(params, array_to_channels_last(x, batch_axis, channel_axis, layer),
                     **kwargs)
        return array_from_channels_last(y, *out(x.ndim), spatial_order, layer)

    def with_shapes(k, **kwargs):
        out = kernel_map(k, **kwargs)
        return out.replace(shape1=shape_fn(out.shape1), shape2=shape_fn(out.shape2))

    return init, apply, relaid_kernel_map(with_shapes, batch_axis, channel_axis, layer, out,
                                          spatial_order)


def relaid(name: str, canonical, batch_axis: int, channel_axis: int, out_axes=None,
           spatial_order: Sequence[int] | None = None, mixes_batch: bool = False):
    """The layer ``canonical`` (a channel-last `Layer`, or a function of the input rank
    returning one) on inputs whose batch and channel axes are ``batch_axis`` and
    ``channel_axis``; its outputs have the axes ``out_axes`` (default: the same; a function of
    the input rank for layers that change the rank) and their spatial axes in
    ``spatial_order``. The channel-last layer does the work, masks included, on moved inputs.
    ``mixes_batch``: see `LayerInfo` (a function of the rank has no info to inherit)."""
    from ._layer import make_layer

    layer_of = canonical if callable(canonical) and not hasattr(canonical, "kernel_fn") \
        else (lambda ndim: canonical)
    init_fn, apply_fn, kernel_map = relaid_layer(
        lambda key, shape: layer_of(len(shape)).init_fn(key, shape),
        lambda params, x, **kw: layer_of(
            (x.masked_value if hasattr(x, "masked_value") else x).ndim).apply_fn(params, x,
                                                                                 **kw),
        lambda k, **kw: layer_of(len(k.shape1)).kernel_fn(k, **kw), lambda shape: shape,
        batch_axis, channel_axis, name, out_axes, spatial_order)
    example = canonical if hasattr(canonical, "kernel_fn") else None
    return make_layer(name, init_fn, apply_fn, kernel_map, None,
                      input_axes=(batch_axis, channel_axis), any_axes=True, sets_axes=True,
                      children=(example.kernel_fn,) if example is not None else (),
                      passes_masks=True, family=name, mixes_batch=mixes_batch)


def is_default_layout(batch_axis, channel_axis, out_axes=None, spatial_order=None) -> bool:
    """Batch first and channels last (as ints that are not negative apart from -1), with the
    output in the same layout."""
    def default(b, c):
        return b == 0 and c == -1

    return (default(batch_axis, channel_axis) and (out_axes is None or default(*out_axes))
            and (spatial_order is None or list(spatial_order) == sorted(spatial_order)))
