"""The layer triple and the wrapper that gives every `kernel_fn` the same calling convention.

A layer is built by :func:`make_layer` from four pieces:

* ``init_fn(key, input_shape) -> (output_shape, params)``
* ``apply_fn(params, x, **kwargs) -> y``
* ``transform(kernel, **kwargs) -> kernel``: the infinite-width map of the layer on `Kernel`s
* ``shape_fn(input_shape) -> output_shape`` (``None`` for combinators, whose sub-layers
  update the shapes themselves)

and the public ``kernel_fn(x1, x2=None, get=None, *, diagonal_batch=True,
diagonal_spatial=False, **kwargs)`` accepts arrays (or lists of arrays for multi-input layers)
or a `Kernel` to continue a recursion.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..kernel import DATA_FIELDS, STATIC_FIELDS, Kernel
from . import _tiling

GET_NAMES = DATA_FIELDS + STATIC_FIELDS
_HIGHEST = jax.lax.Precision.HIGHEST


class Layer(NamedTuple):
    """A layer: the finite network (``init_fn``, ``apply_fn``) and its infinite-width limit."""

    init_fn: Callable
    apply_fn: Callable
    kernel_fn: Callable


def make_layer(name: str, init_fn: Callable, apply_fn: Callable, transform: Callable,
               shape_fn: Callable | None) -> Layer:
    """Assembles a `Layer` whose ``kernel_fn`` has the standard calling convention."""

    def kernel_fn(x1, x2=None, get=None, *, diagonal_batch: bool = True,
                  diagonal_spatial: bool = False, **kwargs):
        names = canonicalize_get(get)
        compute_ntk = names is None or "ntk" in names

        def untiled(a, b):
            k = as_kernel(a, b, diagonal_batch=diagonal_batch,
                          diagonal_spatial=diagonal_spatial, compute_ntk=compute_ntk)
            out = transform(k, **kwargs)
            if shape_fn is not None:
                out = out.replace(shape1=shape_fn(out.shape1), shape2=shape_fn(out.shape2))
            return out

        if _tiling.may_tile(x1, x2, diagonal_batch, diagonal_spatial, kwargs):
            # large inputs: evaluate tile by tile (errors are raised here, with full shapes)
            x2t = None if x2 is x1 else x2  # the same inputs twice: the symmetric evaluation
            abstract, separable = _tiling.abstract_evaluation(untiled, x1, x2t)
            sides = _tiling.tile_sides(x1, x2t, abstract) if separable else None
            if sides is not None:
                return select(_tiling.tiled(untiled, x1, x2t, abstract, sides), get)
        return select(untiled(x1, x2), get)

    kernel_fn.__name__ = f"{name}.kernel_fn"
    kernel_fn.__qualname__ = kernel_fn.__name__
    return Layer(init_fn, apply_fn, kernel_fn)


# ----------------------------------------------------------------------------------------------
# `get`


@functools.cache
def _namedtuple(names: tuple[str, ...]):
    return collections.namedtuple("Kernel", names)


def canonicalize_get(get) -> tuple[str, ...] | None:
    """Validates ``get`` and returns it as a tuple of names (``None`` for the whole Kernel)."""
    if get is None:
        return None
    names = (get,) if isinstance(get, str) else get
    if not isinstance(names, (tuple, list)) or not names:
        raise TypeError(
            f"kernel_fn(get={get!r}): get must be None (the whole Kernel), a name such as "
            f"'ntk', or a non-empty tuple of names such as ('nngp', 'ntk')."
        )
    for n in names:
        if n not in GET_NAMES:
            raise ValueError(
                f"kernel_fn(get={get!r}): unknown kernel {n!r}; get must be made of "
                f"{', '.join(repr(g) for g in GET_NAMES)}."
            )
    return tuple(names)


def select(out, get):
    """Picks the requested fields out of a Kernel (or a list of them) according to ``get``."""
    if isinstance(out, (list, tuple)):
        return type(out)(select(o, get) for o in out)
    if get is None:
        return out
    if isinstance(get, str):
        return getattr(out, get)
    return _namedtuple(tuple(get))(*(getattr(out, n) for n in get))


# ----------------------------------------------------------------------------------------------
# inputs -> Kernel


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, jax.Array)) or hasattr(x, "__jax_array__")


def as_kernel(x1, x2=None, *, diagonal_batch=True, diagonal_spatial=False, compute_ntk=True):
    """Returns ``x1`` if it is already a Kernel, else the Kernel of the inputs ``x1``, ``x2``.

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
                          compute_ntk=compute_ntk) for a, b in zip(x1, x2s)]
    return inputs_to_kernel(x1, x2, diagonal_batch=diagonal_batch,
                            diagonal_spatial=diagonal_spatial, compute_ntk=compute_ntk)


