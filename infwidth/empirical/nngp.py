"""The empirical NNGP of a function, and `empirical_kernel_fn` returning NNGP and NTK by `get`."""

from __future__ import annotations

import jax

from .._checks import none_if_all_none
from .._get import namedtuple_of, parse_get
from ._axes import Letters, check_axes, resolve_axes, split_kwargs, subscripts, trace_size
from ._contract import einsum
from ._flax import maybe_nnx
from ._inputs import check_finite, concrete
from .ntk import DEFAULT_NTK_IMPLEMENTATION, _check_params, empirical_ntk_fn

_KINDS = ("nngp", "ntk")


def empirical_nngp_fn(f, trace_axes=(-1,), diagonal_axes=()):
    """Returns ``nngp_fn(x1, x2, params, **apply_fn_kwargs)``: ``f(x1) f(x2)^T`` at ``params``.

    The output covariance of one network (one draw of the NNGP, Lee et al. 2018,
    arXiv:1711.00165), averaged over ``trace_axes`` and with only equal indices kept on
    ``diagonal_axes``; the shape conventions are those of :func:`empirical_ntk_fn` and of
    neural-tangents 0.6.5.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.empirical import empirical_nngp_fn
      >>> f = lambda w, x: x @ w
      >>> w = jnp.array([[1., 0.], [0., 2.]])
      >>> empirical_nngp_fn(f)(jnp.eye(2), None, w).tolist()  # (x @ w)(x @ w)^T / 2
      [[0.5, 0.0], [0.0, 2.0]]
    """
    caller = "empirical_nngp_fn"
    if not callable(f):
        raise TypeError(f"{caller}(f={f!r}): f must be a function f(params, x, **kwargs).")
    f = maybe_nnx(f)
    trace_axes, diagonal_axes = check_axes(trace_axes, diagonal_axes, caller)

    def nngp_fn(x1, x2, params, **apply_fn_kwargs):
        x2 = none_if_all_none(x2)
        kw1, kw2 = split_kwargs(apply_fn_kwargs, x1, x2)
        _check_params(f, params, x1, kw1, caller)
        out1 = f(params, x1, **kw1)
        out2 = out1 if x2 is None else f(params, x2, **kw2)
        if concrete((out1, out2)):
            check_finite(out1, caller, "x1")
            check_finite(out2, caller, "x2")

        def contract(a, b):
            ax = resolve_axes(trace_axes, diagonal_axes, a.shape, b.shape, caller)
            s1, s2, o = subscripts(ax, Letters())
            spec = "".join(s1) + "," + "".join(s2) + "->" + "".join(o)
            return einsum(spec, a, b) / trace_size(ax, a.shape)

        return jax.tree_util.tree_map(contract, out1, out2)

    return nngp_fn


def _namedtuple(names):
    return namedtuple_of("EmpiricalKernel", tuple(names))


def canonicalize_get(get, caller="empirical_kernel_fn"):
    """``(names, single)``: the one `get` parser (``infwidth._get``); None means both."""
    names = parse_get(get, _KINDS, caller)
    return (tuple(_KINDS) if names is None else names), isinstance(get, str)


def empirical_kernel_fn(f, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                        implementation=DEFAULT_NTK_IMPLEMENTATION, _j_rules: bool = True,
                        _s_rules: bool = True, _fwd=None):
    """Returns ``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)``: empirical NNGP and/or NTK.

    ``get`` is ``'nngp'``, ``'ntk'`` (an array), a tuple of them or ``None`` (both): a namedtuple
    ``EmpiricalKernel`` with the requested fields, as in neural-tangents 0.6.5. Arguments as in
    :func:`empirical_ntk_fn` (the NNGP ignores ``vmap_axes`` and ``implementation``). Lee et al.
    2019 (arXiv:1902.06720).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.empirical import empirical_kernel_fn
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(32), stax.Relu(), stax.Dense(1))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 3))
      >>> k = empirical_kernel_fn(apply_fn)(jnp.ones((2, 3)), None, None, params)
      >>> type(k).__name__, k.nngp.shape, k.ntk.shape
      ('EmpiricalKernel', (2, 2), (2, 2))
    """
    fns = {
        "nngp": empirical_nngp_fn(f, trace_axes, diagonal_axes),
        "ntk": empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation),
    }

    def kernel_fn(x1, x2, get, params, **apply_fn_kwargs):
        x2 = none_if_all_none(x2)
        names, single = canonicalize_get(get)
        out = {n: fns[n](x1, x2, params, **apply_fn_kwargs) for n in names}
        if single:
            return out[names[0]]
        return _namedtuple(names)(*(out[n] for n in names))

    return kernel_fn
