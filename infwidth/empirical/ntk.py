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

from .._checks import none_if_all_none
from . import _chunks as ch
from . import _structured as sd
from ._axes import (
    Letters,
    _contract_pair,
    _full_axes,
    _leaves,
    check_axes,
    leaf_axes,
    per_example_fn,
    resolve_axes,
    resolve_vmap_axes,
    split_kwargs,
    subscripts,
    trace_and_diagonal,
    trace_size,
)
from ._costs import choose
from ._inputs import check_finite, check_vmap_axes, concrete
from ._sd_ntk import _structured_derivatives


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


def _jacobian(fn, params, out_size: int, n_params: int):
    """Reverse mode (one-hot cotangents in chunks known to be exact, see ``_chunks``) when
    there are fewer outputs than parameters, else forward mode."""
    if out_size > n_params:
        return jax.jacfwd(fn)(params)
    return ch.jacrev(fn, ch.row_limit(fn, params))(params)


def _jacobian_contraction(f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2):
    leaves1 = _leaves(fx1)
    n_params = sum(np.size(l) for l in _leaves(params))

    def jac(x, kw, fx):
        out_size = sum(np.size(l) for l in _leaves(fx))
        if vm is None:
            return _jacobian(lambda p: f(p, x, **kw), params, out_size, n_params)
        g, batched = per_example_fn(f, vm, kw)
        ax0 = leaf_axes(vm.x_axis, x)[0]  # one int for every input of a list, or per input
        n = _leaves(x)[0].shape[ax0] if ax0 is not None else out_size
        return jax.vmap(lambda xi, *kwi: _jacobian(lambda p: g(p, xi, *kwi), params,
                                                   out_size // max(n, 1), n_params),
                        in_axes=(_full_axes(vm.x_axis, x),
                                 *[_full_axes(vm.kw_axes[b], kw[b]) for b in batched]),
                        out_axes=_nonnegative_axes(vm.fx_axis, fx))(x, *[kw[b] for b in batched])

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


_NTVP_CHUNK = 2**26  # cotangent entries held at once (x params): 256 MiB in float32


def _ntvp_full(f1, jvp2, params, fx1):
    """Full kernels ``(fx1.shape + fx2.shape)`` of every output leaf: for each basis vector of
    ``f1``'s outputs one VJP through ``f1`` then one JVP (``jvp2``) through ``f2``. The basis is
    processed in chunks so that at most ``_NTVP_CHUNK`` cotangent entries live at once."""
    _, vjp1 = jax.vjp(f1, params)
    exact = ch.row_limit(f1, params)
    leaves1, treedef = jax.tree_util.tree_flatten(fx1)
    n_params = max(sum(np.size(l) for l in _leaves(params)), 1)
    out = []
    for i, leaf in enumerate(leaves1):
        def row(e, i=i):
            cot = [jnp.zeros(l.shape, l.dtype) for l in leaves1]
            cot[i] = e
            (dp,) = vjp1(jax.tree_util.tree_unflatten(treedef, cot))
            return _leaves(jvp2(dp))[i]

        basis = ch.basis(leaf.shape, leaf.dtype)
        chunk = int(max(1, min(basis.shape[0], _NTVP_CHUNK // n_params)))
        if chunk < basis.shape[0]:  # memory-bound: a loop, so one chunk lives at a time
            rows = jax.lax.map(row, basis, batch_size=ch.combine(chunk, exact))
        else:
            rows = ch.map_rows(row, basis, exact)
        out.append(rows.reshape(tuple(leaf.shape) + rows.shape[1:]))
    return out


def _nonnegative_axes(axis, tree):
    """``axis`` per leaf of ``tree``, counted from the front: a Jacobian appends the parameter
    axes to each output, so an axis counted from the end would point into them."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, leaf_axes(axis, tree))


_NTVP_STEP = 2**24  # cotangent entries (x parameters) per step of examples: 64 MiB in float32
_NTVP_TAPE = 2**25  # entries of the JVPs' forward intermediates (x tangents) per step
_NTVP_UNROLL = 8  # at most this many steps are unrolled; more run in a loop (lax.map)


def _ntk_vector_products(f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2):
    leaves1 = _leaves(fx1)
    xb, kwb = (x1, kw1) if x2 is None else (x2, kw2)
    _, jvp2 = jax.linearize(lambda p: f(p, xb, **kwb), params)
    if vm is None:
        full = _ntvp_full(lambda p: f(p, x1, **kw1), jvp2, params, fx1)
    else:
        # a block of examples of x1 at a time (their VJPs are per example), JVPs over all of x2
        g1, batched = per_example_fn(f, vm, kw1)
        first = lambda t, ax: jax.tree_util.tree_map(
            lambda a, a_ax: jnp.moveaxis(a, a_ax, 0), t, _full_axes(ax, t))
        xs = (first(x1, vm.x_axis), [first(kw1[b], vm.kw_axes[b]) for b in batched])
        fx1_single = jax.eval_shape(lambda a: g1(params, *a[0:1], *a[1]),
                                    jax.tree_util.tree_map(lambda a: a[0], xs))

        def per_example(a):
            xi, kwi = a
            return _ntvp_full(lambda p: g1(p, xi, *kwi), jvp2, params, fx1_single)

        n1 = _leaves(xs)[0].shape[0]
        block, has_conv = _ntvp_block(f, xb, kwb, params, fx1_single, n1)
        fx_axes = leaf_axes(vm.fx_axis, fx1)
        if has_conv and -(-n1 // block) <= _NTVP_UNROLL:
            # unrolled: XLA on CPU runs convolution VJPs inside loop bodies many times slower
            # (measured 19x for the benchmark CNN), so short loops are written out
            take = lambda i: jax.tree_util.tree_map(lambda a: a[i:i + block], xs)
            if x2 is None and None not in fx_axes:
                blocks = _ntvp_symmetric(f, g1, x1, kw1, params, vm, batched, fx1_single, fx_axes,
                                         take, n1, block)
            else:
                parts = [jax.vmap(per_example)(take(i)) for i in range(0, n1, block)]
                blocks = [jnp.concatenate(p) for p in zip(*parts)]
        else:
            blocks = jax.lax.map(per_example, xs, batch_size=block)
        full = [jnp.moveaxis(blk, 0, a) if a is not None else blk
                for blk, a in zip(blocks, fx_axes)]
    return [trace_and_diagonal(k, axes[i], leaves1[i].shape) for i, k in enumerate(full)]


def _ntvp_symmetric(f, g, x, kw, params, vm, batched, fx1_single, fx_axes, take, n, block):
    """Unrolled NTK-vector products for ``x2 = x1``: the block of rows ``[i, i + block)`` is
    computed against columns ``i:`` only (JVPs over that part of x), the columns before it are
    the transposes of the blocks above. About half the JVPs of the full square."""
    x_axes = _full_axes(vm.x_axis, x)

    def rows_from(i):  # per output leaf: (rows [i, i + block), A..., columns i:, B...)
        cut = lambda a, ax: a if ax is None else jax.lax.slice_in_dim(a, i, n, axis=ax)
        x_rest = jax.tree_util.tree_map(cut, x, x_axes)
        kw_rest = dict(kw)
        for b in batched:
            kw_rest[b] = jax.tree_util.tree_map(cut, kw[b], _full_axes(vm.kw_axes[b], kw[b]),
                                                is_leaf=lambda a: a is None)
        _, jvp_rest = jax.linearize(lambda p: f(p, x_rest, **kw_rest), params)
        out = jax.vmap(lambda a: _ntvp_full(lambda p: g(p, a[0], *a[1]), jvp_rest, params,
                                            fx1_single))(take(i))
        return [jnp.moveaxis(o, o.ndim - l.ndim - 1 + ax, l.ndim + 1)
                for o, l, ax in zip(out, _leaves(fx1_single), fx_axes)]

    rows = [rows_from(i) for i in range(0, n, block)]
    blocks = []
    for k, leaf in enumerate(_leaves(fx1_single)):
        r = leaf.ndim
        swap = (r + 1, *range(r + 2, 2 * r + 2), 0, *range(1, r + 1))
        full_rows = []
        for step, i in enumerate(range(0, n, block)):
            stop = min(i + block, n)
            left = [jnp.transpose(rows[j][k][:, ..., i - j * block:stop - j * block,
                                             *([slice(None)] * r)], swap)
                    for j in range(step)]
            full_rows.append(jnp.concatenate(left + [rows[step][k]], axis=r + 1))
        canon = jnp.concatenate(full_rows)  # (n, A..., n, B...)
        blocks.append(jnp.moveaxis(canon, r + 1, r + 1 + fx_axes[k]))
    return blocks


def _ntvp_block(f, x2, kw2, params, fx1_single, n1: int) -> tuple[int, bool]:
    """Examples of x1 per step, such that their cotangents (outputs x parameters) fit in
    ``_NTVP_STEP`` entries and the JVPs' intermediates over all of x2 (outputs x the tape of
    f(x2)) in ``_NTVP_TAPE``; and whether f has convolutions."""
    leaves, p_def = jax.tree_util.tree_flatten(params)
    closed = sd.trace_jaxpr(lambda ls, a: f(jax.tree_util.tree_unflatten(p_def, ls), a, **kw2),
                            leaves, x2)
    outs = max(sum(np.size(l) for l in _leaves(fx1_single)), 1)
    n_params = max(sum(np.size(l) for l in leaves), 1)
    tape = max(sd.activation_entries(closed.jaxpr), 1.0)
    block = int(max(1, min(n1, _NTVP_STEP // (outs * n_params), _NTVP_TAPE // (outs * tape))))
    return block, sd.uses(closed.jaxpr, "conv_general_dilated")


_IMPLS = {
    NtkImplementation.JACOBIAN_CONTRACTION: _jacobian_contraction,
    NtkImplementation.NTK_VECTOR_PRODUCTS: _ntk_vector_products,
    NtkImplementation.STRUCTURED_DERIVATIVES: _structured_derivatives,
}


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
        check_vmap_axes(vm, x1, fx1, kw1, caller, vmap_axes)
        if x2 is not None:
            check_vmap_axes(vm, x2, fx2, kw2, caller, vmap_axes)
        return fx1, fx2, axes

    @functools.partial(jax.jit, static_argnames=("static",))
    def forward(params, x, dyn, static):
        return f(params, x, **dyn, **dict(static))

    def check_outputs(x1, x2, params, kw1, kw2, dyn, static1, static2):
        """NaN or inf outputs raise here, before any derivative (values known only outside
        jit; one forward pass of each input)."""
        if not concrete((x1, x2, params, kw1, kw2)):
            return
        for x, kw, static, which in ((x1, kw1, static1, "x1"), (x2, kw2, static2, "x2")):
            if x is not None:
                out = (f(params, x, **kw) if static is None else
                       forward(params, x, {k: kw[k] for k in dyn}, static))
                check_finite(out, caller, which)

    def compute(x1, x2, params, kw1, kw2):
        fx1, fx2, axes = prepare(x1, x2, params, kw1, kw2)
        chosen = NtkImplementation(choose(impl, f, x1, x2, params, vm, fx1, fx2, axes, kw1,
                                          caller, _NTVP_STEP, _NTVP_TAPE, _NTVP_CHUNK))
        out = _IMPLS[chosen](f, x1, x2, params, kw1, kw2, axes, vm, fx1, fx2)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(fx1), out)

    @functools.partial(jax.jit, static_argnames=("static1", "static2"))
    def compiled(x1, x2, params, dyn1, dyn2, static1, static2):
        return compute(x1, x2, params, {**dyn1, **dict(static1)}, {**dyn2, **dict(static2)})

    def ntk_fn(x1, x2, params, **apply_fn_kwargs):
        x2 = none_if_all_none(x2)
        kw1, kw2 = split_kwargs(apply_fn_kwargs, x1, x2)
        prepare(x1, x2, params, kw1, kw2)  # errors are raised here, before any tracing
        dyn = [k for k in kw1 if _is_array(kw1[k]) and _is_array(kw2[k])]
        static1 = tuple(sorted((k, v) for k, v in kw1.items() if k not in dyn))
        static2 = tuple(sorted((k, v) for k, v in kw2.items() if k not in dyn))
        try:
            hash((static1, static2))
        except TypeError:  # unhashable options: run without the compilation cache
            check_outputs(x1, x2, params, kw1, kw2, dyn, None, None)
            return compute(x1, x2, params, kw1, kw2)
        check_outputs(x1, x2, params, kw1, kw2, dyn, static1, static2)
        return compiled(x1, x2, params, {k: kw1[k] for k in dyn}, {k: kw2[k] for k in dyn},
                        static1, static2)

    return ntk_fn


def _is_array(v) -> bool:
    """Keyword arguments made only of arrays are traced; anything else (flags, Python numbers
    used in control flow) is held static."""
    leaves = jax.tree_util.tree_leaves(v)
    return bool(leaves) and all(isinstance(a, (jax.Array, np.ndarray)) for a in leaves)
