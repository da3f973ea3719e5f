"""Pooling: `AvgPool`, `SumPool`, `GlobalAvgPool`, `GlobalSumPool`, and their kernel maps.

Pooling is a fixed linear map of the positions, ``y_p = sum_q A[p, q] x_q``, so the covariance
of the outputs is ``A K A^T`` on every spatial axis pair (Novak et al. 2019, arXiv:1810.05148;
Arora et al. 2019, arXiv:1904.11955 for global average pooling). For window pooling ``A`` is a
banded 0/1 matrix and ``A K A^T`` is computed as window sums along each member of the pair, a
few shifted slices per axis. Pooling mixes positions, so it needs the covariances between them:
``kernel_fn(..., diagonal_spatial=True)`` raises for networks that pool.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _masking
from ._layer import Layer, check_kernel_input, check_shape, make_layer
from ._layouts import check_layout, is_default_layout, relaid
from ._spatial import (
    check_fits,
    check_input_rank,
    check_strides,
    check_window,
    map_covariances,
    no_diagonal_spatial,
    out_size,
    resolve_padding,
    same_pads,
    shift_sum,
)


def _make_pool_layer(name, init_fn, apply_fn, kernel_map, shape_fn, batch_axis, channel_axis,
                     out_axes=None, **kwargs) -> Layer:
    """`make_layer` for a channel-last pooling layer, on inputs of any layout (`_layouts`)."""
    canonical = make_layer(name, init_fn, apply_fn, kernel_map, shape_fn, **kwargs)
    if is_default_layout(batch_axis, channel_axis):
        return canonical
    return relaid(name, canonical, batch_axis, channel_axis, out_axes)


def _window_counts(size, window, stride, padding):
    """How many real (not padded) inputs each output window covers."""
    lo, _ = same_pads(size, window, stride) if padding == "SAME" else (0, 0)
    n_out = out_size(size, window, stride, padding)
    starts = np.arange(n_out) * stride - lo
    return np.minimum(starts + window, size) - np.maximum(starts, 0)


def _pool_axis(x, axis, pads, w, st, n_out, norm, circular):
    x = shift_sum(x, (axis,), w, st, n_out, pads, circular)
    norm = np.asarray(norm)
    if np.all(norm == 1.0):
        return x
    if np.all(norm == norm[0]):
        return x * norm[0]
    shape = [1] * x.ndim
    shape[axis] = n_out
    return x * jnp.asarray(norm.reshape(shape), x.dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _pool(x, lead: int, info, circular: bool, pairs: bool):
    """Window pooling of every spatial axis (of both members of each pair if ``pairs``),
    compiled as one program per geometry."""
    for i, ax in enumerate(info):
        for axis in ((lead + 2 * i, lead + 2 * i + 1) if pairs else (lead + i,)):
            x = _pool_axis(x, axis, *ax, circular)
    return x


def _Pool(name, window_shape, strides, padding, normalize_edges, average, batch_axis,
          channel_axis) -> Layer:
    no_axes = isinstance(window_shape, (tuple, list)) and len(window_shape) == 0
    # window_shape=(): pooling over no spatial axes, on inputs (N, C): the identity, as in
    # neural-tangents
    window_shape = () if no_axes else check_window(window_shape, "window_shape", name)
    n = len(window_shape)
    strides = () if no_axes and strides in (None, (), []) else check_strides(strides, n, name)
    padding = resolve_padding(padding, name)
    if not isinstance(normalize_edges, (bool, np.bool_)):
        raise ValueError(f"{name}(normalize_edges={normalize_edges!r}): must be True or False.")
    batch_axis, channel_axis = check_layout(batch_axis, channel_axis, name)

    def check_input(shape):
        check_shape(shape, name)
        check_input_rank(shape, n, name, "window_shape")
        check_fits(shape[1:-1], window_shape, padding, name, "window_shape")

    def axes_info(spatial):
        info = []
        for size, w, st in zip(spatial, window_shape, strides):
            pads = (0, 0) if padding == "VALID" else same_pads(size, w, st)
            n_out = out_size(size, w, st, padding)
            if not average:
                norm = np.ones(n_out)
            elif padding == "SAME" and normalize_edges:
                norm = 1.0 / _window_counts(size, w, st, padding)
            else:
                norm = np.full(n_out, 1.0 / w)
            info.append((pads, w, st, n_out, tuple(float(v) for v in norm)))
        return tuple(info)

    def shape_fn(input_shape):
        spatial = tuple(out_size(sz, w, st, padding)
                        for sz, w, st in zip(input_shape[1:-1], window_shape, strides))
        return (input_shape[0],) + spatial + (input_shape[-1],)

    def init_fn(key, input_shape):
        check_input(input_shape)
        return shape_fn(input_shape), ()

    def apply_fn(params, x, **kwargs):
        check_input(x.shape)
        if no_axes:
            return x
        return _pool(x, 1, axes_info(x.shape[1:-1]), padding == "CIRCULAR", False)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        check_input(k.shape1)
        if no_axes:
            return k
        no_diagonal_spatial(k, name)
        info = axes_info(k.shape1[1:-1])

        def pool(cov, lead):
            return _pool(cov, lead, info, padding == "CIRCULAR", True)

        return k.replace(**map_covariances(k, pool))

    # a parameterless map, linear in each channel: its kernel map is apply_fn on features
    return _make_pool_layer(name, init_fn, apply_fn, kernel_map, shape_fn, batch_axis,
                            channel_axis, family="linear", hparams={"apply_fn": apply_fn},
                            mask_fn=None if no_axes else _masking.sweep(window_shape, strides,
                                                                        padding))


def AvgPool(window_shape, strides=None, padding: str = "VALID", normalize_edges: bool = False,
            batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Average pooling over windows, as neural-tangents' `stax.AvgPool`.

    Args:
      window_shape: the window's spatial shape, one entry per spatial dimension (``()`` on
        inputs ``(N, C)``: the identity, as in neural-tangents).
      strides: the strides; ``None`` means 1 (as in neural-tangents, not the window shape).
      padding: ``'VALID'``, ``'SAME'`` (zeros) or ``'CIRCULAR'`` (periodic boundaries).
      normalize_edges: with 'SAME' padding, divide by the number of real inputs in each window
        instead of the window size (as ``jax.example_libraries.stax.AvgPool``).
      batch_axis, channel_axis: the inputs' batch and channel axes (any layout).

    The kernel map is ``A K A^T`` per axis pair (arXiv:1810.05148); it needs the covariances
    between positions, so ``kernel_fn(..., diagonal_spatial=True)`` raises.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.AvgPool((2, 2), strides=(2, 2))
      >>> x = jnp.arange(16.).reshape(1, 4, 4, 1)
      >>> apply_fn((), x)[0, :, :, 0].tolist()
      [[2.5, 4.5], [10.5, 12.5]]
      >>> kernel_fn(x, get='nngp').shape
      (1, 1, 2, 2, 2, 2)
    """
    return _Pool("AvgPool", window_shape, strides, padding, normalize_edges, True, batch_axis,
                 channel_axis)


