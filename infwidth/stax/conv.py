"""Convolutions: `Conv`, `ConvTranspose` and `ConvLocal`, and their kernel maps.

For a convolution with filter ``F`` (``|F|`` taps), weights drawn independently per tap and
shared across positions, the covariance of the outputs at positions ``p, p'`` is the average
over taps of the input covariance at ``(p + f, p' + f)`` (Novak et al. 2019, "Bayesian deep
convolutional networks with many channels are Gaussian processes", arXiv:1810.05148; Garriga-
Alonso et al. 2019, arXiv:1808.05587; Arora et al. 2019, "On exact computation with an
infinitely wide neural net", arXiv:1904.11955 for the NTK):

    K'[p, p'] = W_std**2 / |F| * sum_f K[s p + f, s p' + f] + b_std**2

The map factorises over spatial axes, so it is applied one axis pair at a time as a sum of
``F_i`` shifted slices (``_spatial.shift_sum``): 3 + 3 terms for a 3x3 filter, not the 9 of a
full identity filter, and nothing larger than the output is materialised. Without weight sharing
(`ConvLocal`) the taps of different positions are independent, so only equal positions keep a
covariance. A transposed convolution is a convolution of the input dilated by the strides.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..parameterization import affine_rule
from . import _masking
from ._layer import (
    Layer,
    check_kernel_input,
    check_nonnegative,
    check_positive_int,
    check_shape,
    make_layer,
)
from ._layouts import relaid
from ._spatial import (
    apply_matrix,
    check_dimension_numbers,
    check_fits,
    check_input_rank,
    check_strides,
    check_window,
    fold_matrix,
    map_covariances,
    out_size,
    pad_axes,
    resolve_padding,
    same_pads,
    shift_sum,
    spatial_axes,
)


class _Axis(NamedTuple):
    """How one spatial axis is swept: pad (and dilate), then ``window`` shifted slices."""

    pads: tuple[int, int]
    interior: int  # zeros inserted between inputs (transposed convolutions)
    circular: bool
    window: int
    stride: int
    out_len: int  # length after the shifted sum
    fold: tuple[int, int] | None  # CIRCULAR transposed convolutions: wrap (length, out_len)
    dilation: int = 1  # spacing of the filter's taps (a dilated filter)


def _transpose_pads(window: int, stride: int, padding: str) -> tuple[int, int]:
    """Padding of the dilated input that makes a convolution a transposed convolution
    (the convention of ``jax.lax.conv_transpose``)."""
    if padding == "SAME":
        total = window + stride - 2
        lo = window - 1 if stride > window - 1 else -(-total // 2)
    else:
        total = window + stride - 2 + max(window - stride, 0)
        lo = window - 1
    return lo, total - lo


def _geometry(spatial, filter_shape, strides, padding, transpose) -> tuple[_Axis, ...]:
    axes = []
    for size, f, st in zip(spatial, filter_shape, strides):
        if transpose:
            pads = _transpose_pads(f, st, "VALID" if padding == "CIRCULAR" else padding)
            length = (size - 1) * st + 1 + pads[0] + pads[1] - f + 1
            fold = (length, size * st) if padding == "CIRCULAR" else None
            axes.append(_Axis(pads, st - 1, False, f, 1, length, fold))
        else:
            pads = (0, 0) if padding == "VALID" else same_pads(size, f, st)
            axes.append(_Axis(pads, 0, padding == "CIRCULAR", f, st,
                              out_size(size, f, st, padding), None))
    return tuple(axes)


def _lax_geometry(spatial, filter_shape, strides, pads, lhs_dilation, rhs_dilation,
                  name: str) -> tuple[_Axis, ...]:
    """The geometry of ``jax.lax.conv_general_dilated``: ``pads`` ('SAME', 'VALID' or a
    ``(lo, hi)`` pair per axis), input dilation ``lhs_dilation`` (transposed convolutions) and
    filter dilation ``rhs_dilation``."""
    if isinstance(pads, str):
        dilated = [(size - 1) * ld + 1 for size, ld in zip(spatial, lhs_dilation)]
        spans = [(f - 1) * rd + 1 for f, rd in zip(filter_shape, rhs_dilation)]
        pads = lax.padtype_to_pads(dilated, spans, strides, pads)
    axes = []
    for i, (size, f, st, (lo, hi), ld, rd) in enumerate(zip(spatial, filter_shape, strides, pads,
                                                            lhs_dilation, rhs_dilation)):
        extent = (size - 1) * ld + 1 + lo + hi
        span = (f - 1) * rd + 1
        if extent < span:
            raise ValueError(f"{name}: along spatial axis {i} the input of size {size} (dilated "
                             f"by {ld}, padded by {(lo, hi)}) is shorter than the filter's "
                             f"extent {span} (size {f}, dilation {rd}); pad more or use a "
                             f"smaller filter.")
        axes.append(_Axis((lo, hi), ld - 1, False, f, st, (extent - span) // st + 1, None, rd))
    return tuple(axes)


def _out_spatial(geometry) -> tuple[int, ...]:
    return tuple(a.out_len if a.fold is None else a.fold[1] for a in geometry)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def conv_covariance(cov, lead: int, geometry, diagonal_spatial: bool):
    """The shared-weight convolution map (without ``W_std``, ``b_std``) on one covariance.

    All padding (and dilation) is applied first, in one pass; the per-axis shifted sums that
    follow contain no padding, so XLA fuses them into a single pass over memory. Compiled as
    one program per geometry (also when called eagerly, where op-by-op dispatch would compile
    every shifted slice separately).
    """
    for circular in (False, True):
        config = [(0, 0, 0)] * cov.ndim
        for i, ax in enumerate(geometry):
            if ax.circular == circular:
                for a in spatial_axes(lead, i, diagonal_spatial):
                    config[a] = ax.pads + (ax.interior,)
        if any(c != (0, 0, 0) for c in config):
            if circular:
                cov = jnp.pad(cov, [c[:2] for c in config], mode="wrap")
            else:
                cov = lax.pad(cov, jnp.zeros((), cov.dtype), config)
    for i, ax in enumerate(geometry):
        axes = spatial_axes(lead, i, diagonal_spatial)
        cov = shift_sum(cov, axes, ax.window, ax.stride, ax.out_len, dilation=ax.dilation)
        if ax.fold is not None:
            for a in axes:
                cov = apply_matrix(cov, a, fold_matrix(*ax.fold))
    return cov * (1.0 / math.prod(ax.window for ax in geometry))


def _position_diagonal(cov, lead: int, n_spatial: int):
    """``(lead..., h, h', w, w')`` -> ``(lead..., h, w)``: equal positions only."""
    letters = "abcdefghijklmnop"
    lead_s, sp = letters[:lead], letters[lead:lead + n_spatial]
    return jnp.einsum(f"{lead_s}{''.join(c + c for c in sp)}->{lead_s}{sp}", cov)


def _position_eye(spatial, dtype):
    """``prod_i delta(p_i, p_i')`` in the interleaved layout ``(H, H', W, W', ...)``."""
    eye = np.ones(())
    for size in spatial:
        eye = np.multiply.outer(eye, np.eye(size))
    return jnp.asarray(eye, dtype)


def _on_position_diagonal(diag, lead: int, spatial):
    """Embeds per-position values ``(lead..., h, w)`` as a covariance that is zero between
    different positions."""
    shape = diag.shape[:lead]
    for size in spatial:
        shape += (size, 1)
    eye = _position_eye(spatial, diag.dtype)
    return diag.reshape(shape) * eye.reshape((1,) * lead + eye.shape)  # explicit ranks


def _Conv(name, out_chan, filter_shape, strides, padding, W_std, b_std, dimension_numbers,
          parameterization, s, transpose, shared, general=None) -> Layer:
    """``general``: ``(pads, lhs_dilation, rhs_dilation, feature_group_count)`` of
    `conv_general_dilated` (then ``padding`` is unused)."""
    if general is None and isinstance(filter_shape, (tuple, list)) and len(filter_shape) == 0:
        return _pointwise(name, out_chan, strides, padding, W_std, b_std, dimension_numbers,
                          parameterization, s)
    out_chan = check_positive_int(out_chan, "out_chan", name)
    filter_shape = check_window(filter_shape, "filter_shape", name)
    n = len(filter_shape)
    strides = check_strides(strides, n, name)
    groups = 1 if general is None else general[3]
    padding = resolve_padding(padding, name) if general is None else "explicit"
    W_std = check_nonnegative(W_std, "W_std", name)
    b_std = check_nonnegative(b_std, "b_std", name, allow_none=True)
    rule = affine_rule(parameterization, W_std, b_std, s, name)
    layout = check_dimension_numbers(dimension_numbers, n, name)
    if layout is not None:
        return _relaid_conv(name, out_chan, filter_shape, strides, padding, W_std, b_std,
                            parameterization, s, transpose, shared, layout)
    width = rule.width(out_chan)
    dn = ("N" + "HWDABEFG"[:n] + "C", "HWDABEFG"[:n] + "IO", "N" + "HWDABEFG"[:n] + "C")
    taps = math.prod(filter_shape)

    def check_input(shape, arg="input_shape"):
        check_shape(shape, name)
        check_input_rank(shape, n, name, "filter_shape")
        if general is not None:
            if shape[-1] % groups:
                raise ValueError(f"{name}: {shape[-1]} input channels do not split into "
                                 f"feature_group_count={groups} groups.")
            geometry(shape)
        elif not transpose:
            check_fits(shape[1:-1], filter_shape, padding, name, "filter_shape")

    def geometry(input_shape):
        if general is not None:
            return _lax_geometry(input_shape[1:-1], filter_shape, strides, *general[:3], name)
        return _geometry(input_shape[1:-1], filter_shape, strides, padding, transpose)

    def shape_fn(input_shape):
        return (input_shape[0],) + _out_spatial(geometry(input_shape)) + (width,)

    def init_fn(key, input_shape):
        check_input(input_shape)
        out_shape = shape_fn(input_shape)
        scales = rule.scales(input_shape[-1] // groups * taps, width, input_shape[-1] // groups)
        k_w, k_b = jax.random.split(key)
        if shared:
            w_shape = filter_shape + (input_shape[-1] // groups, width)
            b_shape = (1,) * (n + 1) + (width,)
        else:
            w_shape = out_shape[1:-1] + (taps * input_shape[-1], width)
            b_shape = (1,) + out_shape[1:]
        W = scales.w_init * jax.random.normal(k_w, w_shape)
        b = None if b_std is None else scales.b_init * jax.random.normal(k_b, b_shape)
        return out_shape, (W, b)

    def circular_pad(x):
        for i, (size, f, st) in enumerate(zip(x.shape[1:-1], filter_shape, strides)):
            x = pad_axes(x, (1 + i,), same_pads(size, f, st), circular=True)
        return x

    def apply_fn(params, x, **kwargs):
        W, b = params
        check_input(x.shape, "x")
        scales = rule.scales(x.shape[-1] // groups * taps, width, x.shape[-1] // groups)
        lax_padding = "VALID" if padding == "CIRCULAR" else padding
        if general is not None:
            pads, lhs_dilation, rhs_dilation, _ = general
            out = lax.conv_general_dilated(x, W, strides, pads, lhs_dilation, rhs_dilation,
                                           dimension_numbers=dn, feature_group_count=groups)
        elif transpose:
            out = lax.conv_transpose(x, W, strides, lax_padding, dimension_numbers=dn)
            if padding == "CIRCULAR":
                for ax_i, ax in enumerate(geometry(x.shape)):
                    out = apply_matrix(out, 1 + ax_i, fold_matrix(*ax.fold))
        else:
            if padding == "CIRCULAR":
                x = circular_pad(x)
            if shared:
                out = lax.conv_general_dilated(x, W, strides, lax_padding, dimension_numbers=dn)
            else:
                out = lax.conv_general_dilated_local(x, W, strides, lax_padding, filter_shape,
                                                     dimension_numbers=dn)
        out = scales.w_mult * out
        return out if b is None else out + scales.b_mult * b

    def kernel_map(k, **kwargs):
        rule.check_has_kernel(name)
        k = check_kernel_input(k, name)
        check_input(k.shape1, "x1")
        geo = geometry(k.shape1)
        local_full = not shared and not k.diagonal_spatial

        def spatial_map(cov, lead):
            if local_full:  # unshared taps: only equal positions stay correlated
                diag = conv_covariance(_position_diagonal(cov, lead, n), lead, geo, True)
                return _on_position_diagonal(diag, lead, _out_spatial(geo))
            return conv_covariance(cov, lead, geo, k.diagonal_spatial)

        maps = map_covariances(k, spatial_map)
        fan_in = k.shape1[-1] // groups * taps
        if not local_full:
            nngp, ntk = rule.kernels(maps["nngp"], maps["ntk"], fan_in)
            return k.replace(nngp=nngp, ntk=ntk, cov1=rule.cov(maps["cov1"]),
                             cov2=rule.cov(maps["cov2"]), is_gaussian=True)
        # ConvLocal: a bias per position, so it too only adds to equal positions
        nngp, ntk = rule.kernels(maps["nngp"], maps["ntk"], fan_in, bias=False)
        eye = _position_eye(_out_spatial(geo), nngp.dtype)

        def add_bias(cov, amount):
            if cov is None:
                return None
            return cov + amount * eye.reshape((1,) * (cov.ndim - eye.ndim) + eye.shape)

        cov1, cov2 = rule.cov(maps["cov1"], bias=False), rule.cov(maps["cov2"], bias=False)
        if b_std is not None:
            nngp, cov1, cov2 = (add_bias(c, b_std**2) for c in (nngp, cov1, cov2))
            ntk = add_bias(ntk, rule.bias_ntk())
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=True)

    def linear(out_width):  # the same geometry, unit weights and no bias (infwidth.features)
        return _Conv(name, out_width, filter_shape, strides, padding, 1.0, None,
                     dimension_numbers, "ntk", (1, 1), transpose, shared, general)

    if general is not None:
        return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn,
                          hparams={"rule": rule, "linear": linear, "filter_shape": filter_shape})
    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn,
                      family="Conv" if shared and not transpose else name,
                      hparams={"rule": rule, "linear": linear, "filter_shape": filter_shape},
                      mask_fn=_masking.sweep(filter_shape, strides, padding, transpose))


def _relaid_conv(name, out_chan, filter_shape, strides, padding, W_std, b_std, parameterization,
                 s, transpose, shared, layout) -> Layer:
    """A convolution with ``dimension_numbers`` other than channel-last: the channel-last layer
    with the filter's axes in the inputs' spatial order, on moved inputs (`_layouts`). Its
    parameters are those of the channel-last layer (filters ``(*spatial, I, O)``)."""
    input_axes, output_axes, filter_order, spatial_order = layout
    filter_c = tuple(filter_shape[i] for i in filter_order)
    strides_c = tuple(strides[i] for i in filter_order)
    canonical = _Conv(name, out_chan, filter_c, strides_c, padding, W_std, b_std, None,
                      parameterization, s, transpose, shared)
    return relaid(name, canonical, input_axes[0], input_axes[1], output_axes, spatial_order)


def _pointwise(name, out_chan, strides, padding, W_std, b_std, dimension_numbers,
               parameterization, s) -> Layer:
    """``filter_shape=()``: a convolution over no spatial axes, on inputs ``(N, C)``. It is the
    fully connected layer (as in neural-tangents, where all three convolutions reduce to
    `Dense` there), with the same parameters ``(W, b)`` of shapes ``(C, out_chan)``,
    ``(1, out_chan)``."""
    from .dense import Dense

    if strides not in (None, (), []):
        raise ValueError(f"{name}(filter_shape=(), strides={strides!r}): with no spatial axes "
                         f"there is nothing to stride over; pass strides=None.")
    resolve_padding(padding, name)
    if dimension_numbers not in (None, ("NC", "IO", "NC"), ["NC", "IO", "NC"]):
        raise ValueError(f"{name}(filter_shape=(), dimension_numbers={dimension_numbers!r}): "
                         f"only ('NC', 'IO', 'NC') (or None) fits inputs without spatial axes.")
    dense = Dense(out_chan, W_std, b_std, parameterization=parameterization, s=s)

    def check(shape, arg):
        if len(shape) != 2:
            raise ValueError(f"{name}(filter_shape=()): a filter without spatial axes needs "
                             f"{arg} of shape (N, C); got {tuple(shape)}. Give filter_shape one "
                             f"entry per spatial dimension, e.g. (1, 1) for images.")

    def init_fn(key, input_shape):
        check(input_shape, "input_shape")
        return dense.init_fn(key, input_shape)

    def apply_fn(params, x, **kwargs):
        check(x.shape, "inputs")
        return dense.apply_fn(params, x, **kwargs)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        check(k.shape1, "inputs")
        return dense.kernel_fn(k, **kwargs)

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None,
                      mask_fn=_masking.reduce_channels(-1))


