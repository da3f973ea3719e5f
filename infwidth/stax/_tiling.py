"""Automatic tiling of ``kernel_fn`` over pairs of inputs, so that memory is bounded by a tile.

Every layer's kernel of a pair of inputs depends only on those two inputs (and on each input's
covariance with itself), so the ``N1 x N2`` kernel can be computed tile by tile. When the
inputs' kernel arrays would exceed :func:`tile_memory` bytes (default 8 MiB per array, which
six images of 16x16 pixels exceed with their ``(HW)^2`` position-pair covariances), a
``kernel_fn`` called on arrays computes tiles of about that size in a loop
(``lax.fori_loop``) and writes them into the result in place, so the intermediate arrays of
deep networks never hold more than one tile. With ``x2=None`` only the tiles on and above the
diagonal are computed; the others are their mirror images (batch axes swapped, and each pair
of spatial axes ``(H, H')``), and the diagonal tiles use the ``x2=None`` path, so an input
paired with itself has correlation exactly 1. The numbers are those of the untiled evaluation
up to rounding; time drops too (half the pairs, and tiles that stay in cache).

For finer control (several devices, host memory, progress) use :func:`infwidth.batch`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._tiles import even_side, tile_pairs, tile_starts
from ..kernel import Kernel
from . import _layout

_TILE_BYTES = [2**23]  # bytes per kernel array above which calls are tiled (tile_memory)
_MIN_SIDE = 2  # smallest tile side: off-diagonal tiles also evaluate 2 b self-covariances

def tile_memory(nbytes: int | None = None) -> int | None:
    """Returns (and with an argument, sets) the size in bytes of one kernel array above which
    ``kernel_fn`` evaluates in tiles; ``0`` turns tiling off.

    >>> from infwidth import stax
    >>> old = stax.tile_memory()
    >>> stax.tile_memory(2**30)  # tile only above 1 GiB per array
    1073741824
    >>> _ = stax.tile_memory(old)
    """
    if nbytes is not None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
            raise ValueError(f"tile_memory(nbytes={nbytes!r}): nbytes must be a non-negative "
                             f"integer (bytes per kernel array; 0 turns tiling off).")
        _TILE_BYTES[0] = int(nbytes)
    return _TILE_BYTES[0]


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, jax.Array))


def _pair_entries(x1, diagonal_spatial: bool) -> int:
    spatial = int(np.prod(x1.shape[1:-1], dtype=np.int64))
    return spatial ** (1 if diagonal_spatial else 2)


def may_tile(x1, x2, diagonal_batch: bool, diagonal_spatial: bool, kwargs: dict) -> bool:
    """Whether the inputs' kernel arrays exceed the budget (and the call can be tiled: arrays
    as inputs, ``diagonal_batch=True`` and no array-valued keyword arguments)."""
    budget = _TILE_BYTES[0]
    if (not budget or not diagonal_batch or not _is_array(x1) or x1.ndim < 2
            or not (x2 is None or _is_array(x2))
            or any(jax.tree_util.tree_leaves(v) for v in kwargs.values()
                   if not isinstance(v, (str, bool, int, float, type(None))))):
        return False
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    itemsize = max(jnp.dtype(x1.dtype).itemsize, 4)
    return x1.shape[0] * n2 * _pair_entries(x1, diagonal_spatial) * itemsize > budget


def tile_sides(x1, x2, out) -> tuple[int, int] | None:
    """``(b1, b2)``, the rows and columns of a tile, or ``None`` to evaluate in one piece.
    ``out`` is the abstract (``jax.eval_shape``) result of the untiled evaluation."""
    if not isinstance(out, Kernel) or not out.diagonal_batch:
        return None
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    per_pair = max(_pair_entries(x1, out.diagonal_spatial),
                   int(np.prod(out.nngp.shape[2:], dtype=np.int64)), 1)
    pair_bytes = per_pair * jnp.dtype(out.nngp.dtype).itemsize
    budget = _TILE_BYTES[0]
    if not budget or n1 * n2 * pair_bytes <= budget:
        return None
    # tiles of at least _MIN_SIDE x _MIN_SIDE: a b x b tile off the diagonal also evaluates
    # the 2 b self-covariances of its inputs, so tiny tiles would repeat work
    pairs = max(budget // pair_bytes, _MIN_SIDE**2)
    b = math.isqrt(pairs)
    if x2 is None:
        b = even_side(n1, b)  # the same number of tiles, as even as possible
        return (b, b) if b < n1 else None
    b2 = min(n2, b)
    b1 = min(n1, max(1, pairs // b2))
    b1, b2 = even_side(n1, b1), even_side(n2, b2)
    return None if (b1, b2) == (n1, n2) else (b1, b2)


def _mirror_perm(k: Kernel) -> tuple[int, ...]:
    return _layout.mirror_perm(len(k.shape1) - 2, k.diagonal_spatial)


def _put(full, tile, starts):
    zero = jnp.zeros((), jnp.int32)
    index = tuple(jnp.asarray(i, jnp.int32) for i in starts) + (zero,) * (full.ndim - len(starts))
    return jax.lax.dynamic_update_slice(full, tile.astype(full.dtype), index)


def tiled(untiled, x1, x2, out: Kernel, sides) -> Kernel:
    """Evaluates ``untiled(a, c) -> Kernel`` tile by tile into arrays shaped like ``out``."""
    b1, b2 = sides
    full = {f: None if getattr(out, f) is None else jnp.zeros(getattr(out, f).shape,
                                                                getattr(out, f).dtype)
            for f in ("nngp", "ntk", "cov1", "cov2", "mask1", "mask2")}
    cut = lambda x, start, b: jax.lax.dynamic_slice_in_dim(x, start, b, axis=0)

    def write(acc, k: Kernel, r, c, mirror: bool):
        acc = dict(acc)
        for f in ("nngp", "ntk"):
            if acc[f] is not None:
                acc[f] = _put(acc[f], getattr(k, f), (r, c))
                if mirror:
                    acc[f] = _put(acc[f], jnp.transpose(getattr(k, f), _mirror_perm(k)), (c, r))
        acc["cov1"] = _put(acc["cov1"], k.cov1, (r,))
        if acc["cov2"] is not None:
            acc["cov2"] = _put(acc["cov2"], k.cov2, (c,))
        # masks of masked inputs (batch first, as every tiled call): rows of x1 and of x2
        if acc["mask1"] is not None:
            acc["mask1"] = _put(acc["mask1"], k.mask1, (r,))
        if acc["mask2"] is not None:
            acc["mask2"] = _put(acc["mask2"], k.mask2, (c,))
        return acc

    if x2 is None:
        starts = tile_starts(x1.shape[0], b1)
        upper = [(i, j) for i, j in tile_pairs(len(starts), len(starts), symmetric=True) if i < j]
        rows = jnp.asarray(starts[[i for i, _ in upper]], jnp.int32)
        cols = jnp.asarray(starts[[j for _, j in upper]], jnp.int32)
        # off-diagonal tiles first: the diagonal tiles then overwrite every pair of an input
        # with itself (overlapping last tiles may contain some) with the x2=None evaluation
        full = jax.lax.fori_loop(0, len(rows), lambda t, acc: write(
            acc, untiled(cut(x1, rows[t], b1), cut(x1, cols[t], b1)), rows[t], cols[t], True),
            full)
        diag = jnp.asarray(starts)
        full = jax.lax.fori_loop(0, len(starts), lambda t, acc: write(
            acc, untiled(cut(x1, diag[t], b1), None), diag[t], diag[t], False), full)
    else:
        s1, s2 = tile_starts(x1.shape[0], b1), tile_starts(x2.shape[0], b2)
        rows = jnp.asarray(np.repeat(s1, len(s2)))
        cols = jnp.asarray(np.tile(s2, len(s1)))
        full = jax.lax.fori_loop(0, len(s1) * len(s2), lambda t, acc: write(
            acc, untiled(cut(x1, rows[t], b1), cut(x2, cols[t], b2)), rows[t], cols[t], False),
            full)
    return out.replace(**full)
