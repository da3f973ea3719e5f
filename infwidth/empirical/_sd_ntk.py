"""The structured-derivatives NTK (see ``_structured.py`` for the idea and the jaxpr tools)."""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from . import _chunks as ch
from . import _structured as sd
from ._axes import (
    Letters,
    _contract_pair,
    _full_axes,
    _leaves,
    kernel_shape,
    leaf_axes,
    per_example_fn,
    subscripts,
    trace_size,
)
from ._contract import _HIGHEST, einsum


def _structured_derivatives(f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2):
    leaves, p_def = jax.tree_util.tree_flatten(params)
    out_leaves1, out_def = jax.tree_util.tree_flatten(fx1)

    def side(x, kw):
        if vm is None:
            g, batched, xs, kws = (lambda p, a: f(p, a, **kw)), [], x, []
        else:
            g, batched = per_example_fn(f, vm, kw)
            xs = jax.tree_util.tree_map(lambda a, ax: a if ax is None else jnp.take(a, 0, ax), x,
                                        _full_axes(vm.x_axis, x), is_leaf=lambda a: a is None)
            kws = [jax.tree_util.tree_map(lambda a, ax: a if ax is None else jnp.take(a, 0, ax),
                                          kw[b], _full_axes(vm.kw_axes[b], kw[b]),
                                          is_leaf=lambda a: a is None) for b in batched]
        fn = lambda ls, *a: g(jax.tree_util.tree_unflatten(p_def, ls), *a)
        closed = sd.trace_jaxpr(fn, leaves, xs, *kws)
        sites, by_leaf = sd.analyse(closed.jaxpr, len(leaves))
        unstructured = [i for i in range(len(leaves)) if i not in by_leaf]

        def pert(eps, uleaves, *a):
            ls = list(leaves)
            for i, u in zip(unstructured, uleaves):
                ls[i] = u
            flat = jax.tree_util.tree_leaves((ls, a))
            records = {}
            outs = sd.evaluate(closed.jaxpr, closed.consts, flat, sites, eps, records)
            return jax.tree_util.tree_unflatten(out_def, outs), records

        exact = ch.jaxpr_row_limit(closed.jaxpr)

        def derivs(*a):
            eps = {p: jnp.zeros(s.y_shape, s.y_dtype) for p, s in sites.items()}
            jac, records = ch.jacrev(lambda e, u: pert(e, u, *a), exact, has_aux=True)(
                eps, [leaves[i] for i in unstructured])
            return jac, records

        if vm is None:
            jac, records = derivs(x)
        else:
            jac, records = jax.vmap(derivs, in_axes=(
                _full_axes(vm.x_axis, x), *[_full_axes(vm.kw_axes[b], kw[b]) for b in batched]))(
                x, *[kw[b] for b in batched])
        return sites, by_leaf, unstructured, jac, records

    sites, by_leaf, unstructured, jac1, rec1 = side(x1, kw1)
    if x2 is None:
        jac2, rec2 = jac1, rec1
    else:
        _, _, _, jac2, rec2 = side(x2, kw2)
    fx_axes = leaf_axes(vm.fx_axis, fx1) if vm is not None else [None] * len(out_leaves1)
    jl1, jl2 = out_def.flatten_up_to(jac1), out_def.flatten_up_to(jac2)

    out = []
    for i, leaf in enumerate(out_leaves1):
        ax = axes[i]
        letters = Letters()
        s1, s2, o = subscripts(ax, letters)
        a = fx_axes[i]
        n1 = n2 = None
        if a is not None:  # vmapped: jacobians are laid out (n, other output axes..., ...)
            n1, n2 = s1[a], s2[a]
            s1 = [n1] + s1[:a] + s1[a + 1:]
            s2 = [n2] + s2[:a] + s2[a + 1:]
        size = trace_size(ax, leaf.shape)
        (eps1, u1), (eps2, u2) = jl1[i], jl2[i]
        terms = [_contract_pair(j, k, s1, s2, o, size) for j, k in zip(u1, u2)]
        for path, site in sites.items():
            g1, g2, r1, r2 = eps1[path], eps2[path], rec1[path], rec2[path]
            w = leaves[site.leaf]
            sub = None
            if site.primitive.name == "dot_general":
                x_ndim = r1.ndim - (0 if n1 is None else 1)
                sub = sd.dense_subscripts(site, x_ndim, w.ndim, letters, n1, n2)
            if sub is not None:
                x1s, x2s, y1, y2 = sub
                spec = ",".join("".join(s) for s in (s1 + y1, s2 + y2, x1s, x2s))
                terms.append(einsum(spec + "->" + "".join(o), g1, g2, r1, r2) / size)
            else:
                terms.append(_contract_pair(_local_jacobian(site, w, g1, r1, n1 is not None),
                                            _local_jacobian(site, w, g2, r2, n1 is not None),
                                            s1, s2, o, size))
        if not terms:
            terms = [jnp.zeros(kernel_shape(ax, leaf.shape, _leaves(fx2)[i].shape), leaf.dtype)]
        out.append(functools.reduce(operator.add, terms))
    return out


