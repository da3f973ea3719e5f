"""The small axis helpers of neural-tangents' ``_src.utils.utils`` that its tests call (see
`infwidth._src`), written from their documented behaviour."""

from __future__ import annotations

import jax.numpy as jnp

from ...stax.dot_general import axis_after_dot

__all__ = ["axis_after_dot", "zip_flat", "zip_axes", "unzip_axes", "canonicalize_idx", "mask"]


def zip_flat(x, y) -> tuple:
    """``(x0, y0, x1, y1, ...)``."""
    return tuple(c for pair in zip(x, y) for c in pair)


def _zip_perm(ndim: int, start: int, end: int | None, unzip: bool) -> list[int]:
    end = ndim if end is None else end % (ndim + 1) if end < 0 else end
    n = (end - start) // 2
    if (end - start) % 2:
        raise ValueError(f"zip_axes: {end - start} axes between {start} and {end}; expected an "
                         f"even number.")
    first, second = list(range(start, start + n)), list(range(start + n, end))
    zipped = list(zip_flat(first, second))
    middle = ([start + zipped.index(i) for i in range(start, end)] if unzip else zipped)
    return list(range(start)) + middle + list(range(end, ndim))


def zip_axes(x, start_axis: int = 0, end_axis: int | None = None):
    """Interleaves axes: ``[..., X, Y, Z, X', Y', Z', ...] -> [..., X, X', Y, Y', Z, Z', ...]``
    (the layout of infwidth's position pairs)."""
    return jnp.transpose(x, _zip_perm(x.ndim, start_axis, end_axis, unzip=False))


def unzip_axes(x, start_axis: int = 0, end_axis: int | None = None):
    """The inverse of `zip_axes`."""
    return jnp.transpose(x, _zip_perm(x.ndim, start_axis, end_axis, unzip=True))


def canonicalize_idx(idx, ndim: int) -> tuple:
    """An index expression as a tuple of ``ndim`` entries (``Ellipsis`` expanded, trailing
    ``slice(None)`` added)."""
    if idx is Ellipsis or isinstance(idx, (int, slice)):
        idx = (idx,) + (slice(None),) * (ndim - 1)
    idx = tuple(idx)
    for i, s in enumerate(idx):
        if s is Ellipsis:
            idx = idx[:i] + (slice(None),) * (ndim - len(idx) + 1) + idx[i + 1:]
            break
    return idx + (slice(None),) * (ndim - len(idx))


def mask(x, mask_mat):
    """``x`` with zeros where ``mask_mat`` is True (``None`` passes through)."""
    if x is None or mask_mat is None:
        return x
    return jnp.where(mask_mat, jnp.zeros((), x.dtype), x)
