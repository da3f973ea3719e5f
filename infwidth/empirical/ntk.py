"""The empirical NTK of any JAX function ``f(params, x)``, with neural-tangents' API.

``Theta(x1, x2) = sum_p df(x1)/dp df(x2)/dp^T`` at the given parameters (Jacot et al. 2018,
arXiv:1806.07572), in three interchangeable implementations (Novak et al. 2022, "Fast Finite
Width Neural Tangent Kernel", arXiv:2206.08720):

* ``JACOBIAN_CONTRACTION`` (1): form both Jacobians and contract them.
* ``NTK_VECTOR_PRODUCTS`` (2): one VJP of ``f(x1)`` then one JVP of ``f(x2)`` per output entry
  of ``f(x1)``; never materialises a Jacobian.
* ``STRUCTURED_DERIVATIVES`` (3): differentiate with respect to the outputs of dense and
  convolutional layers and contract with the layers' inputs (see ``_structured.py``).
* ``AUTO`` (0): the cheapest of the three by a cost estimate from the shapes.
"""

from __future__ import annotations

import enum
import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from . import _structured as sd
from ._axes import (
    Letters,
    check_axes,
    kernel_shape,
    leaf_axes,
    per_example_fn,
    resolve_axes,
    resolve_vmap_axes,
    split_kwargs,
    subscripts,
    trace_and_diagonal,
    trace_size,
)

_HIGHEST = jax.lax.Precision.HIGHEST


class NtkImplementation(enum.IntEnum):
    """How the empirical NTK is computed; the same values as neural-tangents'."""

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


DEFAULT_NTK_IMPLEMENTATION = NtkImplementation.JACOBIAN_CONTRACTION

_ALIASES = {
    "auto": 0, "jacobian_contraction": 1, "jacobian": 1, "jc": 1, "ntk_vector_products": 2,
    "ntvp": 2, "vector_products": 2, "structured_derivatives": 3, "structured": 3, "sd": 3,
}


def resolve_implementation(implementation, caller: str = "empirical_ntk_fn") -> NtkImplementation:
    """An `NtkImplementation` from an enum member, its int value, or a name such as 'structured'.

    >>> resolve_implementation('ntk_vector_products')
    <NtkImplementation.NTK_VECTOR_PRODUCTS: 2>
    """
    if isinstance(implementation, str):
        key = implementation.strip().lower().replace("-", "_").replace(" ", "_")
        if key in _ALIASES:
            return NtkImplementation(_ALIASES[key])
    elif isinstance(implementation, (int, np.integer)) and not isinstance(implementation, bool):
        if int(implementation) in set(NtkImplementation):
            return NtkImplementation(int(implementation))
    names = ", ".join(f"{m.value} / {m.name.lower()!r}" for m in NtkImplementation)
    raise ValueError(f"{caller}(implementation={implementation!r}): unknown implementation; use "
                     f"one of {names} (or infwidth.empirical.NtkImplementation).")


def _check_params(f, params, x, kwargs, caller):
    """Evaluates the output shapes, turning a mismatch of f and params into a clear error."""
    try:
        return jax.eval_shape(lambda p, a: f(p, a, **kwargs), params, x)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        shapes = jax.tree_util.tree_map(lambda a: tuple(jnp.shape(a)), params)
        raise ValueError(
            f"{caller}: calling f(params, x) failed for params with shapes {shapes} and x of "
            f"shape {jax.tree_util.tree_map(jnp.shape, x)}: {type(e).__name__}: {e}. Check that "
            f"params belong to f (e.g. from the same init_fn / Module) and match the inputs."
        ) from e


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _jacobian(fn, params, out_size: int, n_params: int):
    return (jax.jacrev if out_size <= n_params else jax.jacfwd)(fn)(params)


def _contract_pair(j1, j2, s1, s2, out, size):
    """sum over trailing (parameter) axes of j1[s1 + p] j2[s2 + p], divided by size."""
    p = Letters()
    p._i = 52 - (j1.ndim - len(s1))
    lp = p(j1.ndim - len(s1))
    spec = "".join(s1 + lp) + "," + "".join(s2 + lp) + "->" + "".join(out)
    return jnp.einsum(spec, j1, j2, precision=_HIGHEST) / size


# ----------------------------------------------------------------------------------------------
# the three implementations: each returns a list (one kernel per output leaf)


