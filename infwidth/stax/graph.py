"""`Aggregate`: message passing over a graph given per input as ``pattern``.

Each vertex is replaced by the (weighted) sum of its direct predecessors, ``out[j] = sum_i
x[i] A[i, j]``; the kernel is aggregated on both sides, ``K' = A1^T K A2`` (Du et al. 2019,
"Graph Neural Tangent Kernel", arXiv:1905.13192). Arguments and ``pattern`` formats follow
neural-tangents' `stax.Aggregate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._layer import Layer, make_layer
from ._layouts import axis_index, is_default_layout, relaid

_LETTERS = "abcdefghijklopqrstuvwxyz"  # no n, m (batch)


def _identity(p):
    return p


def _relaid_aggregate(aggregate_axis, batch_axis, channel_axis, to_dense, impl) -> Layer:
    """`Aggregate` on inputs of any layout: the channel-last layer aggregating the same vertex
    axes of the moved inputs (`_layouts`; the patterns keep their layout, batch first)."""
    layers: dict = {}

    def canonical(ndim) -> Layer:
        if ndim not in layers:
            b = axis_index(batch_axis, ndim, "batch_axis", "Aggregate")
            c = axis_index(channel_axis, ndim, "channel_axis", "Aggregate")
            spatial = [i for i in range(ndim) if i not in (b, c)]
            if aggregate_axis is None:
                moved = None
            else:
                axes = (aggregate_axis,) if isinstance(aggregate_axis, int) else aggregate_axis
                idx = [axis_index(a, ndim, "aggregate_axis", "Aggregate") for a in axes]
                if any(a in (b, c) for a in idx):
                    raise ValueError(f"Aggregate(aggregate_axis={aggregate_axis!r}): aggregate "
                                     f"axes must be vertex axes, not the batch axis {b} or the "
                                     f"channel axis {c}.")
                moved = tuple(1 + spatial.index(a) for a in idx)
            layers[ndim] = Aggregate(moved, 0, -1, to_dense, impl)
        return layers[ndim]

    return relaid("Aggregate", canonical, batch_axis, channel_axis)


def Aggregate(aggregate_axis=None, batch_axis: int = 0, channel_axis: int = -1,
              to_dense: Callable | None = _identity, implementation: str = "DENSE") -> Layer:
    """Graph aggregation: every vertex becomes the sum of its predecessors.

    Inputs are ``(N, X_1, ..., X_S, C)``; the vertices are the positions along
    ``aggregate_axis`` (default: all of ``X_1 ... X_S``). The graph of each input is passed as
    ``apply_fn(params, x, pattern=A)`` and ``kernel_fn(x1, x2, pattern=(A1, A2))`` (for
    ``x2=None``, ``pattern=(A1, None)`` or ``(A1, A1)``):

    * ``implementation='DENSE'``: ``to_dense(A)`` has shape ``(N, X_i1..X_iK, X_i1..X_iK)``,
      ``A[n, i, j]`` the weight of the edge from ``i`` (tail) to ``j`` (head).
    * ``implementation='SPARSE'``: ``A`` is an integer array ``(N, n_edges, K, 2)`` (or
      ``(N, n_edges, 2)`` when ``K == 1``) of (tail, head) coordinates; repeated edges add up and
      edges with a negative coordinate are padding. ``apply_fn`` then costs O(V + E).

    As in neural-tangents, a missing pattern (``pattern=None``, or ``(None, None)`` for
    ``kernel_fn``) is the identity graph (each vertex its own only predecessor): the layer then
    passes its input through. The kernel needs ``diagonal_spatial=False``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.serial(stax.Dense(8), stax.Aggregate())
      >>> x = jnp.array([[[1., 0.], [0., 1.], [1., 1.]]])  # one graph, 3 vertices, 2 features
      >>> A = jnp.array([[[0., 1., 1.], [0., 0., 1.], [0., 0., 0.]]])  # 0 -> 1, 0 -> 2, 1 -> 2
      >>> kernel_fn(x, pattern=(A, None), get='nngp')[0, 0].tolist()  # A^T (x x^T / 2) A
      [[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.5, 1.0]]
    """
    name = "Aggregate"
    impl = str(implementation).upper()
    if impl not in ("DENSE", "SPARSE"):
        raise ValueError(f"{name}(implementation={implementation!r}): must be 'DENSE' or "
                         f"'SPARSE'.")
    if not is_default_layout(batch_axis, channel_axis):
        return _relaid_aggregate(aggregate_axis, batch_axis, channel_axis, to_dense, impl)
    to_dense = _identity if to_dense is None else to_dense

    def agg_axes(ndim):
        if ndim < 3:
            raise ValueError(f"{name}: inputs of shape (N, C) have no vertex axis; graph inputs "
                             f"are (N, n_vertices, ..., C).")
        if aggregate_axis is None:
            return tuple(range(1, ndim - 1))
        axes = (aggregate_axis,) if isinstance(aggregate_axis, int) else tuple(aggregate_axis)
        out = tuple(sorted({a % ndim for a in axes}))
        if any(a in (0, ndim - 1) for a in out) or any(not -ndim <= a < ndim for a in axes):
            raise ValueError(f"{name}(aggregate_axis={aggregate_axis!r}): aggregate axes must be "
                             f"vertex axes, between the batch axis 0 and the channel axis "
                             f"{ndim - 1}.")
        return out

    def missing(where):
        return ValueError(f"{name}: {where} got pattern=(None, pattern2): pass the graph of "
                          f"x1 as pattern1 (both None means the identity graph).")

    def dense_pattern(pattern, batch: int, agg_shape, dtype):
        """The (batch, V..., V...) adjacency from either format."""
        if impl == "DENSE":
            a = jnp.asarray(to_dense(pattern))
        else:
            a = _sparse_to_dense(jnp.asarray(pattern), batch, agg_shape, name)
        expected = (batch,) + tuple(agg_shape) * 2
        if a.shape != expected:
            raise ValueError(f"{name}: pattern has (dense) shape {a.shape}; expected {expected} "
                             f"= (batch, aggregated vertex axes, the same again).")
        return a.astype(dtype)

    def init_fn(key, input_shape):
        agg_axes(len(input_shape))
        return tuple(input_shape), ()

    def apply_fn(params, x, pattern=None, **kwargs):
        axes = agg_axes(x.ndim)
        if pattern is None:  # the identity graph
            return x
        agg_shape = tuple(x.shape[a] for a in axes)
        if impl == "SPARSE":
            return _sparse_apply(x, jnp.asarray(pattern), axes, agg_shape, name)
        a = dense_pattern(pattern, x.shape[0], agg_shape, x.dtype)
        letters = iter(_LETTERS)
        x_idx = ["n"] + [next(letters) for _ in range(x.ndim - 1)]
        heads = {ax: next(letters) for ax in axes}
        a_idx = "n" + "".join(x_idx[ax] for ax in axes) + "".join(heads[ax] for ax in axes)
        out_idx = "".join(heads.get(i, c) for i, c in enumerate(x_idx))
        return jnp.einsum(f"{''.join(x_idx)},{a_idx}->{out_idx}", x, a,
                          precision=jax.lax.Precision.HIGHEST)

    def kernel_map(k, pattern=None, **kwargs):
        if isinstance(k, (list, tuple)):
            raise ValueError(f"{name}: got {len(k)} inputs; this layer takes one.")
        if pattern is None:
            pattern = (None, None)
        if not isinstance(pattern, (tuple, list)) or len(pattern) != 2:
            raise ValueError(f"{name}: kernel_fn takes pattern=(pattern1, pattern2), one per "
                             f"batch (pattern2=None when x2 is None).")
        p1, p2 = pattern
        if p1 is None and p2 is not None:
            raise missing("kernel_fn(x1, x2)")
        if k.diagonal_spatial:
            raise ValueError(f"{name}: aggregation mixes vertices, so it needs the full "
                             f"vertex-vertex covariance; call kernel_fn with "
                             f"diagonal_spatial=False.")
        ndim = len(k.shape1)
        axes = agg_axes(ndim)
        if p1 is None:  # the identity graph
            return k
        if p2 is None and k.cov2 is not None:
            raise ValueError(f"{name}: kernel_fn(x1, x2) got pattern=(pattern1, None): pass the "
                             f"graph of x2 as pattern2 (or None for both, the identity graph).")
        agg_shape = tuple(k.shape1[a] for a in axes)
        a1 = dense_pattern(p1, k.shape1[0], agg_shape, k.nngp.dtype)
        a2 = a1 if p2 is None else dense_pattern(p2, k.shape2[0], agg_shape, k.nngp.dtype)

        def agg(mat, n_batch, pa, pb):
            if mat is None:
                return None
            letters = iter(_LETTERS)
            b1, b2 = ("n", "m") if n_batch == 2 else ("n", "n")
            idx, out, ia, ib, oa, ob = [], [], [], [], [], []
            for s in range(1, ndim - 1):
                i, j = next(letters), next(letters)
                idx += [i, j]
                if s in axes:
                    p, q = next(letters), next(letters)
                    ia.append(i), oa.append(p), ib.append(j), ob.append(q)
                    out += [p, q]
                else:
                    out += [i, j]
            batch = b1 + (b2 if n_batch == 2 else "")
            spec = (f"{batch}{''.join(idx)},{b1}{''.join(ia)}{''.join(oa)},"
                    f"{b2}{''.join(ib)}{''.join(ob)}->{batch}{''.join(out)}")
            return jnp.einsum(spec, mat, pa, pb, precision=jax.lax.Precision.HIGHEST)

        n_cov = 1 if k.diagonal_batch else 2
        return k.replace(nngp=agg(k.nngp, 2, a1, a2), ntk=agg(k.ntk, 2, a1, a2),
                         cov1=agg(k.cov1, n_cov, a1, a1),
                         cov2=None if k.cov2 is None else agg(k.cov2, n_cov, a2, a2))

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=lambda s: s)


def _edges(pattern, batch: int, agg_shape, name):
    """(tails, heads) as flat vertex indices (batch, n_edges), -1 for padding edges."""
    k = len(agg_shape)
    if not jnp.issubdtype(pattern.dtype, jnp.integer):
        raise ValueError(f"{name}(implementation='SPARSE'): pattern must be an integer array of "
                         f"(tail, head) coordinates; got dtype {pattern.dtype}.")
    if pattern.ndim == 3 and k == 1:
        pattern = pattern[:, :, None, :]
    if pattern.ndim != 4 or pattern.shape[0] != batch or pattern.shape[2:] != (k, 2):
        raise ValueError(f"{name}(implementation='SPARSE'): pattern has shape {pattern.shape}; "
                         f"expected (batch={batch}, n_edges, K={k}, 2)"
                         + (" or (batch, n_edges, 2)" if k == 1 else "") + ".")

    def flat(coords):  # (batch, n_edges, K)
        strides = np.cumprod((1,) + tuple(agg_shape[::-1]))[:-1][::-1]
        idx = jnp.sum(coords * jnp.asarray(strides, coords.dtype), -1)
        return jnp.where(jnp.all(coords >= 0, -1), idx, -1)

    tails, heads = flat(pattern[..., 0]), flat(pattern[..., 1])
    valid = (tails >= 0) & (heads >= 0)
    return jnp.where(valid, tails, 0), jnp.where(valid, heads, -1)


def _sparse_to_dense(pattern, batch, agg_shape, name):
    v = math.prod(agg_shape)
    tails, heads = _edges(pattern, batch, agg_shape, name)
    flat = jnp.where(heads >= 0, tails * v + heads, v * v)  # padding goes to a dropped bin
    dense = jax.vmap(lambda f: jnp.zeros(v * v + 1).at[f].add(1.0)[:-1])(flat)
    return dense.reshape((batch,) + tuple(agg_shape) * 2)


def _sparse_apply(x, pattern, axes, agg_shape, name):
    """Message passing with segment sums: O(V + E) per input."""
    n = x.shape[0]
    v = math.prod(agg_shape)
    tails, heads = _edges(pattern, n, agg_shape, name)
    rest = tuple(i for i in range(1, x.ndim) if i not in axes)
    xt = jnp.transpose(x, (0,) + axes + rest)
    shape = xt.shape
    xt = xt.reshape((n, v) + shape[1 + len(axes):])

    def one(xi, t, h):
        return jax.ops.segment_sum(xi[t], jnp.where(h >= 0, h, v), num_segments=v + 1)[:v]

    out = jax.vmap(one)(xt, tails, heads).reshape(shape)
    return jnp.transpose(out, np.argsort((0,) + axes + rest))