_ARGS_DOC = """
    Args:
      out_chan: number of output channels of the finite network (the kernel does not depend on
        it under 'ntk').
      filter_shape: the filter's spatial shape, one entry per spatial dimension (1, 2 or 3),
        e.g. ``(3, 3)`` for NHWC images; ``()`` for inputs ``(N, C)`` without spatial axes
        (the layer is then `Dense`, as in neural-tangents).
      strides: the strides, one per spatial dimension; ``None`` means 1.
      padding: ``'VALID'``, ``'SAME'`` (zeros) or ``'CIRCULAR'`` (periodic boundaries).
      W_std: weight standard deviation.
      b_std: bias standard deviation, or ``None`` for no bias.
      dimension_numbers: ``None`` (``(N, *spatial, C)`` inputs) or ``jax.lax`` specs
        ``(lhs, rhs, out)`` such as ``('NCHW', 'OIHW', 'NCHW')``; ``filter_shape`` and
        ``strides`` follow the filter spec's spatial order, as in ``jax.lax``. Kernels keep
        the spatial axes in the inputs' order; parameters are stored channel-last
        (``(*spatial, I, O)`` filters).
      parameterization: ``'ntk'``, ``'standard'``, ``'mup'`` or an `ABC`, as for `Dense`,
        with fan-in ``in_channels * prod(filter_shape)`` (no kernel_fn under 'mup').
      s: width multipliers of the input and output under 'standard'.
"""


