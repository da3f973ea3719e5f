"""How many cotangent rows one ``jax.vmap`` of a VJP may carry: the one place that decides it.

Every empirical kernel differentiates the model once per output entry, as a batch of one-hot
cotangents pushed through one ``jax.vjp`` (``jax.jacrev`` does the same). On jax 0.10.2 (CPU)
that batch is silently wrong for a convolution whose weight gradient sums over a single
position: a ``conv_general_dilated`` whose output has batch x spatial size 1 (one example, a
1x1 output map: the last stage of a ResNet on 32x32 images, any 1x1-output conv under
``vmap_axes``). When ``rows * out_channels > 2**15`` the weight gradients of all rows come back
as uninitialised memory (zeros, garbage or ``inf``); at or below it they are exact. Measured
on that primitive alone (examples/jax_vmap_vjp_conv_bug.py reproduces it in plain JAX): 256
rows x 128 channels exact, 257 x 128 wrong, 64 x 512 exact, 64 x 513 wrong, 32 x 1000 exact,
33 x 1000 wrong; two examples or a 2x2 output map are exact at 4096 x 128. JVPs (tangent
batches) and input gradients were exact in every case tried.

:func:`row_limit` reads that bound off a traced function and :func:`map_rows` evaluates a
batch in chunks that respect it, so all paths (Jacobian contraction, NTK-vector products,
structured derivatives, and Monte Carlo through them) use the same rule.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

CONV_ROW_CHANNELS = 2**15  # rows x output channels of a single-position conv known exact
UNROLL = 8  # at most this many chunks are written out; more run in a loop (lax.map)


def _conv_limit(eqn) -> int | None:
    out = eqn.outvars[0].aval.shape
    spec = eqn.params["dimension_numbers"].out_spec
    positions = math.prod(out[d] for d in (spec[0], *spec[2:]))
    if positions != 1:
        return None
    return max(1, CONV_ROW_CHANNELS // max(out[spec[1]], 1))


def _walk_limit(jaxpr) -> int | None:
    best = None
    for eqn in jaxpr.eqns:
        lims = []
        if eqn.primitive.name == "conv_general_dilated":
            lims.append(_conv_limit(eqn))
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    lims.append(_walk_limit(inner))
        for lim in lims:
            if lim is not None:
                best = lim if best is None else min(best, lim)
    return best


def jaxpr_row_limit(jaxpr) -> int | None:
    """The most cotangent rows a vmapped VJP of ``jaxpr`` may carry (None: no bound).

    >>> import jax, jax.numpy as jnp
    >>> conv = lambda w, x: jax.lax.conv_general_dilated(x, w, (1, 1), 'VALID')
    >>> jx = jax.make_jaxpr(conv)(jnp.ones((128, 8, 1, 1)), jnp.ones((1, 8, 1, 1)))
    >>> jaxpr_row_limit(jx.jaxpr)
    256
    """
    return _walk_limit(jaxpr)


def row_limit(fn, *args) -> int | None:
    """:func:`jaxpr_row_limit` of ``fn(*args)``, traced from shapes only."""
    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                                  args)
    return jaxpr_row_limit(jax.make_jaxpr(fn)(*spec).jaxpr)


def combine(*limits) -> int | None:
    """The smallest of the given limits (None entries mean no bound)."""
    given = [int(l) for l in limits if l is not None]
    return min(given) if given else None


def map_rows(fn, xs, limit: int | None):
    """``jax.vmap(fn)(xs)`` (over the leading axis of every leaf of ``xs``) in chunks of at most
    ``limit`` rows: written out when there are few chunks, else a ``lax.map`` loop.

    >>> import jax.numpy as jnp
    >>> map_rows(lambda r: 2 * r, jnp.arange(5.), 2).tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if limit is None or n <= limit:
        return jax.vmap(fn)(xs)
    steps = -(-n // limit)
    size = -(-n // steps)  # balanced chunks
    if steps <= UNROLL:
        parts = [jax.vmap(fn)(jax.tree_util.tree_map(lambda a, i=i: a[i:i + size], xs))
                 for i in range(0, n, size)]
        return jax.tree_util.tree_map(lambda *p: jnp.concatenate(p), *parts)
    return jax.lax.map(fn, xs, batch_size=size)


def basis(shape, dtype):
    """The one-hot basis of arrays of ``shape``: ``(prod(shape),) + shape``."""
    n = int(np.prod(shape, dtype=np.int64))
    return jnp.eye(n, dtype=dtype).reshape((n,) + tuple(shape))


def jacrev(fn, limit: int | None, has_aux: bool = False):
    """``jax.jacrev(fn, argnums=all, has_aux)`` with the one-hot cotangents in chunks of at most
    ``limit`` rows. Returns a function of ``fn``'s positional arguments giving the Jacobian laid
    out as ``jax.jacrev`` does (output tree of argument tuples; one argument: no tuple), and
    the aux value.

    >>> import jax.numpy as jnp
    >>> jacrev(lambda w: w * jnp.arange(3.), 2)(jnp.ones(3)).tolist()
    [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
    """

    def jac(*args):
        if has_aux:
            out, vjp, aux = jax.vjp(fn, *args, has_aux=True)
        else:
            out, vjp = jax.vjp(fn, *args)
        leaves, treedef = jax.tree_util.tree_flatten(out)
        per_leaf = []
        for i, leaf in enumerate(leaves):
            def row(e, i=i):
                cot = [jnp.zeros(l.shape, l.dtype) for l in leaves]
                cot[i] = e
                return vjp(jax.tree_util.tree_unflatten(treedef, cot))

            rows = map_rows(row, basis(leaf.shape, leaf.dtype), limit)
            rows = jax.tree_util.tree_map(lambda r, s=leaf.shape: r.reshape(s + r.shape[1:]), rows)
            per_leaf.append(rows if len(args) > 1 else rows[0])
        result = jax.tree_util.tree_unflatten(treedef, per_leaf)
        return (result, aux) if has_aux else result

    return jac