def _jacobian_contraction(f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2):
    leaves1 = _leaves(fx1)
    n_params = sum(np.size(l) for l in _leaves(params))

    def jac(x, kw, fx):
        out_size = sum(np.size(l) for l in _leaves(fx))
        if vm is None:
            return _jacobian(lambda p: f(p, x, **kw), params, out_size, n_params)
        g, batched = per_example_fn(f, vm, kw)
        n = x.shape[0] if vm.x_axis == 0 else out_size
        return jax.vmap(lambda xi, *kwi: _jacobian(lambda p: g(p, xi, *kwi), params,
                                                   out_size // max(n, 1), n_params),
                        in_axes=(vm.x_axis, *[vm.kw_axes[b] for b in batched]),
                        out_axes=vm.fx_axis)(x, *[kw[b] for b in batched])

    j1 = jac(x1, kw1, fx1)
    j2 = j1 if x2 is None else jac(x2, kw2, fx2)
    treedef = jax.tree_util.tree_structure(fx1)
    j1s = treedef.flatten_up_to(j1)
    j2s = treedef.flatten_up_to(j2)
    out = []
    for i, leaf in enumerate(leaves1):
        ax = axes[i]
        s1, s2, o = subscripts(ax, Letters())
        size = trace_size(ax, leaf.shape)
        terms = [_contract_pair(a, b, s1, s2, o, size)
                 for a, b in zip(_leaves(j1s[i]), _leaves(j2s[i]))]
        out.append(functools.reduce(operator.add, terms))
    return out


def _basis(shape, dtype):
    n = int(np.prod(shape, dtype=np.int64))
    return jnp.eye(n, dtype=dtype).reshape((n,) + tuple(shape))


_NTVP_CHUNK = 2**26  # cotangent entries held at once (x params): 256 MiB in float32


def _ntvp_full(f1, jvp2, params, fx1):
    """Full kernels ``(fx1.shape + fx2.shape)`` of every output leaf: for each basis vector of
    ``f1``'s outputs one VJP through ``f1`` then one JVP (``jvp2``) through ``f2``. The basis is
    processed in chunks so that at most ``_NTVP_CHUNK`` cotangent entries live at once."""
    _, vjp1 = jax.vjp(f1, params)
    leaves1, treedef = jax.tree_util.tree_flatten(fx1)
    n_params = max(sum(np.size(l) for l in _leaves(params)), 1)
    out = []
    for i, leaf in enumerate(leaves1):
        def row(e, i=i):
            cot = [jnp.zeros(l.shape, l.dtype) for l in leaves1]
            cot[i] = e
            (dp,) = vjp1(jax.tree_util.tree_unflatten(treedef, cot))
            return _leaves(jvp2(dp))[i]

        basis = _basis(leaf.shape, leaf.dtype)
        chunk = int(max(1, min(basis.shape[0], _NTVP_CHUNK // n_params)))
        rows = (jax.vmap(row)(basis) if chunk >= basis.shape[0]
                else jax.lax.map(row, basis, batch_size=chunk))
        out.append(rows.reshape(tuple(leaf.shape) + rows.shape[1:]))
    return out


def _ntk_vector_products(f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2):
    leaves1 = _leaves(fx1)
    xb, kwb = (x1, kw1) if x2 is None else (x2, kw2)
    _, jvp2 = jax.linearize(lambda p: f(p, xb, **kwb), params)
    if vm is None:
        full = _ntvp_full(lambda p: f(p, x1, **kw1), jvp2, params, fx1)
    else:
        # one example of x1 at a time (its VJPs are per example), JVPs over the whole of x2
        g1, batched = per_example_fn(f, vm, kw1)
        first = lambda t, ax: jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, ax, 0), t)
        xs = (first(x1, vm.x_axis), [first(kw1[b], vm.kw_axes[b]) for b in batched])
        fx1_single = jax.eval_shape(lambda a: g1(params, *a[0:1], *a[1]),
                                    jax.tree_util.tree_map(lambda a: a[0], xs))

        def per_example(a):
            xi, kwi = a
            return _ntvp_full(lambda p: g1(p, xi, *kwi), jvp2, params, fx1_single)

        blocks = jax.lax.map(per_example, xs)
        full = [jnp.moveaxis(blk, 0, a) if a is not None else blk
                for blk, a in zip(blocks, leaf_axes(vm.fx_axis, fx1))]
    return [trace_and_diagonal(k, axes[i], leaves1[i].shape) for i, k in enumerate(full)]


def _structured_derivatives(f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2):
    leaves, p_def = jax.tree_util.tree_flatten(params)
    out_leaves1, out_def = jax.tree_util.tree_flatten(fx1)

    def side(x, kw):
        if vm is None:
            g, batched, xs, kws = (lambda p, a: f(p, a, **kw)), [], x, []
        else:
            g, batched = per_example_fn(f, vm, kw)
            xs = jax.tree_util.tree_map(lambda a: jnp.take(a, 0, vm.x_axis), x)
            kws = [jnp.take(kw[b], 0, vm.kw_axes[b]) for b in batched]
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

        def derivs(*a):
            eps = {p: jnp.zeros(s.y_shape, s.y_dtype) for p, s in sites.items()}
            jac, records = jax.jacrev(pert, argnums=(0, 1), has_aux=True)(
                eps, [leaves[i] for i in unstructured], *a)
            return jac, records

        if vm is None:
            jac, records = derivs(x)
        else:
            jac, records = jax.vmap(derivs, in_axes=(vm.x_axis, *[vm.kw_axes[b]
                                                                  for b in batched]))(
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
                terms.append(jnp.einsum(spec + "->" + "".join(o), g1, g2, r1, r2,
                                        precision=_HIGHEST, optimize="optimal") / size)
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
        _, vjp = jax.vjp(lambda v: sd.local_op(site, x, v), w)
        jw = jax.vmap(lambda c: vjp(c)[0])(flat)
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
        dw = jnp.einsum("nsk,ansc->akc", patches, gy, precision=_HIGHEST)
        dw = dw.reshape((-1, w.shape[rhs_spec[1]], *filt, w.shape[rhs_spec[0]]))
        src = [rhs_spec[1], *rhs_spec[2:], rhs_spec[0]]
        dw = jnp.transpose(dw, (0,) + tuple(1 + src.index(j) for j in range(w.ndim)))
        return dw.reshape(lead + w.shape)

    return jax.vmap(one)(g, x) if batched else one(g, x)


_IMPLS = {
    NtkImplementation.JACOBIAN_CONTRACTION: _jacobian_contraction,
    NtkImplementation.NTK_VECTOR_PRODUCTS: _ntk_vector_products,
    NtkImplementation.STRUCTURED_DERIVATIVES: _structured_derivatives,
}


_MEM = 30.0  # cost of writing one Jacobian entry, in flops (memory traffic dominates on CPU)


def estimate_costs(f, x1, x2, params, vm, fx1, fx2, axes, kwargs=None) -> dict:
    """Rough costs (flop-equivalents) of the three implementations for these shapes; 'auto'
    takes the smallest. Materialised Jacobian entries are charged ``_MEM`` each."""
    kwargs = kwargs or {}
    leaves, p_def = jax.tree_util.tree_flatten(params)
    closed = sd.trace_jaxpr(lambda ls, a: f(jax.tree_util.tree_unflatten(p_def, ls), a, **kwargs),
                            leaves, x1)
    n1, n2 = max(_batch(x1), 1), max(_batch(x1 if x2 is None else x2), 1)
    fwd1 = sd.flops(closed.jaxpr)
    fwd2 = fwd1 * n2 / n1
    sites, by_leaf = sd.analyse(closed.jaxpr, len(leaves))
    n_params = float(sum(np.size(l) for l in leaves))
    o1 = float(sum(np.size(l) for l in _leaves(fx1)))
    o2 = float(sum(np.size(l) for l in _leaves(fx2)))
    red = float(np.prod([trace_size(a, l.shape) for a, l in zip(axes, _leaves(fx1))]))
    pairs = o1 * o2 / red
    # backward passes: one per output entry, over one example (vmap) or the whole batch
    rows_fwd = (o1 * fwd1 / n1 + o2 * fwd2 / n2) if vm is not None else (o1 * fwd1 + o2 * fwd2)
    costs = {NtkImplementation.JACOBIAN_CONTRACTION:
             2 * rows_fwd + (o1 + o2) * n_params * _MEM + pairs * n_params}
    per_pair = (fwd1 / n1 + fwd2 / n2) if vm is not None else (fwd1 + fwd2)
    n_pairs = n1 * n2 if vm is not None else 1
    costs[NtkImplementation.NTK_VECTOR_PRODUCTS] = 3 * o1 / (n1 if vm is not None else 1) \
        * n_pairs * per_pair
    structured = rows_fwd
    for leaf, site in by_leaf.items():
        y = float(np.prod(site.y_shape))
        y_eff = y / n1 if vm is not None else y
        if site.primitive.name == "dot_general" and not site.params["dimension_numbers"][1][0]:
            structured += (o1 + o2) * y_eff * _MEM + pairs * y_eff
        else:
            w = float(np.size(leaves[leaf]))
            structured += (o1 + o2) * (y_eff + w) * _MEM + pairs * w
    s_params = sum(np.size(leaves[i]) for i in by_leaf)
    structured += (o1 + o2) * (n_params - s_params) * _MEM + pairs * (n_params - s_params)
    costs[NtkImplementation.STRUCTURED_DERIVATIVES] = structured
    return costs


def _batch(x):
    ls = _leaves(x)
    return ls[0].shape[0] if ls and np.ndim(ls[0]) else 1


def empirical_ntk_fn(f, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                     implementation=DEFAULT_NTK_IMPLEMENTATION, _j_rules: bool = True,
                     _s_rules: bool = True, _fwd=None):
    """Returns ``ntk_fn(x1, x2, params, **apply_fn_kwargs)``: the empirical NTK of ``f``.

    Same API as neural-tangents 0.6.5's ``empirical_ntk_fn``. ``f(params, x, **kwargs)`` may be a
    stax ``apply_fn``, ``flax.linen`` ``Module.apply`` (with ``params={'params': ...}``), a
    ``flax.nnx`` module (pass the module itself as ``f`` and its ``nnx.State`` of parameters as
    ``params``, or use :func:`infwidth.empirical.nnx_apply_fn`), or any JAX function.

    Args:
      f: the function; its outputs may be a pytree (each output leaf gets its own kernel).
      trace_axes: output axes summed over (and divided by their size). Default: the channel axis.
      diagonal_axes: output axes on which only equal indices are kept.
      vmap_axes: ``None``, an int, or ``(x_axis, fx_axis, kw_axes)``: the batch axis of inputs,
        outputs and batched keyword arguments, promising that examples do not interact. Faster
        and lighter, the result is the same.
      implementation: ``NtkImplementation`` member, its int value (0 auto, 1 Jacobian
        contraction, 2 NTK-vector products, 3 structured derivatives) or a name such as
        ``'structured'``. All give the same kernel up to rounding.
      _j_rules, _s_rules, _fwd: accepted for compatibility with neural-tangents; ignored.

    The kernel's shape is ``zip(f(x1).shape, f(x2).shape)`` without the traced axes and with the
    diagonal axes once, as in neural-tangents. Jacot et al. 2018 (arXiv:1806.07572); the
    implementations follow Novak et al. 2022 (arXiv:2206.08720).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.empirical import empirical_ntk_fn
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 5))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
      >>> k1 = empirical_ntk_fn(apply_fn)(x, None, params)
      >>> k3 = empirical_ntk_fn(apply_fn, implementation='structured', vmap_axes=0)(x, None,
      ...                                                                          params)
      >>> k1.shape, bool(jnp.allclose(k1, k3, rtol=1e-4))
      ((4, 4), True)
    """
    caller = "empirical_ntk_fn"
    if not callable(f):
        raise TypeError(f"{caller}(f={f!r}): f must be a function f(params, x, **kwargs) or a "
                        f"flax.nnx Module.")
    from ._flax import maybe_nnx

    f = maybe_nnx(f)
    trace_axes, diagonal_axes = check_axes(trace_axes, diagonal_axes, caller)
    vm = resolve_vmap_axes(vmap_axes, caller)
    impl = resolve_implementation(implementation, caller)

    def prepare(x1, x2, params, kw1, kw2):
        fx1 = _check_params(f, params, x1, kw1, caller)
        fx2 = fx1 if x2 is None else _check_params(f, params, x2, kw2, caller)
        l1, l2 = _leaves(fx1), _leaves(fx2)
        if len(l1) != len(l2):
            raise ValueError(f"{caller}: f(x1) and f(x2) have different output structures.")
        axes = [resolve_axes(trace_axes, diagonal_axes, a.shape, b.shape, caller)
                for a, b in zip(l1, l2)]
        return fx1, fx2, axes

    def compute(x1, x2, params, kw1, kw2):
        fx1, fx2, axes = prepare(x1, x2, params, kw1, kw2)
        chosen = impl
        if impl == NtkImplementation.AUTO:
            costs = estimate_costs(f, x1, x2, params, vm, fx1, fx2, axes, kw1)
            chosen = min(costs, key=costs.get)
        out = _IMPLS[chosen](f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(fx1), out)

    @functools.partial(jax.jit, static_argnames=("static1", "static2"))
    def compiled(x1, x2, params, dyn1, dyn2, static1, static2):
        return compute(x1, x2, params, {**dyn1, **dict(static1)}, {**dyn2, **dict(static2)})

    def ntk_fn(x1, x2, params, **apply_fn_kwargs):
        kw1, kw2 = split_kwargs(apply_fn_kwargs, x2 is not None)
        prepare(x1, x2, params, kw1, kw2)  # errors are raised here, before any tracing
        dyn = [k for k in kw1 if _is_array(kw1[k]) and _is_array(kw2[k])]
        static1 = tuple(sorted((k, v) for k, v in kw1.items() if k not in dyn))
        static2 = tuple(sorted((k, v) for k, v in kw2.items() if k not in dyn))
        try:
            hash((static1, static2))
        except TypeError:  # unhashable options: run without the compilation cache
            return compute(x1, x2, params, kw1, kw2)
        return compiled(x1, x2, params, {k: kw1[k] for k in dyn}, {k: kw2[k] for k in dyn},
                        static1, static2)

    return ntk_fn


def _is_array(v) -> bool:
    """Keyword arguments made only of arrays are traced; anything else (flags, Python numbers
    used in control flow) is held static."""
    leaves = jax.tree_util.tree_leaves(v)
    return bool(leaves) and all(isinstance(a, (jax.Array, np.ndarray)) for a in leaves)