def _float(x, name):
    if not _is_array(x):
        if isinstance(x, (int, float)) or x is None:
            raise TypeError(f"kernel_fn({name}): expected an array of shape (N, ..., features), "
                            f"got {type(x).__name__}.")
        x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.asarray(x, dtype=jnp.result_type(float))
    return jnp.asarray(x)


def _check_inputs(x1, x2):
    if x1.ndim < 2:
        raise ValueError(
            f"kernel_fn(x1): inputs need a batch axis and a feature axis, shape (N, ..., d); got "
            f"shape {x1.shape}. Use x[None] for a single input or x[:, None] for scalar inputs."
        )
    if x2 is not None and (x2.ndim != x1.ndim or x2.shape[1:] != x1.shape[1:]):
        raise ValueError(
            f"kernel_fn(x1, x2): x1 has shape {x1.shape} and x2 has shape {x2.shape}; they may "
            f"differ only in the batch (first) axis. Pass inputs with the same features."
        )


def _spatial_letters(n_spatial):
    return "hwdefgijkl"[:n_spatial], "HWDEFGIJKL"[:n_spatial]


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


def inputs_to_kernel(x1, x2=None, *, diagonal_batch=True, diagonal_spatial=False,
                     compute_ntk=True) -> Kernel:
    """The Kernel of raw inputs: channel-averaged inner products, and a zero NTK."""
    x1_is_x2 = x2 is None or x2 is x1
    x1 = _float(x1, "x1")
    x2 = None if x1_is_x2 else _float(x2, "x2")
    _check_inputs(x1, x2)
    if x2 is not None:
        dtype = jnp.promote_types(x1.dtype, x2.dtype)
        x1, x2 = x1.astype(dtype), x2.astype(dtype)

    def cov(x):
        return gram(x, x, diagonal_spatial=diagonal_spatial, same_batch=diagonal_batch)

    nngp = gram(x1, x1 if x2 is None else x2, diagonal_spatial=diagonal_spatial)
    if x2 is None:
        # cov1 is then the batch diagonal of nngp: take it from nngp, so that an input paired
        # with itself has correlation exactly 1 (a separate contraction rounds differently,
        # which discontinuous activations such as Sign amplify layer after layer).
        cov1 = jnp.moveaxis(jnp.diagonal(nngp, axis1=0, axis2=1), -1, 0) if diagonal_batch else nngp
    else:
        cov1 = cov(x1)
    return Kernel(
        nngp=nngp,
        ntk=jnp.zeros_like(nngp) if compute_ntk else None,
        cov1=cov1,
        cov2=None if x2 is None else cov(x2),
        shape1=tuple(x1.shape),
        shape2=tuple(x1.shape if x2 is None else x2.shape),
        x1_is_x2=x1_is_x2,
        is_gaussian=False,
        diagonal_batch=diagonal_batch,
        diagonal_spatial=diagonal_spatial,
    )


# ----------------------------------------------------------------------------------------------
# argument checks shared by the layer factories


def check_positive_int(value, arg: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer}({arg}={value!r}): {arg} must be a positive integer.")
    return int(value)


def check_nonnegative(value, arg: str, layer: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, jax.core.Tracer):  # hyperparameters may be traced for jax.grad
        return value
    try:
        ok = float(value) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        none = " or None" if allow_none else ""
        raise ValueError(f"{layer}({arg}={value!r}): {arg} must be a non-negative number{none}.")
    return value


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
