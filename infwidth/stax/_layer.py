"""The layer triple and the wrapper that gives every `kernel_fn` the same calling convention.

A layer is built by :func:`make_layer` from four pieces:

* ``init_fn(key, input_shape) -> (output_shape, params)``
* ``apply_fn(params, x, **kwargs) -> y``
* ``kernel_map(kernel, **kwargs) -> kernel``: the infinite-width map of the layer on `Kernel`s
* ``shape_fn(input_shape) -> output_shape`` (``None`` for combinators, whose sub-layers
  update the shapes themselves)

and the public ``kernel_fn(x1, x2=None, get=None, *, diagonal_batch=True,
diagonal_spatial=False, **kwargs)`` accepts arrays (or lists of arrays for multi-input layers)
or a `Kernel` to continue a recursion.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_bool, check_nonnegative, check_positive_int, none_if_all_none  # noqa: F401
from .._get import parse_get
from .._get import select as _select
from .._numerics import value_with_derivatives_of
from .._random import classic_stream
from ..kernel import DATA_FIELDS, STATIC_FIELDS, Kernel
from . import _layout, _masking, _memory, _tiling

GET_NAMES = DATA_FIELDS + STATIC_FIELDS
_HIGHEST = jax.lax.Precision.HIGHEST
# keyword arguments of kernel_fn itself (layers such as Aggregate read `pattern`)
KERNEL_FN_KEYWORDS = ("pattern", "mask_constant", "batch_axis", "channel_axis")


class Layer(NamedTuple):
    """A layer: the finite network (``init_fn``, ``apply_fn``) and its infinite-width limit."""

    init_fn: Callable
    apply_fn: Callable
    kernel_fn: Callable


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """What a layer declares about its kernel, read by the machinery (never set while tracing).

    Attributes:
      name: the layer's name, for messages.
      mixes_batch: the kernel of a pair of inputs depends on other inputs of the batch (an
        ``Index`` selecting inputs, batch statistics): the call is never cut into tiles.
      input_axes: ``(batch_axis, channel_axis)`` the layer declares for raw inputs (as
        neural-tangents' requirements do: the first layer of a network that declares them sets
        the axes of the input kernel), or ``None`` for the default ``(0, -1)``.
      any_axes: the layer's map does not depend on where the batch and channel axes of its
        inputs are (elementwise layers, Dense, combinators); other layers need the default
        layout and raise on a kernel whose axes differ.
      smoothness: how many times the layer's map is continuously differentiable in its inputs
        (``inf`` for smooth maps, 0 for a kink such as ReLU's, -1 for a jump such as Sign's);
        for a combinator the least over its sub-layers. Kernels of derivatives of the network
        (`infwidth.analysis.operator_kernel`) read it.
      roughest: the name of the layer that sets ``smoothness`` (for messages).
      family: the kind of layer (``'Dense'``, ``'Conv'``, ``'elementwise'``, ``'serial'``, ...),
        which `infwidth.features` reads to find the layer's feature rule.
      hparams: what a feature rule needs to know of the layer (its affine rule, its activation
        ``fn``, a builder of the same layer at another width); read only, never while tracing.
      children: the kernel_fns a combinator applies, in order.
    """

    name: str
    mixes_batch: bool = False
    input_axes: tuple[int, int] | None = None
    any_axes: bool = False
    smoothness: float = math.inf
    roughest: str = ""
    family: str = ""
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    children: tuple = dataclasses.field(default=(), compare=False)

    @staticmethod
    def of(kernel_fn) -> LayerInfo:
        """The info of a kernel_fn; a foreign kernel_fn (not made by `make_layer`) may do
        anything, so it counts as mixing the batch."""
        info = getattr(kernel_fn, "info", None)
        return info if isinstance(info, LayerInfo) else LayerInfo(
            getattr(kernel_fn, "__name__", "kernel_fn"), mixes_batch=True)


def make_layer(name: str, init_fn: Callable, apply_fn: Callable, kernel_map: Callable,
               shape_fn: Callable | None, *, mixes_batch: bool = False,
               input_axes: tuple[int, int] | None = None, any_axes: bool = False,
               children: Sequence[Callable] = (), smoothness: float = math.inf,
               family: str | None = None, hparams: Mapping[str, Any] | None = None,
               mask_fn: Callable | None = None, uses_mask: bool = False,
               sets_axes: bool = False, passes_masks: bool = False) -> Layer:
    """Assembles a `Layer` whose ``kernel_fn`` has the standard calling convention.

    ``kernel_map(kernel, **kwargs) -> kernel`` is the layer's map on Kernels; ``children`` are
    the kernel_fns a combinator applies (their `LayerInfo` is combined with this layer's: a
    combinator mixes the batch if a child does, takes the input axes of its first child that
    declares them, and is as smooth as its roughest child). ``mixes_batch``, ``input_axes``,
    ``any_axes`` and ``smoothness`` (the layer's own): see `LayerInfo`. ``family`` (default
    ``name``) and ``hparams`` are metadata for `infwidth.features`.

    Masking (``mask_constant``, see `infwidth.stax._masking`): ``mask_fn(mask, input_shape)``
    maps the mask of the layer's input to that of its output (default: unchanged; lists of
    masks for multi-input layers, where the default keeps a position present in any input);
    the machinery then zeroes the output covariances of absent positions, so a layer's
    ``kernel_map`` only reads ``kernel.mask1``/``mask2`` where it mixes positions. With
    ``uses_mask`` the layer's ``apply_fn`` receives ``mask=`` (the input's mask) whenever the
    input is masked. Combinators (``children``) and layers that run another layer inside
    (``passes_masks``: layers on any layout, `_layouts`) leave masks to their sub-layers.
    """
    infos = [LayerInfo.of(c) for c in children]
    if input_axes is None:
        input_axes = next((i.input_axes for i in infos if i.input_axes is not None), None)
    rough = min([(smoothness, name)] + [(i.smoothness, i.roughest) for i in infos],
                key=lambda pair: pair[0])
    info = LayerInfo(name, mixes_batch=mixes_batch or any(i.mixes_batch for i in infos),
                     input_axes=input_axes, any_axes=any_axes or bool(children),
                     smoothness=rough[0], roughest=rough[1] if rough[0] < math.inf else "",
                     family=family or name, hparams=dict(hparams or {}),
                     children=tuple(children))

    def masked_apply_fn(params, x, **kwargs):
        c = _masking.check_mask_constant(kwargs.pop("mask_constant", None), f"{name}.apply_fn")
        if c is None and not _has_masked_array(x):
            return apply_fn(params, x, **kwargs)
        x, mask = _masking.masked_inputs(x, c)
        if mask is None:
            return apply_fn(params, x, **kwargs)
        if children or passes_masks:  # the sub-layers carry the mask
            return apply_fn(params, _wrap(x, mask), **kwargs)
        y = apply_fn(params, x, mask=mask, **kwargs) if uses_mask else apply_fn(params, x,
                                                                                  **kwargs)
        if isinstance(mask, list):
            fn = _masking.all_of if mask_fn is None else mask_fn
            out_mask = fn(mask, [a.shape for a in x])
        else:
            out_mask = mask if mask_fn is None else mask_fn(mask, x.shape)
        return _wrap(y, out_mask)

    def kernel_fn(x1, x2=None, get=None, *, diagonal_batch: bool | None = None,
                  diagonal_spatial: bool | None = None, **kwargs):
        names = parse_get(get, GET_NAMES, "kernel_fn")
        x2 = none_if_all_none(x2)
        diagonal_batch = True if diagonal_batch is None else check_bool(
            diagonal_batch, "diagonal_batch", "kernel_fn")
        diagonal_spatial = False if diagonal_spatial is None else check_bool(
            diagonal_spatial, "diagonal_spatial", "kernel_fn")
        _check_keywords(kwargs)
        axes = _input_axes(info, kwargs)
        compute_ntk = names is None or "ntk" in names
        mask_constant = kwargs.get("mask_constant")

        def untiled(a, b):
            k = as_kernel(a, b, diagonal_batch=diagonal_batch,
                          diagonal_spatial=diagonal_spatial, compute_ntk=compute_ntk, axes=axes,
                          mask_constant=mask_constant)
            if not info.any_axes:
                _check_default_axes(k, name)
            out = kernel_map(k, **kwargs)
            if shape_fn is not None:
                out = out.replace(shape1=shape_fn(out.shape1), shape2=shape_fn(out.shape2))
            # combinators pass on the axes their last layer set
            if not sets_axes:
                out = _normalized_axes(out, k, keep_rank_axes=bool(children))
            if children or passes_masks:  # the sub-layers carried the masks
                return out
            return _masking.propagate(out, k, mask_fn, name)

        if _is_kernel(x1):  # inside a recursion
            return _select(untiled(x1, x2), get, "AnalyticKernel")
        traced = _is_traced(x1, x2)
        x2t = None if x2 is x1 else x2  # the same inputs twice: the symmetric evaluation
        if not traced:
            x1 = jax.tree_util.tree_map(lambda a: _float(a, "x1"), x1)  # type errors first
            x2t = None if x2t is None else jax.tree_util.tree_map(lambda a: _float(a, "x2"), x2t)
            x2 = x1 if x2t is None and x2 is not None else x2t
        tiles = (not info.mixes_batch and axes == (0, -1)
                 and _tiling.may_tile(x1, x2t, diagonal_batch, diagonal_spatial, kwargs))
        if traced and not tiles:  # under jit, tracing raises every error before any work
            return _select(untiled(x1, x2), get, "AnalyticKernel")
        # an abstract evaluation first: every layer's error is raised here, after tracing
        # only; it sizes the tiles and checks the result fits in memory
        program, abstract = jax.make_jaxpr(untiled, return_shape=True)(x1, x2t)
        sides = _tiling.tile_sides(x1, x2t, abstract) if tiles else None
        _memory.check_fits(abstract, tiled=sides is not None, caller=f"{name}.kernel_fn",
                           largest=_memory.largest_intermediate(program.jaxpr))
        if sides is not None:
            return _select(_tiling.tiled(untiled, x1, x2t, abstract, sides), get,
                           "AnalyticKernel")
        return _select(untiled(x1, x2), get, "AnalyticKernel")

    kernel_fn.__name__ = f"{name}.kernel_fn"
    kernel_fn.__qualname__ = kernel_fn.__name__
    kernel_fn.info = info  # type: ignore[attr-defined]
    masked_apply_fn.__name__ = getattr(apply_fn, "__name__", "apply_fn")
    masked_apply_fn.__doc__ = apply_fn.__doc__
    # neural-tangents' random stream: the same key gives its parameters (see infwidth._random)
    return Layer(classic_stream(init_fn), classic_stream(masked_apply_fn), kernel_fn)


def _has_masked_array(x) -> bool:
    return isinstance(x, _masking.MaskedArray) or (
        isinstance(x, (list, tuple)) and any(isinstance(a, _masking.MaskedArray) for a in x))


def _wrap(y, mask):
    """Outputs (one array or a nested list) as `MaskedArray`s carrying ``mask`` (one mask, or
    a list mirroring the outputs)."""
    if mask is None:
        return y
    if isinstance(y, (list, tuple)):
        masks = mask if isinstance(mask, list) else [mask] * len(y)
        return [_wrap(a, m) for a, m in zip(y, masks)]
    return _masking.MaskedArray(y, mask)


def _is_kernel(x) -> bool:
    return isinstance(x, Kernel) or (isinstance(x, (list, tuple)) and any(
        isinstance(k, Kernel) for k in x))


def _is_traced(*xs) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(xs))


def _input_axes(info: LayerInfo, kwargs: dict) -> tuple[int, int]:
    """``(batch_axis, channel_axis)`` of raw inputs: the call's keywords, else the layer's."""
    default = info.input_axes or (0, -1)
    axes = tuple(kwargs.get(key, d) if kwargs.get(key) is not None else d
                 for key, d in zip(("batch_axis", "channel_axis"), default))
    for key, v in zip(("batch_axis", "channel_axis"), axes):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"kernel_fn({key}={v!r}): expected an int axis of the inputs.")
    return int(axes[0]), int(axes[1])


def _default_axes(k: Kernel) -> bool:
    ndim = len(k.shape1)
    return k.batch_axis % ndim == 0 and k.channel_axis % ndim == ndim - 1


def _check_default_axes(k, name: str):
    for kk in (k if isinstance(k, (list, tuple)) else [k]):
        if isinstance(kk, Kernel) and not _default_axes(kk):
            raise ValueError(
                f"{name}: its input has batch_axis={kk.batch_axis} and channel_axis="
                f"{kk.channel_axis} (inputs of shape {tuple(kk.shape1)}), but {name} needs the "
                f"batch first and channels last. Only elementwise layers and Dense accept other "
                f"axes; move the axes of the inputs with jnp.moveaxis.")


def _normalized_axes(out, k_in, keep_rank_axes: bool = False):
    """neural-tangents' convention: non-negative axes; a layer that changes the number of axes
    (Flatten, pooling to a vector) leaves the default layout (layers built by `_layouts` set
    the output's axes themselves: ``make_layer(..., sets_axes=True)``)."""
    if not isinstance(out, Kernel):
        return out
    ndim = len(out.shape1)
    same = keep_rank_axes or (isinstance(k_in, Kernel) and len(k_in.shape1) == ndim)
    axes = ((out.batch_axis % ndim, out.channel_axis % ndim) if same else (0, ndim - 1))
    if axes == (out.batch_axis, out.channel_axis):
        return out  # the same object: layers recognise copies of one branch by identity
    return out.replace(batch_axis=axes[0], channel_axis=axes[1])


def _check_keywords(kwargs):
    unknown = [k for k in kwargs if k not in KERNEL_FN_KEYWORDS]
    if unknown:
        raise TypeError(
            f"kernel_fn(): unexpected keyword argument {unknown[0]!r}. kernel_fn(x1, x2=None, "
            f"get=None, *, diagonal_batch=None, diagonal_spatial=None, pattern=None, "
            f"mask_constant=None) takes no other keywords; check the spelling.")
    _masking.check_mask_constant(kwargs.get("mask_constant"))


# ----------------------------------------------------------------------------------------------
# `get`


def canonicalize_get(get) -> tuple[str, ...] | None:
    """Validates ``get`` and returns it as a tuple of names (``None`` for the whole Kernel)."""
    return parse_get(get, GET_NAMES, "kernel_fn")


def select(out, get):
    """Picks the requested fields out of a Kernel (or a list of them) according to ``get``."""
    return _select(out, get, "AnalyticKernel")


# ----------------------------------------------------------------------------------------------
# inputs -> Kernel


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, jax.Array)) or hasattr(x, "__jax_array__")


