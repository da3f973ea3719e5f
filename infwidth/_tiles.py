"""Tile geometry: how an ``N1 x N2`` kernel is cut into tiles, shared by automatic tiling
(`infwidth.stax.tile_memory`) and `infwidth.batch`.

* `tile_starts`: offsets of tiles of side ``b`` covering ``0..n-1``. With ``overlap=True`` the
  last tile ends at ``n`` and may overlap the one before (no padding, every tile the same
  shape); with ``overlap=False`` tiles start at multiples of ``b`` and the inputs are padded to
  ``len(starts) * b`` rows (`padded_rows`).
* `tile_pairs`: the (row, column) tiles to evaluate: all of them, or for a symmetric kernel
  (``x2=None``) those on and above the diagonal, whose mirror images fill the rest.

>>> tile_starts(10, 4).tolist(), tile_starts(10, 4, overlap=False).tolist()
([0, 4, 6], [0, 4, 8])
>>> tile_pairs(3, 3, symmetric=True)
[(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
"""

from __future__ import annotations

import numpy as np


def tile_starts(n: int, b: int, *, overlap: bool = True) -> np.ndarray:
    """Row offsets of tiles of side ``b`` over ``n`` rows (see the module docstring)."""
    starts = np.arange(0, n, b)
    if overlap:
        starts = np.minimum(starts, n - b)
    return starts.astype(np.int32)


def padded_rows(n: int, b: int) -> int:
    """Rows after padding ``n`` to whole tiles of side ``b``."""
    return -(-n // b) * b


def tile_pairs(n_rows: int, n_cols: int, *, symmetric: bool) -> list[tuple[int, int]]:
    """Tiles ``(i, j)`` to evaluate, row by row; only ``j >= i`` when ``symmetric``."""
    return [(i, j) for i in range(n_rows) for j in range(i if symmetric else 0, n_cols)]


def even_side(n: int, b: int) -> int:
    """The side of at most ``b`` that cuts ``n`` into as few, as even tiles as side ``b`` does."""
    return -(-n // -(-n // b))
