"""Masked inputs: the one home of neural-tangents' ``mask_constant`` machinery.

``kernel_fn(x1, x2, get, mask_constant=c)`` and ``apply_fn(params, x, mask_constant=c)`` treat
the input entries equal to ``c`` (``NaN`` entries when ``c`` is NaN) as absent: variable-length
sequences, padded graphs. The masked entries are replaced by zeros, and a boolean mask travels
with the activations (a `MaskedArray` through ``apply_fn``, ``Kernel.mask1``/``mask2`` through
``kernel_fn``), in the activations' layout (a channel axis of size 1 once a layer has reduced
it: a position is absent when all its channels are). Each layer

* maps the mask with its ``mask_fn(mask, input_shape)`` (`make_layer`'s argument; by default
  the mask is unchanged): convolutions and window pooling keep the mask of each window's
  centre, ``Flatten`` flattens it, global pooling keeps an input only if some position is
  left, fan-in sums keep a position present in any branch;
* zeroes the entries of its output's covariances that involve an absent position (the
  finite network zeroes every layer's masked inputs, so both limits agree);
* and, where it mixes positions, ignores the absent ones: `GlobalAvgPool` averages over the
  present positions, `LayerNorm` over present positions, attention never attends to an
  absent key.

The semantics are those of neural-tangents 0.6.5 (Novak et al. 2020, "Neural Tangents",
arXiv:1912.02803; masking as in its ``examples/imdb.py``).

>>> import jax.numpy as jnp
>>> from infwidth import stax
>>> x = jnp.array([[[1.], [2.], [-9.]]])  # one sequence of length 3, its last entry padding
>>> _, _, kernel_fn = stax.GlobalAvgPool()
>>> float(kernel_fn(x, get='nngp', mask_constant=-9.)[0, 0])  # ((1 + 2) / 2) ** 2
2.25
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..kernel import Kernel
from ._layout import expand


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class MaskedArray:
    """An array (or pytree) with a boolean ``mask`` of the same shape; ``True`` marks entries
    that are masked out. neural-tangents' container for variable-length inputs, and what
    ``apply_fn(params, x, mask_constant=c)`` returns.

    >>> import jax.numpy as jnp
    >>> from infwidth.stax import MaskedArray
    >>> MaskedArray(jnp.ones(2), jnp.array([False, True])).mask.tolist()
    [False, True]
    """

    masked_value: Any
    mask: Any


def check_mask_constant(c, caller: str = "kernel_fn"):
    """``c`` if it is ``None`` or a real scalar, else a TypeError naming ``mask_constant``."""
    if c is None:
        return None
    ok = not isinstance(c, (bool, np.bool_)) and (
        isinstance(c, (int, float, np.integer, np.floating))
        or (isinstance(c, (np.ndarray, jax.Array)) and np.ndim(c) == 0
            and (jnp.issubdtype(c.dtype, jnp.floating) or jnp.issubdtype(c.dtype, jnp.integer))))
    if not ok:
        raise TypeError(
            f"{caller}(mask_constant={c!r}): mask_constant must be a real number, the value that "
            f"marks absent input entries (e.g. mask_constant=-1e9 or float('nan')), or None for "
            f"no masking; got {type(c).__name__}.")
    return c


def masked_input(x, mask_constant):
    """``(x with masked entries zeroed, mask)``; ``x`` may be a `MaskedArray` (its mask is
    used); the mask is ``None`` when nothing is masked."""
    if isinstance(x, MaskedArray):
        x, mask = x.masked_value, x.mask
    elif mask_constant is None or not isinstance(x, (np.ndarray, jax.Array)):
        return x, None
    else:
        x = jnp.asarray(x)
        c = mask_constant
        if isinstance(c, (float, np.floating)) and math.isnan(c):
            mask = jnp.isnan(x)
        elif isinstance(c, (int, float, np.integer, np.floating)):
            mask = x == c
        else:  # an array scalar, possibly traced
            mask = jnp.where(jnp.isnan(c), jnp.isnan(x), x == c)
    if mask is None:
        return x, None
    return jnp.where(mask, jnp.zeros((), x.dtype), x), mask


def masked_inputs(x, mask_constant):
    """`masked_input` of one input or of each of a (nested) list of them (multi-input layers,
    nested `parallel`s): the masks mirror the structure."""
    if isinstance(x, (list, tuple)) and not isinstance(x, MaskedArray):
        pairs = [masked_inputs(a, mask_constant) for a in x]
        masks = [m for _, m in pairs]
        return [a for a, _ in pairs], (None if all(m is None for m in masks) else masks)
    return masked_input(x, mask_constant)


# ----------------------------------------------------------------------------------------------
# masks on Kernels


def has_masks(k) -> bool:
    ks = k if isinstance(k, (list, tuple)) else [k]
    return any(isinstance(kk, Kernel) and (kk.mask1 is not None or kk.mask2 is not None)
               for kk in ks)


def positions(mask, shape, channel_axis: int, batch_axis: int = 0):
    """``(N, *spatial)`` booleans, True where every channel of a position is masked, in the
    order of the Kernel's spatial axes."""
    shape = tuple(shape)
    ndim = len(shape)
    c = channel_axis % ndim
    mask = jnp.all(mask, axis=c)
    mask = jnp.broadcast_to(mask, shape[:c] + shape[c + 1:])
    b = batch_axis % ndim
    return jnp.moveaxis(mask, b - (b > c), 0)