def as_kernel(x1, x2=None, *, diagonal_batch=True, diagonal_spatial=False, compute_ntk=True,
              axes=(0, -1), mask_constant=None):
    """Returns ``x1`` if it is already a Kernel, else the Kernel of the inputs ``x1``, ``x2``
    (whose batch and channel axes are ``axes``).

    Lists of inputs (for multi-input layers) give lists of Kernels.
    """
    if isinstance(x1, Kernel):
        if x2 is not None:
            raise ValueError("kernel_fn(x1=Kernel, x2=...): when x1 is a Kernel it already holds "
                             "both batches; pass x2=None.")
        return x1
    if isinstance(x1, (list, tuple)):
        if all(isinstance(x, Kernel) for x in x1):
            return list(x1)
        x2s = [None] * len(x1) if x2 is None else x2
        if not isinstance(x2s, (list, tuple)) or len(x2s) != len(x1):
            raise ValueError(f"kernel_fn: x1 is a list of {len(x1)} inputs, so x2 must be None "
                             f"or a list of as many inputs.")
        return [as_kernel(a, b, diagonal_batch=diagonal_batch, diagonal_spatial=diagonal_spatial,
                          compute_ntk=compute_ntk, axes=axes, mask_constant=mask_constant)
                for a, b in zip(x1, x2s)]
    return inputs_to_kernel(x1, x2, diagonal_batch=diagonal_batch,
                            diagonal_spatial=diagonal_spatial, compute_ntk=compute_ntk, axes=axes,
                            mask_constant=mask_constant)