def Conv(out_chan: int, filter_shape, strides=None, padding: str = "VALID", W_std: float = 1.0,
         b_std: float | None = None, dimension_numbers=None, parameterization: str = "ntk",
         s=(1, 1)) -> Layer:
    """Convolution with weights shared across positions, as neural-tangents' `stax.Conv`.

    Inputs are ``(N, *spatial, C)``. The kernel maps are those of the module docstring
    (arXiv:1810.05148, arXiv:1808.05587, arXiv:1904.11955); with ``diagonal_spatial=True`` only
    per-position variances and covariances are carried, which is exact up to a final `Flatten`.
    Unlike neural-tangents, the spatial axes of the returned kernels are always in input order
    ``(N1, N2, H, H', W, W')`` (neural-tangents reverses them after an odd number of
    convolutions).
    {args}
    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.Conv(8, (3, 3), padding='SAME', b_std=0.1)
      >>> x = jnp.ones((2, 5, 4, 3))
      >>> out_shape, params = init_fn(jax.random.PRNGKey(0), x.shape)
      >>> out_shape, apply_fn(params, x).shape
      ((2, 5, 4, 8), (2, 5, 4, 8))
      >>> k = kernel_fn(x, get=('nngp', 'ntk'))
      >>> k.nngp.shape  # (N1, N2, H, H', W, W')
      (2, 2, 5, 5, 4, 4)
      >>> float(k.nngp[0, 0, 2, 2, 1, 1])  # an interior position sees the whole 3x3 window
      1.01
    """
    return _Conv("Conv", out_chan, filter_shape, strides, padding, W_std, b_std,
                 dimension_numbers, parameterization, s, transpose=False, shared=True)