def _local_jacobian(site, w, g, x, batched: bool):
    """``df/dW`` (output axes + W axes) of one site from ``df/dy`` and the recorded input."""
    y_nd = len(site.y_shape)
    if _is_plain_conv(site):
        return _conv_jacobian(site, w, g, x, batched)

    def one(g, x):
        lead, y_shape = g.shape[:g.ndim - y_nd], g.shape[g.ndim - y_nd:]
        flat = g.reshape((-1,) + tuple(y_shape))
        local = lambda v: sd.local_op(site, x, v)
        _, vjp = jax.vjp(local, w)
        jw = ch.map_rows(lambda c: vjp(c)[0], flat, ch.row_limit(local, w))
        return jw.reshape(lead + w.shape)

    return jax.vmap(one)(g, x) if batched else one(g, x)


def _is_plain_conv(site) -> bool:
    p = site.params
    return (site.primitive.name == "conv_general_dilated" and site.side == 1
            and p.get("feature_group_count", 1) == 1 and p.get("batch_group_count", 1) == 1)


def _conv_jacobian(site, w, g, x, batched: bool):
    """``df/dW`` of a convolution as one matrix product of ``df/dy`` with the input's patches
    (``lax.conv_general_dilated_patches``), instead of one transposed convolution per output."""
    p = site.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn
    filt = [w.shape[i] for i in rhs_spec[2:]]
    y_nd = len(site.y_shape)

    def one(g, x):
        patches = jax.lax.conv_general_dilated_patches(
            x, filt, p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"],
            dimension_numbers=dn, precision=_HIGHEST)
        # -> (batch, positions, cin * prod(filter)) and g -> (lead, batch, positions, cout)
        order = (out_spec[0], *out_spec[2:], out_spec[1])
        patches = jnp.transpose(patches, order)
        patches = patches.reshape(patches.shape[0], -1, patches.shape[-1])
        lead = g.shape[:g.ndim - y_nd]
        gy = jnp.transpose(g, tuple(range(len(lead))) + tuple(len(lead) + i for i in order))
        n_lead = int(np.prod(lead, dtype=np.int64))
        gy = gy.reshape((n_lead, gy.shape[len(lead)], -1, gy.shape[-1]))
        dw = einsum("nsk,ansc->akc", patches, gy)
        dw = dw.reshape((-1, w.shape[rhs_spec[1]], *filt, w.shape[rhs_spec[0]]))
        src = [rhs_spec[1], *rhs_spec[2:], rhs_spec[0]]
        dw = jnp.transpose(dw, (0,) + tuple(1 + src.index(j) for j in range(w.ndim)))
        return dw.reshape(lead + w.shape)

    return jax.vmap(one)(g, x) if batched else one(g, x)