def _float(x, name):
    if not _is_array(x):
        if isinstance(x, (int, float, str)) or x is None:
            raise TypeError(f"kernel_fn({name}): expected an array of shape (N, ..., features), "
                            f"got {type(x).__name__}.")
        x = np.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"kernel_fn({name}): got complex inputs ({x.dtype}); the kernels are "
                        f"those of real networks. Pass real features, e.g. "
                        f"jnp.concatenate([x.real, x.imag], axis=-1).")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
            or jnp.issubdtype(x.dtype, jnp.bool_)):
        raise TypeError(f"kernel_fn({name}): expected numbers, got an array of dtype {x.dtype}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.asarray(x, dtype=jnp.result_type(float))
    return jnp.asarray(x)


def _check_inputs(x1, x2):
    if x1.ndim < 2:
        raise ValueError(
            f"kernel_fn(x1): inputs need a batch axis and a feature axis, shape (N, ..., d); got "
            f"shape {x1.shape}. Use x[None] for a single input or x[:, None] for scalar inputs."
        )
    if x1.shape[-1] == 0:
        raise ValueError(f"kernel_fn(x1): inputs of shape {x1.shape} have no features (the last "
                         f"axis is empty), so their kernel is undefined; give each input at "
                         f"least one feature.")
    if x2 is not None and (x2.ndim != x1.ndim or x2.shape[1:] != x1.shape[1:]):
        raise ValueError(
            f"kernel_fn(x1, x2): x1 has shape {x1.shape} and x2 has shape {x2.shape}; they may "
            f"differ only in the batch (first) axis. Pass inputs with the same features."
        )


_spatial_letters = _layout.spatial_letters


def gram(x1, x2, *, diagonal_spatial: bool, same_batch: bool = False):
    """Channel-averaged second moments of inputs, in the `Kernel` layout.

    ``same_batch=True`` keeps only each input with itself (the ``diagonal_batch`` layout of cov1).
    """
    n_spatial = x1.ndim - 2
    lo, up = _spatial_letters(n_spatial)
    b2 = "n" if same_batch else "m"
    if diagonal_spatial:
        spec = f"n{lo}c,{b2}{lo}c->{'n' if same_batch else 'nm'}{lo}"
    else:
        pairs = "".join(a + b for a, b in zip(lo, up))
        spec = f"n{lo}c,{b2}{up}c->{'n' if same_batch else 'nm'}{pairs}"
    return jnp.einsum(spec, x1, x2, precision=_HIGHEST) / x1.shape[-1]


def _fingerprints(x):
    """Two 32-bit hashes of each input's bits (``-0.0`` counted as ``0.0``): equal inputs have
    equal fingerprints, and different ones collide with probability about 2**-64."""
    x = jnp.where(x == 0, jnp.zeros((), x.dtype), x).reshape(x.shape[0], -1)
    if x.dtype.itemsize < 4:
        x = x.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(x.shape[0], -1)
    # mix each word first (the "lowbias32" integer hash): a plain weighted sum of the words
    # cancels sign bits in pairs (0x80000000 * odd == 0x80000000 mod 2**32), so inputs that
    # differ by an even number of sign flips, such as +-1 data, would collide
    bits = (bits ^ (bits >> 16)) * jnp.uint32(0x7FEB352D)
    bits = (bits ^ (bits >> 15)) * jnp.uint32(0x846CA68B)
    bits = bits ^ (bits >> 16)
    rng = np.random.default_rng(0x1F1)
    mult = rng.integers(1, 2**32, size=(2, bits.shape[1]), dtype=np.uint64) | 1
    mult = jnp.asarray(mult.astype(np.uint32))
    return [jnp.sum(bits * m[None], axis=1, dtype=jnp.uint32) for m in mult]


def _identical_pairs_exact(nngp, x1, x2, cov1):
    """``nngp`` with the pairs of bitwise-identical inputs (a test point that is also a
    training point, a copy of x1 passed as x2) set to the covariance of the input with itself,
    so they are exactly what ``x2=None`` gives: the two contractions round differently, and
    discontinuous or chaotic maps amplify that difference layer after layer."""
    (a1, b1) = _fingerprints(x1)
    (a2, b2) = (a1, b1) if x2 is x1 else _fingerprints(x2)
    same = (a1[:, None] == a2[None, :]) & (b1[:, None] == b2[None, :])
    if cov1.ndim == nngp.ndim:  # diagonal_batch=False: cov1 is (N1, N1, ...)
        cov1 = _layout.batch_diagonal(cov1)
    same = same.reshape(same.shape + (1,) * (nngp.ndim - 2))
    # the derivatives stay those of the contraction in x1 and x2 (not of cov1, a function of
    # x1 alone), so kernels are differentiable in their inputs at coincident points
    return value_with_derivatives_of(jnp.where(same, cov1[:, None], nngp), nngp)


def inputs_to_kernel(x1, x2=None, *, diagonal_batch=True, diagonal_spatial=False,
                     compute_ntk=True, axes=(0, -1), mask_constant=None) -> Kernel:
    """The Kernel of raw inputs: channel-averaged inner products, and a zero NTK.

    With ``mask_constant``, the entries equal to it (NaN entries if it is NaN) are replaced by
    zeros and recorded in ``mask1``/``mask2`` (in the inputs' own layout).

    ``axes = (batch_axis, channel_axis)`` of the inputs; the kernel's arrays are always
    batch-first with the other (spatial) axes in their order, and the Kernel records the axes.
    """
    x1_is_x2 = x2 is None or x2 is x1
    x1 = _float(x1, "x1")
    x2 = None if x1_is_x2 else _float(x2, "x2")
    raw_shape1 = tuple(x1.shape)
    raw_shape2 = raw_shape1 if x2 is None else tuple(x2.shape)
    x1, mask1 = _masking.masked_input(x1, mask_constant)
    x2, mask2 = _masking.masked_input(x2, mask_constant)
    batch_axis, channel_axis = _check_axes(axes, x1.ndim)
    if x1.ndim >= 2 and (batch_axis, channel_axis) != (0, x1.ndim - 1):
        x1 = jnp.moveaxis(x1, (batch_axis, channel_axis), (0, -1))
        x2 = None if x2 is None else jnp.moveaxis(x2, (batch_axis, channel_axis), (0, -1))
    _check_inputs(x1, x2)
    if x2 is not None:
        dtype = jnp.promote_types(x1.dtype, x2.dtype)
        x1, x2 = x1.astype(dtype), x2.astype(dtype)

    def cov(x):
        return gram(x, x, diagonal_spatial=diagonal_spatial, same_batch=diagonal_batch)

    nngp = gram(x1, x1 if x2 is None else x2, diagonal_spatial=diagonal_spatial)
    # pairs of identical inputs (an input with itself, duplicates, a copy of x1 passed as x2)
    # get cov1 itself, so that they have correlation exactly 1 (two contractions round
    # differently, which discontinuous activations such as Sign amplify layer after layer) and
    # x2 = None and x2 = a copy of x1 give the same bits in any layout
    cov1 = cov(x1)
    nngp = _identical_pairs_exact(nngp, x1, x1 if x2 is None else x2, cov1)
    if x2 is None and not diagonal_batch:
        cov1 = nngp
    return Kernel(
        nngp=nngp,
        ntk=jnp.zeros_like(nngp) if compute_ntk else None,
        cov1=cov1,
        cov2=None if x2 is None else cov(x2),
        shape1=raw_shape1,
        shape2=raw_shape2,
        x1_is_x2=x1_is_x2,
        is_gaussian=False,
        diagonal_batch=diagonal_batch,
        diagonal_spatial=diagonal_spatial,
        batch_axis=batch_axis,
        channel_axis=channel_axis,
        mask1=mask1,
        mask2=mask2,
    )


def _check_axes(axes, ndim: int) -> tuple[int, int]:
    batch_axis, channel_axis = axes
    for key, v in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
        if not -max(ndim, 2) <= v < max(ndim, 2):
            raise ValueError(f"kernel_fn({key}={v}): the inputs have {ndim} axes; give an axis "
                             f"in [-{ndim}, {ndim}).")
    if ndim >= 2 and batch_axis % ndim == channel_axis % ndim:
        raise ValueError(f"kernel_fn(batch_axis={batch_axis}, channel_axis={channel_axis}): the "
                         f"batch and channel axes must differ.")
    return (batch_axis % ndim, channel_axis % ndim) if ndim >= 2 else (0, -1)


# ----------------------------------------------------------------------------------------------
# argument checks shared by the layer factories


def check_kernel_input(k: Any, layer: str, *, gaussian: bool = False) -> Kernel:
    """Checks a layer receives one Kernel (not a list) and, if asked, Gaussian activations."""
    if isinstance(k, (list, tuple)):
        raise ValueError(f"{layer}: got {len(k)} inputs; this layer takes one. Combine branches "
                         f"first with FanInSum(), FanInConcat() or FanInProd().")
    if gaussian and not k.is_gaussian:
        raise ValueError(
            f"{layer}: its input is not Gaussian, so the infinite-width kernel has no closed form "
            f"here (two nonlinearities in a row, or a nonlinearity applied to raw inputs). Put an "
            f"affine layer such as Dense or Conv before it."
        )
    return k


def check_shape(input_shape: Sequence[int], layer: str, min_ndim: int = 2):
    if len(input_shape) < min_ndim:
        raise ValueError(f"{layer}: input_shape {tuple(input_shape)} needs at least {min_ndim} "
                         f"axes (batch, ..., features).")