def ConvTranspose(out_chan: int, filter_shape, strides=None, padding: str = "VALID",
                  W_std: float = 1.0, b_std: float | None = None, dimension_numbers=None,
                  parameterization: str = "ntk", s=(1, 1)) -> Layer:
    """Transposed convolution, as neural-tangents' `stax.ConvTranspose`.

    The finite layer is ``jax.lax.conv_transpose``: a convolution of the input dilated by the
    strides. Its kernel map is the `Conv` map applied to the dilated input covariance
    (arXiv:1810.05148). 'CIRCULAR' padding computes the 'VALID' transposed convolution and wraps
    its overhang around onto the 'SAME' output shape.
    {args}
    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.ConvTranspose(4, (3,), strides=(2,),
      ...                                                   padding='SAME')
      >>> x = jnp.ones((2, 5, 3))
      >>> init_fn(jax.random.PRNGKey(0), x.shape)[0]
      (2, 10, 4)
      >>> kernel_fn(x, get='nngp').shape
      (2, 2, 10, 10)
    """
    return _Conv("ConvTranspose", out_chan, filter_shape, strides, padding, W_std, b_std,
                 dimension_numbers, parameterization, s, transpose=True, shared=True)


def ConvLocal(out_chan: int, filter_shape, strides=None, padding: str = "VALID",
              W_std: float = 1.0, b_std: float | None = None, dimension_numbers=None,
              parameterization: str = "ntk", s=(1, 1)) -> Layer:
    """Locally connected layer (a convolution without weight sharing), as neural-tangents'
    `stax.ConvLocal`.

    Each output position has its own filter and bias, so outputs at different positions are
    uncorrelated: the kernel keeps the `Conv` values at equal positions and zero elsewhere
    (Novak et al. 2019, arXiv:1810.05148, section on locally connected networks).
    {args}
    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.ConvLocal(4, (2,), b_std=0.5)
      >>> k = kernel_fn(jnp.ones((1, 3, 2)), get='nngp')
      >>> k.shape, k[0, 0].tolist()
      ((1, 1, 2, 2), [[1.25, 0.0], [0.0, 1.25]])
    """
    return _Conv("ConvLocal", out_chan, filter_shape, strides, padding, W_std, b_std,
                 dimension_numbers, parameterization, s, transpose=False, shared=False)