def _sides(k: Kernel, mask1=None, mask2=None, use_kernel=True):
    m1 = k.mask1 if use_kernel else mask1
    m2 = k.mask2 if use_kernel else mask2
    if m2 is None and k.cov2 is None:
        m2 = m1  # x2 is x1
    p1 = None if m1 is None else positions(m1, k.shape1, k.channel_axis, k.batch_axis)
    p2 = None if m2 is None else positions(m2, k.shape2, k.channel_axis, k.batch_axis)
    return p1, p2


def pair_masks(k: Kernel, p1, p2):
    """Masks ``(m11, m12, m22)`` of the entries of cov1, nngp/ntk and cov2 that involve an
    absent position (``None`` where neither side has a mask)."""
    ds = k.diagonal_spatial

    def outer(a, b, lead):
        if a is None and b is None:
            return None
        ea = None if a is None else expand(a, 1, lead, ds)
        eb = None if b is None else expand(b, 2, lead, ds)
        return ea if eb is None else eb if ea is None else ea | eb

    lead = 1 if k.diagonal_batch else 2
    return outer(p1, p1, lead), outer(p1, p2, 2), outer(p2, p2, lead)


def position_masks(k: Kernel):
    """``(p1, p2)``: the per-position masks ``(N, *spatial)`` of a Kernel's two batches."""
    return _sides(k)


def kernel_pair_masks(k: Kernel):
    """`pair_masks` of the Kernel's own ``mask1``/``mask2``."""
    return pair_masks(k, *_sides(k))


def _zero(c, m):
    return None if c is None or m is None else jnp.where(m, jnp.zeros((), c.dtype), c)


def apply_masks(k: Kernel, mask1, mask2) -> Kernel:
    """``k`` with ``mask1``/``mask2`` set and every covariance entry involving an absent
    position zeroed (neural-tangents' ``Kernel.mask``)."""
    if mask1 is None and mask2 is None:
        return k.replace(mask1=None, mask2=None)
    m11, m12, m22 = pair_masks(k, *_sides(k, mask1, mask2, use_kernel=False))
    return k.replace(nngp=_zero(k.nngp, m12), ntk=_zero(k.ntk, m12), cov1=_zero(k.cov1, m11),
                     cov2=_zero(k.cov2, m22), mask1=mask1, mask2=mask2)


def masked_mean(x, absent, axes, keepdims=False):
    """Mean of ``x`` over ``axes`` counting only the entries where ``absent`` is False
    (broadcast against ``x``); 0 where every entry is absent."""
    absent = jnp.broadcast_to(absent, x.shape)
    total = jnp.sum(jnp.where(absent, jnp.zeros((), x.dtype), x), axes, keepdims=keepdims)
    count = jnp.sum(~absent, axes, keepdims=keepdims)
    return total / jnp.maximum(count, 1).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# propagation: the machinery in `make_layer` calls these


