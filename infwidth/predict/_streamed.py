"""Streamed, sharded tile computations for `infwidth.predict.kernel_regression`.

Inputs are cut into row tiles of ``tile_size`` (the geometry of `infwidth._tiles`), padded with
copies of the last row to whole tiles and to a multiple of the devices of a one-axis mesh
(axis ``'tiles'``, the one `infwidth.batch` uses); each device takes its share of the tiles
through `jax.shard_map`. After ``jax.distributed.initialize()`` the default mesh holds the
devices of every process: every process passes the same inputs (arrays or memory maps; only
the tiles of its own devices are read) and receives the same results.

* `kernel_products`: ``K(rows, cols) @ v`` with kernel tiles made on the fly, never more than
  one ``tile_size x tile_size`` tile per device;
* `kernel_columns`: ``K(rows, landmarks)`` and the diagonal ``K(x_i, x_i)``;
* `feature_moments`: ``Phi^T Phi`` and ``Phi^T y`` summed over tiles (and devices), in chunks
  of tiles, so neither ``N x N`` nor ``N x n_features`` is ever held.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .._tiles import padded_rows
from ..batching import AXIS, _check_mesh, _fetch, _make_mesh, _put

_HIGHEST = jax.lax.Precision.HIGHEST


def default_mesh(mesh=None):
    """``mesh`` (checked) or a one-axis mesh over every device of every process."""
    if mesh is None:
        return _make_mesh(None, -1)
    _check_mesh(mesh)
    return mesh


def _n_dev(mesh) -> int:
    return int(mesh.shape[AXIS])


def tile_layout(n: int, tile_size: int, mesh) -> tuple[int, int]:
    """``(tile side, number of tiles)``: whole tiles, as many as a multiple of the devices."""
    b = min(tile_size, n)
    n_tiles = padded_rows(padded_rows(n, b) // b, _n_dev(mesh))
    return b, n_tiles


def _tiles_of(x, start: int, n_tiles: int, b: int):
    """Rows ``start .. start + n_tiles * b`` of ``x`` (past the end: copies of the last row)
    as ``(n_tiles, b, ...)`` numpy, reading only those rows (``x`` may be a memory map)."""
    stop = min(start + n_tiles * b, x.shape[0])
    part = np.asarray(x[start:stop])
    if part.shape[0] < n_tiles * b:
        pad = np.repeat(part[-1:] if len(part) else np.asarray(x[-1:]),
                        n_tiles * b - part.shape[0], axis=0)
        part = np.concatenate([part, pad])
    return part.reshape((n_tiles, b) + part.shape[1:])


def _mask(start: int, n_tiles: int, b: int, n: int, dtype):
    rows = start + np.arange(n_tiles * b)
    return (rows < n).astype(dtype).reshape(n_tiles, b)


def _shard_map(body, mesh, in_specs, out_specs):
    specs = dict(mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    if hasattr(jax, "shard_map"):
        return jax.shard_map(body, check_vma=False, **specs)
    from jax.experimental.shard_map import shard_map  # JAX < 0.7

    return shard_map(body, check_rep=False, **specs)


def _split(mesh, host):
    return _put(host, NamedSharding(mesh, P(AXIS)))


def _whole(mesh, host):
    return _put(np.asarray(host), NamedSharding(mesh, P()))


def _rows(out, n):
    host = _fetch(out)
    return host.reshape((-1,) + host.shape[2:])[:n]


# ----------------------------------------------------------------------------------------------
# kernel tiles


def kernel_products(kernel_fn, get, rows, cols, v, *, tile_size, mesh):
    """``K(rows, cols) @ v`` (``v`` of shape ``(len(cols), k)``), over tiles on the mesh."""
    return make_products(kernel_fn, get, cols, tile_size=tile_size, mesh=mesh)(rows, v)


def make_products(kernel_fn, get, cols, *, tile_size, mesh):
    """``fn(rows, v) = K(rows, cols) @ v``, with ``cols`` placed on every device once and the
    compiled program reused by every call (the matrix-vector products of CG)."""
    n_cols = cols.shape[0]
    b = min(tile_size, n_cols)
    n_col_tiles = padded_rows(n_cols, b) // b
    col_tiles = _whole(mesh, _tiles_of(cols, 0, n_col_tiles, b))
    fn = _products_program(kernel_fn, get, mesh)

    def products(rows, v):
        v = np.asarray(v)
        v_pad = np.zeros((n_col_tiles * b,) + v.shape[1:], v.dtype)
        v_pad[:n_cols] = v  # padded columns carry zero weight
        rb, n_row_tiles = tile_layout(rows.shape[0], tile_size, mesh)
        out = fn(_split(mesh, _tiles_of(rows, 0, n_row_tiles, rb)), col_tiles,
                 _whole(mesh, v_pad.reshape((n_col_tiles, b) + v.shape[1:])))
        return _rows(out, rows.shape[0])

    return products


@functools.lru_cache(maxsize=32)
def _products_program(kernel_fn, get, mesh):
    """The compiled tile loop of `make_products` (one per kernel_fn, get and mesh)."""

    def body(row_tiles, col_tiles, v_tiles):
        def one_row(xr):
            def one_col(acc, xv):
                k = kernel_fn(xr, xv[0], get)
                return acc + jnp.matmul(k, xv[1], precision=_HIGHEST), None

            init = jnp.zeros((xr.shape[0], v_tiles.shape[-1]), v_tiles.dtype)
            return jax.lax.scan(one_col, init, (col_tiles, v_tiles))[0]

        return jax.lax.map(one_row, row_tiles)

    return jax.jit(_shard_map(body, mesh, (P(AXIS), P(), P()), P(AXIS)))


@functools.lru_cache(maxsize=32)
def _columns_program(kernel_fn, get, mesh):
    def body(row_tiles, marks):
        def one(xr):
            return kernel_fn(xr, marks, get), jnp.diagonal(kernel_fn(xr, None, get))

        return jax.lax.map(one, row_tiles)

    return jax.jit(_shard_map(body, mesh, (P(AXIS), P()), (P(AXIS), P(AXIS))))


def kernel_columns(kernel_fn, get, rows, landmarks, *, tile_size, mesh):
    """``(K(rows, landmarks), diag K(rows, rows))`` as numpy, over row tiles on the mesh."""
    b, n_tiles = tile_layout(rows.shape[0], tile_size, mesh)
    fn = _columns_program(kernel_fn, get, mesh)
    cols, diag = fn(_split(mesh, _tiles_of(rows, 0, n_tiles, b)), _whole(mesh, landmarks))
    return _rows(cols, rows.shape[0]), _rows(diag, rows.shape[0])


# ----------------------------------------------------------------------------------------------
# feature moments


def feature_moments(phi, x, y, *, tile_size, mesh, chunk_tiles: int = 8, progress=None):
    """``(Phi^T Phi, Phi^T y, sum_i ||phi_i||^2)`` over the rows of ``x``, ``y`` (numpy or
    memory maps): chunks of ``chunk_tiles`` tiles per device are read, sent and reduced in
    turn, so memory is set by the tile and ``n_features``, not by ``N``."""
    n = x.shape[0]
    dtype = jnp.result_type(float)  # sums over N rows: in float64 when it is enabled
    draws = phi.draws(jnp.asarray(np.asarray(x[:1]), dtype))
    b, _ = tile_layout(n, tile_size, mesh)
    per_step = chunk_tiles * _n_dev(mesh)

    fn = _moments_program(phi._apply, phi.n_features, jnp.dtype(dtype).name, mesh)
    draws = [_whole(mesh, np.asarray(d)) for d in draws]
    total = None
    for start in range(0, n, per_step * b):
        xt = _tiles_of(x, start, per_step, b).astype(dtype)
        yt = _tiles_of(y, start, per_step, b)
        mt = _mask(start, per_step, b, n, np.float32)
        part = fn(draws, _split(mesh, xt), _split(mesh, yt), _split(mesh, mt))
        part = [_fetch(p) for p in part]
        total = part if total is None else [t + p for t, p in zip(total, part)]
        if progress is not None:
            progress.update(min(per_step * b, n - start))
    assert total is not None  # n > 0 was checked
    return total[0], total[1], float(total[2])


@functools.lru_cache(maxsize=32)
def _moments_program(apply, m, dtype, mesh):
    def body(draws, xt, yt, mt):
        def step(carry, inp):
            a, z, tr = carry
            xr, yr, mr = inp
            f = apply(draws, xr) * mr[:, None].astype(dtype)
            a = a + jnp.matmul(f.T, f, precision=_HIGHEST)
            z = z + jnp.matmul(f.T, yr.astype(dtype), precision=_HIGHEST)
            return (a, z, tr + jnp.sum(f * f)), None

        init = (jnp.zeros((m, m), dtype), jnp.zeros((m, yt.shape[-1]), dtype),
                jnp.zeros((), dtype))
        out = jax.lax.scan(step, init, (xt, yt, mt))[0]
        return jax.tree_util.tree_map(lambda a: jax.lax.psum(a, AXIS), out)

    return jax.jit(_shard_map(body, mesh, (P(), P(AXIS), P(AXIS), P(AXIS)), (P(), P(), P())))


def n_chunks(n, tile_size, mesh, chunk_tiles=8) -> int:
    """Number of chunks `feature_moments` reads (for progress bars)."""
    b, _ = tile_layout(n, tile_size, mesh)
    return math.ceil(n / (chunk_tiles * _n_dev(mesh) * b))