def conv_general_dilated(out_chan: int, filter_shape, window_strides=None, padding="VALID",
                         lhs_dilation=None, rhs_dilation=None, feature_group_count: int = 1,
                         W_std: float = 1.0, b_std: float | None = None,
                         parameterization: str = "ntk", s=(1, 1)) -> Layer:
    """A channels-last ``jax.lax.conv_general_dilated`` layer with shared weights: strides,
    'SAME'/'VALID' or explicit ``(lo, hi)`` padding per axis, input dilation (a transposed
    convolution is the input dilated by the strides, as ``jax.lax.conv_transpose`` and Flax's
    ``ConvTranspose`` compute it), filter dilation (atrous convolutions) and feature groups.

    The kernel map is `Conv`'s, on the padded and dilated input covariance, with the taps
    spaced by ``rhs_dilation`` (arXiv:1810.05148):
    ``K'[p, p'] = W_std**2 / |F| * sum_f K~[s p + d f, s p' + d f] + b_std**2``. With
    ``feature_group_count=G`` each output channel reads ``C / G`` of the input channels, so
    its fan-in is ``C / G * |F|``; the kernel assumes that the input's channels are
    exchangeable, i.e. a hidden layer whose channels go to infinity (on raw inputs each group
    sees a different covariance, which a `Kernel` does not carry: `from_flax` raises there).
    Not in neural-tangents; `from_flax` maps convolutions onto it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth.stax.conv import conv_general_dilated
      >>> layer = conv_general_dilated(8, (3,), padding=((2, 2),), rhs_dilation=(2,))
      >>> x = jnp.ones((2, 6, 3))
      >>> _, params = layer.init_fn(jax.random.PRNGKey(0), x.shape)
      >>> layer.apply_fn(params, x).shape
      (2, 6, 8)
      >>> k = layer.kernel_fn(x, get='nngp')
      >>> float(k[0, 0, 0, 0])  # position 0 sees taps at -2 (padding), 0 and 2: 2 of 3
      0.666...
    """
    name = "conv_general_dilated"
    n = len(check_window(filter_shape, "filter_shape", name))
    window_strides = check_strides(window_strides, n, name)
    lhs_dilation = check_strides(lhs_dilation, n, name, "lhs_dilation")
    rhs_dilation = check_strides(rhs_dilation, n, name, "rhs_dilation")
    feature_group_count = check_positive_int(feature_group_count, "feature_group_count", name)
    pads: str | tuple[tuple[int, int], ...]
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{name}(padding={padding!r}): must be 'SAME', 'VALID' or a "
                             f"(lo, hi) pair per spatial axis.")
        pads = padding.upper()
    else:
        try:
            pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        except (TypeError, ValueError):
            pads = ()
        if len(pads) != n:
            raise ValueError(f"{name}(padding={padding!r}): expected 'SAME', 'VALID' or {n} "
                             f"(lo, hi) pairs, one per spatial axis.")
    if check_positive_int(out_chan, "out_chan", name) % feature_group_count:
        raise ValueError(f"{name}(out_chan={out_chan}, feature_group_count="
                         f"{feature_group_count}): the output channels must split into the "
                         f"groups.")
    return _Conv(name, out_chan, filter_shape, window_strides, "VALID", W_std, b_std, None,
                 parameterization, s, False, True,
                 general=(pads, lhs_dilation, rhs_dilation, feature_group_count))