def SumPool(window_shape, strides=None, padding: str = "VALID", batch_axis: int = 0,
            channel_axis: int = -1) -> Layer:
    """Sum pooling over windows, as neural-tangents' `stax.SumPool`: `AvgPool` without the
    division by the window size (arXiv:1810.05148).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.SumPool((2,), padding='SAME')
      >>> apply_fn((), jnp.array([[[1.], [2.], [3.]]]))[0, :, 0].tolist()
      [3.0, 5.0, 3.0]
      >>> kernel_fn(jnp.ones((1, 3, 1)), get='nngp')[0, 0].tolist()
      [[4.0, 4.0, 2.0], [4.0, 4.0, 2.0], [2.0, 2.0, 1.0]]
    """
    return _Pool("SumPool", window_shape, strides, padding, False, False, batch_axis,
                 channel_axis)


def _GlobalPool(name, average, batch_axis, channel_axis) -> Layer:
    batch_axis, channel_axis = check_layout(batch_axis, channel_axis, name)

    def out_axes(ndim):  # the batch and channel axes keep their order, as in neural-tangents
        b, c = batch_axis % ndim, channel_axis % ndim
        return (0, 1) if b < c else (1, 0)

    def check_input(shape):  # (N, C) inputs have no positions to pool: the identity
        check_shape(shape, name)

    def shape_fn(input_shape):
        return (input_shape[0], input_shape[-1])

    def init_fn(key, input_shape):
        check_input(input_shape)
        return shape_fn(input_shape), ()

    def apply_fn(params, x, mask=None, **kwargs):
        check_input(x.shape)
        axes = tuple(range(1, x.ndim - 1))
        if average and mask is not None and axes:  # the mean over the present positions
            return _masking.masked_mean(x, _masking.reduce_channels(-1)(mask, x.shape), axes)
        return jnp.mean(x, axes) if average else jnp.sum(x, axes)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        check_input(k.shape1)
        if len(k.shape1) == 2:
            return k
        no_diagonal_spatial(k, name)

        def pool(cov, lead, absent=None):
            axes = tuple(range(lead, cov.ndim))
            if average and absent is not None:  # the mean over pairs of present positions
                return _masking.masked_mean(cov, absent, axes)
            return jnp.mean(cov, axes) if average else jnp.sum(cov, axes)

        if _masking.has_masks(k):
            m11, m12, m22 = _masking.kernel_pair_masks(k)
            lead = 1 if k.diagonal_batch else 2
            return k.replace(
                diagonal_spatial=False, nngp=pool(k.nngp, 2, m12),
                ntk=None if k.ntk is None else pool(k.ntk, 2, m12), cov1=pool(k.cov1, lead, m11),
                cov2=None if k.cov2 is None else pool(k.cov2, lead, m22))
        return k.replace(diagonal_spatial=False, **map_covariances(k, pool))

    # a parameterless map, linear in each channel: its kernel map is apply_fn on features
    return _make_pool_layer(name, init_fn, apply_fn, kernel_map, shape_fn, batch_axis,
                            channel_axis, out_axes, family="linear",
                            hparams={"apply_fn": apply_fn}, mask_fn=_masking.global_pool,
                            uses_mask=True)


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Average over all positions (removing the spatial axes), as neural-tangents'
    `stax.GlobalAvgPool`; on inputs ``(N, C)`` without positions it is the identity.

    The kernel is the mean of the covariance over all position pairs (Arora et al. 2019,
    arXiv:1904.11955; Novak et al. 2019, arXiv:1810.05148). With 'CIRCULAR' convolutions before
    it, the kernel is invariant to shifting both inputs by the same amount.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.GlobalAvgPool()
      >>> x = jnp.array([[[1.], [3.]]])  # one input, two positions, one channel
      >>> apply_fn((), x).tolist(), kernel_fn(x, get='nngp').tolist()
      ([[2.0]], [[4.0]])
    """
    return _GlobalPool("GlobalAvgPool", True, batch_axis, channel_axis)


def GlobalSumPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Sum over all positions (removing the spatial axes), as neural-tangents'
    `stax.GlobalSumPool`; its kernel is the sum of the covariance over all position pairs
    (arXiv:1810.05148).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.GlobalSumPool()
      >>> x = jnp.array([[[1.], [3.]]])
      >>> apply_fn((), x).tolist(), kernel_fn(x, get='nngp').tolist()
      ([[4.0]], [[16.0]])
    """
    return _GlobalPool("GlobalSumPool", False, batch_axis, channel_axis)
