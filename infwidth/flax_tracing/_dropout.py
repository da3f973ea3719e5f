"""Stochastic dropout in a traced model: random masks as values of the jaxpr walk.

A model run with ``deterministic=False`` (and a ``'dropout'`` key) draws
``keep = jax.random.bernoulli(key, 1 - rate, shape)`` and returns
``jnp.where(keep, x / (1 - rate), 0)``. The walk follows that computation symbolically:
``jax.random.uniform``'s call becomes a `Uniform`, its comparison with a constant a `Mask`
with probability ``p``, broadcasts of the mask record the axes it is shared along, and the
``select``/``mul`` that applies it to an activation becomes `stax.Dropout` (keep probability
``p``), after `stax.Scale` for the kept entries' factor. The kernel is the expectation over
masks, which is what the finite network's kernel converges to: each feature has its own mask,
so the average over infinitely many features is that expectation (Schoenholz et al. 2017,
arXiv:1611.01232). The key's value does not matter; the kernel is the same for every key.

Random numbers used any other way (Gaussian noise, a mask shared by all features or all
inputs, a mask on the raw inputs) raise `UnsupportedOperation`.
"""

from __future__ import annotations

import numpy as np

from .. import stax
from ._values import Act, Const, Mask, Uniform, shared_scalar, unsupported

# key plumbing: evaluated concretely when the key is a constant (the model's 'dropout' rng)
KEY_OPS = frozenset(("random_seed", "random_wrap", "random_unwrap", "random_fold_in",
                     "random_split", "random_clone", "threefry2x32"))


def is_random_primitive(name: str) -> bool:
    return name.startswith("random_") or name.startswith("threefry")


def uniform_call(eqn, ins):
    """The `Uniform` of a call to ``jax.random.uniform``'s implementation, or None."""
    if eqn.params.get("name") != "_uniform" or len(ins) != 3:
        return None
    if not all(isinstance(v, Const) for v in ins):
        return None
    lo, hi = (float(np.asarray(v.value).reshape(-1)[0]) for v in ins[1:])
    return Uniform(lo, hi, tuple(eqn.outvars[0].aval.shape))


def _not_a_mask(eqn):
    return unsupported(eqn, "uses random numbers other than as a dropout mask",
                       "Stochastic dropout (a Bernoulli mask from jax.random.bernoulli or "
                       "uniform < p, multiplied into or selected on an activation) is mapped; "
                       "other noise has no kernel rule. Run the model deterministically "
                       "(deterministic=True) otherwise.")


def random_step(walker, eqn, ins, out_shape):
    """One equation with a `Uniform` or `Mask` among its inputs."""
    name = eqn.primitive.name
    rand = [v for v in ins if isinstance(v, (Uniform, Mask))]
    if len(rand) != 1:
        raise _not_a_mask(eqn)
    r = rand[0]
    if isinstance(r, Uniform):
        if name not in ("lt", "le", "gt", "ge") or not isinstance(ins[1 - ins.index(r)], Const):
            raise _not_a_mask(eqn)
        c = shared_scalar(ins[1 - ins.index(r)])
        if c is None:
            raise _not_a_mask(eqn)
        below = min(max((c - r.lo) / (r.hi - r.lo), 0.0), 1.0)  # P(u < c)
        kept_below = (name in ("lt", "le")) == (ins[0] is r)
        return Mask(below if kept_below else 1.0 - below, out_shape)
    if name == "broadcast_in_dim":
        dims = tuple(eqn.params["broadcast_dimensions"])
        shared = {i for i in range(len(out_shape)) if i not in dims}
        shared |= {d for i, d in enumerate(dims) if r.shape[i] == 1 and out_shape[d] != 1}
        shared |= {dims[i] for i in r.shared}
        return Mask(r.p, out_shape, frozenset(shared), r.scale)
    if name in ("convert_element_type", "copy", "copy_p"):
        boolean = np.dtype(eqn.params.get("new_dtype", np.float32)) == np.bool_
        scale = r.scale if r.scale is not None or boolean else 1.0
        return Mask(r.p, out_shape, r.shared, scale)
    others = [v for v in ins if v is not r]
    if name in ("mul", "div") and r.scale is not None and len(others) == 1:
        o = others[0]
        c = shared_scalar(o) if isinstance(o, Const) else None
        if c is not None and (name == "mul" or ins[0] is r):
            return Mask(r.p, out_shape, r.shared, r.scale * c if name == "mul" else r.scale / c)
        if name == "mul" and isinstance(o, Act):
            return apply_mask(walker, eqn, o, r.p, r.scale, r.shared, out_shape)
    if name == "select_n" and ins[0] is r and r.scale is None and len(ins) == 3:
        on_false, on_true = ins[1], ins[2]
        for act, zero, p in ((on_true, on_false, r.p), (on_false, on_true, 1.0 - r.p)):
            if isinstance(act, Act) and isinstance(zero, Const) and shared_scalar(zero) == 0.0:
                return apply_mask(walker, eqn, act, p, 1.0, r.shared, out_shape)
    raise _not_a_mask(eqn)


def apply_mask(walker, eqn, act, p, scale, shared, out_shape):
    """``scale * m * x`` for a mask ``m`` kept with probability ``p``: in the limit the
    kernel ``scale**2 * E[m m'] * K`` (``p`` for the same unit, ``p**2`` otherwise)."""
    x = walker.materialize(act, eqn)
    nd = len(out_shape)
    if not x.leaves:
        raise unsupported(eqn, "applies a dropout mask to the model's input",
                          "The input's features stay finite, so its mask is not averaged away; "
                          "dropout has a kernel rule on hidden activations (as in "
                          "neural-tangents, where Dropout cannot be applied to the input).")
    if 0 in shared:
        raise unsupported(eqn, "applies a dropout mask shared by all inputs of the batch",
                          "The kernel is per pair of inputs with independent masks; drop the "
                          "batch axis from broadcast_dims.")
    if nd - 1 in shared:
        raise unsupported(eqn, "applies a dropout mask shared by all features",
                          "A mask that keeps or drops a whole input is not averaged over the "
                          "features, so the kernel stays random; drop the feature axis from "
                          "broadcast_dims.")
    k = x.kernel
    if p * scale != 1.0:
        k = walker.call(stax.Scale(p * scale), k, eqn)
    if 0.0 < p < 1.0:
        k = walker.call(stax.Dropout(p, broadcast_dims=tuple(sorted(shared))), k, eqn)
    return Act(k, out_shape, x.leaves)