def spatial_zero_padding(padding_config) -> Layer:
    """``jax.lax.pad`` of the spatial axes of ``(N, *spatial, C)`` activations with zeros:
    ``padding_config`` holds ``(lo, hi, interior)`` per spatial axis (negative ``lo``/``hi``
    crop). Padded positions have zero covariance with everything; the rest of the kernel is
    moved, not changed. Not in neural-tangents; `from_flax` maps ``jnp.pad``/``lax.pad`` onto
    it (Flax's 'CAUSAL' convolutions).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.stax.conv import spatial_zero_padding
      >>> layer = spatial_zero_padding(((1, 0, 0),))
      >>> layer.kernel_fn(jnp.ones((1, 2, 3)), get='nngp')[0, 0].tolist()
      [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    """
    name = "spatial_zero_padding"
    config = tuple((int(lo), int(hi), int(i)) for lo, hi, i in padding_config)
    if any(i < 0 for _, _, i in config):
        raise ValueError(f"{name}(padding_config={padding_config!r}): interior padding must be "
                         f">= 0.")

    def geometry(shape):
        check_input_rank(shape, len(config), name, "padding_config")
        axes = []
        for i, (size, (lo, hi, interior)) in enumerate(zip(shape[1:-1], config)):
            length = (size - 1) * (interior + 1) + 1 + lo + hi
            if length < 1:
                raise ValueError(f"{name}: padding {config[i]} leaves nothing of spatial axis "
                                 f"{i} (size {size}).")
            axes.append(_Axis((lo, hi), interior, False, 1, 1, length, None))
        return tuple(axes)

    def shape_fn(shape):
        return (shape[0],) + _out_spatial(geometry(shape)) + (shape[-1],)

    def apply_fn(params, x, **kwargs):
        full = ((0, 0, 0),) + config + ((0, 0, 0),)
        return lax.pad(x, jnp.zeros((), x.dtype), full)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        geo = geometry(k.shape1)
        maps = map_covariances(
            k, lambda cov, lead: conv_covariance(cov, lead, geo, k.diagonal_spatial))
        return k.replace(**maps)

    return make_layer(name, lambda key, shape: (shape_fn(shape), ()), apply_fn, kernel_map,
                      shape_fn)


