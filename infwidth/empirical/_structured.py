"""Structured derivatives: the NTK of a function, exploiting the layers it is made of.

The function is traced once to a jaxpr. A parameter leaf ``W`` that enters the computation
only through one ``dot_general`` (dense layers, einsums) or ``conv_general_dilated`` (convolutions)
equation ``y = op(x, W)`` needs no full Jacobian: ``df/dW = df/dy (x) dy/dW`` and ``op`` is linear
in ``W``. We therefore differentiate with respect to a zero perturbation added to ``y`` (giving
``df/dy``, as large as the layer's activations, not its weights) and record ``x``. For dense
layers the NTK contribution is ``sum g1[a, F, R] g2[b, F', R] <x1[F, C], x2[F', C]>`` (``F`` the
free input axes, ``C`` the contracted ones, ``R`` the output channels), never forming a matrix of
the weights' size; for other linear maps (convolutions, batched contractions) ``df/dW`` is formed
locally from ``df/dy`` by the layer's own transpose. All other leaves (biases, weights used more
than once or through other operations) fall back to an ordinary Jacobian.

This is the idea of Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel"
(arXiv:2206.08720), implemented here with a small jaxpr interpreter.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

_CALLS = ("jit", "pjit", "closed_call", "core_call")
_LINEAR = ("dot_general", "conv_general_dilated")


class Site(NamedTuple):
    """A structured use of parameter leaf ``leaf``: operand ``side`` of the equation at ``path``."""

    path: tuple
    leaf: int
    side: int
    primitive: object
    params: dict
    y_shape: tuple
    y_dtype: object


def _inner(eqn):
    j = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if j is None:
        return None, ()
    return (j.jaxpr, j.consts) if hasattr(j, "jaxpr") else (j, ())


def analyse(jaxpr, n_leaves: int, why: dict | None = None) -> tuple[dict, dict]:
    """Finds the structured sites. Returns ``{path: Site}`` and ``{leaf: Site}``; fills ``why``
    (if given) with ``{leaf: [primitive names of its uses]}``."""
    uses: dict[int, list] = {i: [] for i in range(n_leaves)}
    names: dict[int, list] = {i: [] for i in range(n_leaves)}

    def walk(jx, env, path):
        for k, eqn in enumerate(jx.eqns):
            p = path + (k,)
            pv = [None if isinstance(v, Literal) else env.get(v) for v in eqn.invars]
            name = eqn.primitive.name
            inner, _ = _inner(eqn) if name in _CALLS else (None, ())
            if inner is not None and len(inner.invars) == len(eqn.invars):
                walk(inner, {iv: l for iv, l in zip(inner.invars, pv) if l is not None}, p)
                continue
            if name in _LINEAR and (pv[0] is None) != (pv[1] is None):
                side = 0 if pv[0] is not None else 1
                out = eqn.outvars[0].aval
                uses[pv[side]].append(Site(p, pv[side], side, eqn.primitive, dict(eqn.params),
                                           tuple(out.shape), out.dtype))
                names[pv[side]].append(name)
                continue
            for l in pv:
                if l is not None:
                    uses[l].append(None)
                    names[l].append(name)
        for v in jx.outvars:
            if not isinstance(v, Literal) and v in env:
                uses[env[v]].append(None)
                names[env[v]].append("output")

    walk(jaxpr, {v: i for i, v in enumerate(jaxpr.invars[:n_leaves])}, ())
    by_leaf = {l: u[0] for l, u in uses.items() if len(u) == 1 and u[0] is not None}
    if why is not None:
        why.update(names)
    return {s.path: s for s in by_leaf.values()}, by_leaf


def evaluate(jaxpr, consts, args, sites: dict, eps: dict, records: dict, path=()):
    """Evaluates ``jaxpr``, adding ``eps[path]`` to the output of each site and recording the
    site's other operand in ``records[path]``."""
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for v, a in zip(jaxpr.constvars, consts):
        env[v] = a
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    prefixes = {s[:i] for s in sites for i in range(1, len(s))}
    for k, eqn in enumerate(jaxpr.eqns):
        p = path + (k,)
        invals = [read(v) for v in eqn.invars]
        if p in prefixes:
            inner, inner_consts = _inner(eqn)
            outs = evaluate(inner, inner_consts, invals, sites, eps, records, p)
        else:
            outs = _bind(eqn.primitive, eqn.params, invals)
            if not eqn.primitive.multiple_results:
                outs = [outs]
            if p in sites:
                site = sites[p]
                records[p] = invals[1 - site.side]
                outs = [outs[0] + eps[p]]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def local_op(site: Site, x, w):
    """The site's linear map ``W -> op(x, W)`` evaluated at ``w``."""
    ops = (w, x) if site.side == 0 else (x, w)
    return _bind(site.primitive, site.params, ops)