def propagate(out, k_in, mask_fn, name: str):
    """The output Kernel(s) of a layer with its masks mapped by ``mask_fn`` and its covariances
    zeroed where a position is absent. Outputs returned unchanged (``out is k_in``) and lists
    (``FanOut``'s copies) already carry their masks."""
    if not has_masks(k_in) or out is k_in or not isinstance(out, Kernel):
        return out
    if isinstance(k_in, (list, tuple)):
        fn = all_of if mask_fn is None else mask_fn
        m1 = fn([k.mask1 for k in k_in], [k.shape1 for k in k_in])
        side2 = [k.mask1 if (k.mask2 is None and k.cov2 is None) else k.mask2 for k in k_in]
        same = all(k.cov2 is None for k in k_in)
        m2 = None if same else fn(side2, [k.shape2 for k in k_in])
    else:
        m1, m2 = k_in.mask1, k_in.mask2
        if mask_fn is not None:
            m1 = None if m1 is None else mask_fn(m1, k_in.shape1)
            m2 = None if m2 is None else mask_fn(m2, k_in.shape2)
    return apply_masks(out, m1, m2)


def all_of(masks, shapes):
    """The mask of a sum of branches: a position is absent only when it is in every branch."""
    present = [m for m in masks if m is not None]
    if len(present) < len(masks):
        return None
    out = present[0]
    for m in present[1:]:
        out = out & m
    return out


def reduce_channels(channel_axis: int = -1):
    """``mask_fn`` of a layer applied at each position across channels (Dense, Conv,
    attention): a position is absent when all its channels are."""

    def mask_fn(mask, input_shape):
        return jnp.all(jnp.broadcast_to(mask, tuple(input_shape)), axis=channel_axis,
                       keepdims=True)

    return mask_fn


def window_centres(mask, window, strides, pads):
    """The mask of a window sweep over the spatial axes of ``(N, *spatial, 1)`` masks: each
    output keeps the mask of its window's centre (neural-tangents' ``_pool_mask``).
    ``pads[i] = (low, high)``: the zero padding of spatial axis ``i``."""
    index = [slice(None)]
    for i, (w, st, (lo, hi)) in enumerate(zip(window, strides, pads)):
        size = mask.shape[1 + i]
        n_out = (size + lo + hi - w) // st + 1
        start = -lo + (w - 1) // 2
        index.append(slice(start, start + 1 + (n_out - 1) * st, st))
    out = mask[tuple(index)]
    return out


def sweep(window, strides, padding: str, transpose: bool = False):
    """``mask_fn`` of a convolution or window pooling over ``(N, *spatial, C)`` activations
    with channels last: channels reduced, then the mask of each window's centre (for a
    transposed convolution: an output is absent when any input reaching it is)."""
    from ._spatial import same_pads

    def mask_fn(mask, input_shape):
        mask = reduce_channels(-1)(mask, input_shape)
        spatial = tuple(input_shape[1:-1])
        mask = jnp.broadcast_to(mask, (input_shape[0],) + spatial + (1,))
        if transpose:
            ones = jnp.ones(tuple(window) + (1, 1), jnp.float32)
            letters = "HWDABEFG"[:len(window)]
            dn = ("N" + letters + "C", letters + "IO", "N" + letters + "C")
            lax_padding = "SAME" if padding == "CIRCULAR" else padding
            hit = jax.lax.conv_transpose(mask.astype(jnp.float32), ones, tuple(strides),
                                         lax_padding, dimension_numbers=dn)
            return hit > 0
        pads = [(0, 0) if padding == "VALID" else same_pads(size, w, st)
                for size, w, st in zip(spatial, window, strides)]
        return window_centres(mask, window, strides, pads)

    return mask_fn


def global_pool(mask, input_shape):
    """``mask_fn`` of global pooling of ``(N, *spatial, C)``: an input is absent when all its
    positions are."""
    mask = reduce_channels(-1)(mask, input_shape)
    return jnp.all(mask, axis=tuple(range(1, mask.ndim - 1)))


def concatenate(axis: int):
    """``mask_fn`` of a concatenation along ``axis`` (inputs without a mask are present)."""

    def mask_fn(masks, input_shapes):
        if all(m is None for m in masks):
            return None
        full = []
        for m, shape in zip(masks, input_shapes):
            shape = tuple(shape)
            if m is None:
                full.append(jnp.zeros(shape, bool))
            else:
                full.append(jnp.broadcast_to(m, shape))
        ax = axis % len(input_shapes[0])
        if ax != len(input_shapes[0]) - 1:  # reduce channels when they are not concatenated
            full = [jnp.all(m, axis=-1, keepdims=True) for m in full]
        return jnp.concatenate(full, ax)

    return mask_fn