def spatial_gather(indices) -> Layer:
    """Rearranges the positions of ``(N, *spatial, C)`` activations: output position ``i``
    along spatial axis ``a`` is input position ``indices[a][i]``, or a zero where it is -1
    (slices, wrap-around padding, reversals, concatenations of pieces of one activation).
    The kernel is the input covariance at the gathered positions, zero at the -1 ones. Not in
    neural-tangents; `from_flax` maps ``lax.slice`` and spatial concatenations onto it (Flax's
    'CIRCULAR' padding).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.stax.conv import spatial_gather
      >>> x = jnp.array([[[1.], [2.], [3.]]])  # one input, 3 positions
      >>> k = spatial_gather([[2, 0, -1]]).kernel_fn(x, get='nngp')
      >>> k[0, 0].tolist()
      [[9.0, 3.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    name = "spatial_gather"
    idx = tuple(np.asarray(i, dtype=np.int64).reshape(-1) for i in indices)

    def check(shape):
        check_input_rank(shape, len(idx), name, "indices")
        for a, (size, i) in enumerate(zip(shape[1:-1], idx)):
            if i.size == 0 or i.min() < -1 or i.max() >= size:
                raise ValueError(f"{name}: indices of spatial axis {a} must be in [-1, {size}) "
                                 f"and not empty.")

    def shape_fn(shape):
        check(shape)
        return (shape[0],) + tuple(i.size for i in idx) + (shape[-1],)

    def apply_fn(params, x, **kwargs):
        check(x.shape)
        for a, i in enumerate(idx):
            keep = (i >= 0).reshape((1,) * (1 + a) + (-1,) + (1,) * (x.ndim - 2 - a))
            x = jnp.take(x, np.maximum(i, 0), axis=1 + a) * jnp.asarray(keep, x.dtype)
        return x

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        check(k.shape1)

        def gather(cov, lead):
            for a, i in enumerate(idx):
                for ax in spatial_axes(lead, a, k.diagonal_spatial):
                    keep = (i >= 0).reshape((1,) * ax + (-1,) + (1,) * (cov.ndim - 1 - ax))
                    cov = jnp.take(cov, np.maximum(i, 0), axis=ax) * jnp.asarray(keep,
                                                                                  cov.dtype)
            return cov

        return k.replace(**map_covariances(k, gather))

    return make_layer(name, lambda key, shape: (shape_fn(shape), ()), apply_fn, kernel_map,
                      shape_fn)


for _f in (Conv, ConvTranspose, ConvLocal):
    _f.__doc__ = _f.__doc__.replace("{args}", _ARGS_DOC)