def _bind(primitive, params, args):
    """``primitive.bind`` as ``jax.core.eval_jaxpr`` does it (the API changed across versions)."""
    bp = primitive.get_bind_params(params)
    if isinstance(bp, tuple):  # older JAX: (subfuns, params)
        subfuns, bp = bp
        return primitive.bind(*subfuns, *args, **bp)
    return primitive.bind(*args, **bp)


def dense_subscripts(site: Site, x_ndim: int, w_ndim: int, letters, n_letter1, n_letter2):
    """For a dot_general site with no batch dims on W: einsum letters of (x1, x2) and of the
    perturbation's axes (y1, y2), or None when the site is not such a contraction."""
    (lc, rc), (lb, rb) = site.params["dimension_numbers"]
    if lb or rb:
        return None
    xc, wc = (rc, lc) if site.side == 0 else (lc, rc)
    c = dict(zip(xc, letters(len(xc))))
    xfree = [d for d in range(x_ndim) if d not in xc]
    f1, f2 = letters(len(xfree)), letters(len(xfree))
    r = letters(w_ndim - len(wc))
    x1 = [c[d] if d in c else f1[xfree.index(d)] for d in range(x_ndim)]
    x2 = [c[d] if d in c else f2[xfree.index(d)] for d in range(x_ndim)]
    y1, y2 = (r + f1, r + f2) if site.side == 0 else (f1 + r, f2 + r)
    if n_letter1 is not None:
        x1, x2 = [n_letter1] + x1, [n_letter2] + x2
    return x1, x2, y1, y2


def _sum_over_equations(jaxpr, cost) -> float:
    """``sum(cost(eqn))`` over the equations of ``jaxpr`` and of the calls inside it."""
    total = 0.0
    for eqn in jaxpr.eqns:
        inner, _ = _inner(eqn)
        total += _sum_over_equations(inner, cost) if inner is not None else cost(eqn)
    return total


def _forward_cost(eqn) -> float:
    out = np.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if eqn.primitive.name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        shape = eqn.invars[0].aval.shape
        return 2.0 * out * np.prod([shape[d] for d in lc])
    if eqn.primitive.name == "conv_general_dilated":
        w = eqn.invars[1].aval.shape
        return 2.0 * out * np.prod(w) / max(w[eqn.params["dimension_numbers"].rhs_spec[0]], 1)
    return float(out)


def flops(jaxpr) -> float:
    """Rough forward cost: multiply-adds of the contractions plus the size of everything else."""
    return _sum_over_equations(jaxpr, _forward_cost)


def activation_entries(jaxpr) -> float:
    """Number of entries of all intermediate values (the size of a forward pass' tape)."""
    return _sum_over_equations(
        jaxpr, lambda eqn: float(sum(np.prod(v.aval.shape) for v in eqn.outvars)))


def uses(jaxpr, name: str) -> bool:
    """Whether any equation of ``jaxpr`` (or of a call inside it) is the primitive ``name``."""
    return _sum_over_equations(jaxpr, lambda eqn: float(eqn.primitive.name == name)) > 0


def trace_jaxpr(fn, leaves, *args):
    """Closed jaxpr of ``fn(leaves, *args)`` from shapes only."""
    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                                  (leaves, args))
    return jax.make_jaxpr(fn)(spec[0], *spec[1])
