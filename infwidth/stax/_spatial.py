"""Shared pieces of the spatial layers (convolutions, pooling): argument checks, padding and the
per-axis window sums that every spatial kernel map is made of.

A convolution or pooling layer acts on each spatial axis separately, so its map on a covariance
of layout ``(lead..., H, H', W, W', ...)`` is a product of per-axis maps. Each per-axis map is a
sum of a few shifted, strided slices of the (padded) array: ``window`` terms for a convolution
(one per filter tap, the same shift on both members of a position pair) and ``window`` terms on
each member for pooling. XLA fuses the slices, the padding and the sum into one pass over memory,
so no identity filter, im2col buffer or intermediate of the full size is materialised.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..kernel import Kernel
from ._layout import map_covariances, n_lead, spatial_axes  # noqa: F401 (used by layers)

PADDINGS = ("VALID", "SAME", "CIRCULAR")


# ----------------------------------------------------------------------------------------------
# argument checks (at layer construction)


def resolve_padding(padding, layer: str) -> str:
    """Canonical padding name, or a ValueError naming the layer and the choices."""
    if isinstance(padding, str) and padding.upper() in PADDINGS:
        return padding.upper()
    raise ValueError(f"{layer}(padding={padding!r}): padding must be one of "
                     f"{', '.join(repr(p) for p in PADDINGS)}.")


def check_window(shape, arg: str, layer: str) -> tuple[int, ...]:
    """A non-empty tuple of positive integers (a filter or window shape)."""
    ok = isinstance(shape, (tuple, list)) and 0 < len(shape) <= 8
    if ok:
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                 for v in shape)
    if not ok:
        raise ValueError(f"{layer}({arg}={shape!r}): {arg} must be a non-empty tuple of positive "
                         f"integers, one per spatial dimension, e.g. (3, 3) for images.")
    return tuple(int(v) for v in shape)


def check_strides(strides, n: int, layer: str, arg: str = "strides") -> tuple[int, ...]:
    """Strides (or dilations: ``arg``) for ``n`` spatial dimensions; ``None`` means 1
    everywhere."""
    if strides is None:
        return (1,) * n
    strides = check_window(strides, arg, layer)
    if len(strides) != n:
        raise ValueError(f"{layer}({arg}={strides!r}): give one value per spatial dimension "
                         f"({n}, as in the filter/window shape).")
    return strides


def check_dimension_numbers(dimension_numbers, n: int, layer: str):
    """Parses ``(lhs_spec, rhs_spec, out_spec)`` (``jax.lax`` convolution strings such as
    ``('NCHW', 'OIHW', 'NCHW')``). Returns ``None`` for the channel-last default, else
    ``(input_axes, output_axes, filter_order, spatial_order)``: the inputs' and outputs' (batch,
    channel) axes, for each spatial axis of the inputs (in their order) its index in the filter
    spec's spatial axes (``filter_shape`` and ``strides`` follow the filter spec, as in
    ``jax.lax``), and the output's spatial axes as indices of the input's."""
    if dimension_numbers is None:
        return None
    fix = (f"{layer}(dimension_numbers={dimension_numbers!r}): expected three strings (lhs, "
           f"rhs, out) such as ('NHWC', 'HWIO', 'NHWC') or ('NCHW', 'OIHW', 'NCHW'), each with "
           f"{n} spatial letter(s) (one per entry of filter_shape)")
    if not (isinstance(dimension_numbers, (tuple, list)) and len(dimension_numbers) == 3
            and all(isinstance(d, str) for d in dimension_numbers)):
        raise ValueError(fix + ".")
    lhs, rhs, out = dimension_numbers
    ok = all(len(d) == n + 2 and len(set(d)) == len(d) for d in (lhs, rhs, out))
    ok = ok and all(set(a) <= set(d) for a, d in (("NC", lhs), ("IO", rhs), ("NC", out)))
    sp_lhs = [c for c in lhs if c not in "NC"]
    sp_rhs = [c for c in rhs if c not in "IO"]
    sp_out = [c for c in out if c not in "NC"]
    ok = ok and set(sp_lhs) == set(sp_rhs) == set(sp_out)
    if not ok:
        raise ValueError(fix + "; the batch (N), channel (C), filter (I, O) and shared spatial "
                               "letters must each appear once.")
    if lhs == out and lhs[0] == "N" and lhs[-1] == "C" and sp_rhs == sp_lhs and rhs[-2:] == "IO":
        return None
    return ((lhs.index("N"), lhs.index("C")), (out.index("N"), out.index("C")),
            tuple(sp_rhs.index(c) for c in sp_lhs), tuple(sp_lhs.index(c) for c in sp_out))


def lax_dimension_numbers(n: int) -> tuple[str, str, str]:
    """Channel-last dimension numbers for ``jax.lax`` convolutions with ``n`` spatial axes."""
    sp = "HWDABEFGJK"[:n]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def check_input_rank(shape, n: int, layer: str, arg: str):
    """Inputs must have ``n`` spatial axes: ``(N, *spatial, C)``."""
    if len(shape) != n + 2:
        example = {1: "(N, W, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}.get(n, "")
        raise ValueError(
            f"{layer}: {arg} has {n} entries, so inputs need {n} spatial dimension(s) {example} "
            f"(batch first, channels last); got shape {tuple(shape)}. Give {arg} one entry per "
            f"spatial dimension, or reshape the inputs."
        )


# ----------------------------------------------------------------------------------------------
# per-axis geometry


def out_size(size: int, window: int, stride: int, padding: str) -> int:
    """Output length of a window sweep over ``size`` positions."""
    if padding == "VALID":
        return (size - window) // stride + 1
    return -(-size // stride)


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
    """(low, high) zero padding of 'SAME' (also the wrap-around of 'CIRCULAR')."""
    return tuple(lax.padtype_to_pads((size,), (window,), (stride,), "SAME")[0])


def check_fits(spatial, window, padding: str, layer: str, arg: str):
    """With 'VALID' padding the window must fit in the input."""
    if padding == "VALID" and any(w > s for w, s in zip(window, spatial)):
        raise ValueError(
            f"{layer}({arg}={tuple(window)}, padding='VALID'): the window is larger than the "
            f"input's spatial shape {tuple(spatial)}, so the output would be empty. Use "
            f"padding='SAME' or 'CIRCULAR', a smaller {arg}, or larger inputs."
        )


def pad_axes(x, axes, pads, circular: bool, interior: int = 0):
    """Pads ``x`` on ``axes`` by ``pads=(low, high)``: zeros, or wrap-around if ``circular``.

    ``interior`` zeros are inserted between neighbouring entries first (input dilation, as in a
    transposed convolution).
    """
    lo, hi = pads
    if circular:
        width = [(0, 0)] * x.ndim
        for a in axes:
            width[a] = (lo, hi)
        return jnp.pad(x, width, mode="wrap") if lo or hi else x
    if not (lo or hi or interior):
        return x
    config = [(0, 0, 0)] * x.ndim
    for a in axes:
        config[a] = (lo, hi, interior)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def shift_sum(x, axes, window: int, stride: int, out_len: int, pads=(0, 0),
              circular: bool = False, dilation: int = 1):
    """``sum_f xp[..., dilation * f + stride * i, ...]`` over ``f < window``, the same ``f`` on
    all ``axes``, where ``xp`` is ``x`` padded by ``pads`` (zeros, or wrap-around if
    ``circular``); ``dilation`` spaces the taps (a dilated filter).

    With one axis this is a window sum (pooling, or a convolution's map on a per-position
    variance); with the two axes of a position pair it is a convolution's map on a covariance.
    Each term is built from ``x`` directly (a shifted crop, or a roll for wrap-around) rather
    than from a padded copy, so XLA fuses the whole sum into one pass without materialising
    anything but the output.
    """
    lo = pads[0]
    span = stride * (out_len - 1) + 1  # extent of the strided slice
    total = None
    for tap in range(window):
        f = dilation * tap
        term = x
        for a in axes:
            if circular:
                size = x.shape[a]
                shift = (f - lo) % size
                if shift:
                    term = lax.concatenate([lax.slice_in_dim(term, shift, size, axis=a),
                                            lax.slice_in_dim(term, 0, shift, axis=a)], a)
                if span > size:  # only with stride 1 and an output longer than the input
                    raise ValueError("circular window sums longer than the input")
            else:
                # crop (negative low padding) or pad so that index 0 is padded position f
                config = [(0, 0, 0)] * x.ndim
                config[a] = (lo - f, span - x.shape[a] - (lo - f), 0)
                if config[a][:2] != (0, 0):
                    term = lax.pad(term, jnp.zeros((), x.dtype), config)
            if stride > 1:
                term = lax.slice_in_dim(term, 0, span, stride, axis=a)
        total = term if total is None else total + term
    return total


def fold_matrix(length: int, out_len: int) -> np.ndarray:
    """The linear map that folds a transposed convolution's 'VALID' output of ``length``
    positions onto ``out_len`` positions with wrap-around ('CIRCULAR' padding): entries that
    alias modulo ``out_len`` (around the centred crop) are summed."""
    half = (math.ceil(length / out_len) // 2 * 2 + 1) // 2
    offset = (length - out_len) // 2
    m = np.zeros((out_len, length))
    for p in range(out_len):
        for j in range(-half, half + 1):
            q = p + offset + j * out_len
            if 0 <= q < length:
                m[p, q] = 1.0
    return m


def apply_matrix(x, axis: int, m):
    """Contracts axis ``axis`` of ``x`` with the second axis of ``m`` (keeping its position)."""
    m = jnp.asarray(m, x.dtype)
    y = jnp.tensordot(x, m, axes=((axis,), (1,)), precision=lax.Precision.HIGHEST)
    return jnp.moveaxis(y, -1, axis)


# ----------------------------------------------------------------------------------------------
# kernel layout


def no_diagonal_spatial(k: Kernel, layer: str):
    """Layers that mix positions need the covariances between them."""
    if k.diagonal_spatial and k.n_spatial > 0:
        raise ValueError(
            f"{layer}: this layer mixes positions, so it needs the covariances between them, "
            f"which kernel_fn(..., diagonal_spatial=True) does not keep. Call kernel_fn with "
            f"diagonal_spatial=False (the default); diagonal_spatial=True suits networks of "
            f"convolutions and nonlinearities that end in Flatten()."
        )
