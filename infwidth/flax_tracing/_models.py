"""From a Flax module (linen or nnx) or a plain ``f(params, x)`` to one function of
``(params, x)``, its parameters, and the initializer of every parameter leaf."""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._initializers import FlatInit, Moments, initializer_moments
from ._values import python_branches_explained


class Model(NamedTuple):
    """A model reduced to a function of ``(params, x)``.

    ``paths[i]`` names leaf ``i`` of ``params`` ('Dense_0/kernel'); ``inits[i]`` is its
    initializer (or ``None`` when it could not be read; the leaf is then usable only where its
    distribution does not matter).
    """

    kind: str
    apply_fn: Callable
    params: Any
    paths: tuple
    inits: tuple
    init_fn: Callable


def path_name(path) -> str:
    """'a/0/kernel' for a jax key path."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                if not (attr == "name" and getattr(k, attr) == "value"):
                    parts.append(str(getattr(k, attr)))
                break
    return "/".join(parts)


def _leaves(params):
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [path_name(p) for p, _ in flat], [v for _, v in flat], treedef


def _override(paths, inits, initializers):
    """Applies a user's ``{path: initializer}`` mapping."""
    if initializers is None:
        return inits
    if not isinstance(initializers, dict):
        raise TypeError("from_flax(initializers=...): expected a dict {'path/to/param': "
                        "initializer}, with paths such as " + ", ".join(map(repr, paths[:3])))
    unknown = [k for k in initializers if k not in paths]
    if unknown:
        raise ValueError(f"from_flax(initializers=...): no parameter {unknown[0]!r}; the model's "
                         f"parameters are {list(paths)}.")
    return tuple(initializers.get(p, i) for p, i in zip(paths, inits))


def _draw_fn(treedef, shapes, dtypes, inits, paths):
    def draw(key):
        keys = jax.random.split(key, max(len(shapes), 1))
        leaves = []
        for k, shape, dtype, init, path in zip(keys, shapes, dtypes, inits, paths):
            if init is None:
                raise ValueError(f"from_flax: no initializer known for parameter {path!r}; pass "
                                 f"initializers={{{path!r}: ...}}.")
            leaves.append(init(k, shape, dtype))
        return jax.tree_util.tree_unflatten(treedef, leaves)
    return draw


def linen_init(module, key, x, apply_kwargs):
    """``module.init`` with the 'params' key added to any ``rngs`` of the call's keywords."""
    kwargs = dict(apply_kwargs)
    rngs = kwargs.pop("rngs", None) or {}
    return module.init({"params": key, **rngs}, x, **kwargs)


def _linen(module, x, apply_kwargs, initializers) -> Model:
    import flax.linen as nn

    found = {}

    def record(next_fun, args, kwargs, context):
        found[tuple(context.module.path)] = context.module
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record), python_branches_explained():
        variables = jax.eval_shape(lambda k: linen_init(module, k, x, apply_kwargs),
                                   jax.random.PRNGKey(0))
    extra = [c for c in variables if c != "params"]
    if extra:
        raise ValueError(
            f"from_flax: the linen module has variable collections {extra} besides 'params' "
            f"(BatchNorm's 'batch_stats'?). Their values depend on the data, not on a random "
            f"initialization; infwidth has no infinite-width rule for them yet.")
    params = variables.get("params", {})
    paths, leaves, treedef = _leaves(params)
    inits = []
    for p in paths:
        *mod, name = p.split("/")
        owner = found.get(tuple(mod))
        init = getattr(owner, f"{name}_init", None) if owner is not None else None
        if init is not None and name == "kernel" and isinstance(owner, nn.DenseGeneral):
            axis = owner.axis
            init = FlatInit(init, len(axis) if isinstance(axis, (tuple, list)) else 1)
        inits.append(init)
    inits = _override(paths, tuple(inits), initializers)

    def apply_fn(p, xx, **kw):
        return module.apply({"params": p}, xx, **{**apply_kwargs, **kw})

    shapes = [tuple(v.shape) for v in leaves]
    draw = _draw_fn(treedef, shapes, [v.dtype for v in leaves], inits, paths)
    return Model("linen", apply_fn, params, tuple(paths), inits, draw)


def _nnx_default_init(node, name):
    try:
        param = inspect.signature(type(node).__init__).parameters.get(f"{name}_init")
    except (TypeError, ValueError):
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _check_drawn_from(value, init, path):
    """nnx does not store initializers: check the weights look drawn from the assumed one."""
    w = np.asarray(value, dtype=np.float64)
    m = initializer_moments(init, w.shape)
    if m.var == 0:
        ok = np.allclose(w, m.mean)
    else:
        n = w.size
        second = float(np.mean((w - m.mean) ** 2))
        ok = abs(second / m.var - 1) < 8 * math.sqrt(2 / n) + 1e-3
    if not ok:
        raise ValueError(
            f"from_flax: the nnx parameter {path!r} does not look drawn from its layer's default "
            f"initializer ({getattr(init, '__qualname__', init)}: mean {m.mean:.3g}, variance "
            f"{m.var:.3g}; the parameter has mean {w.mean():.3g}, variance {w.var():.3g}). "
            f"nnx modules do not remember their initializers: pass "
            f"initializers={{{path!r}: <the kernel_init/bias_init you built it with>}}.")


def _nnx(module, apply_kwargs, initializers) -> Model:
    from flax import nnx

    from ..empirical import nnx_apply_fn

    apply0, params = nnx_apply_fn(module)
    nodes = {tuple(str(k) for k in path): node for path, node in nnx.iter_graph(module)}
    paths, leaves, treedef = _leaves(params)
    inits = []
    for p in paths:
        *mod, name = p.split("/")
        owner = nodes.get(tuple(mod))
        init = None if owner is None else _nnx_default_init(owner, name)
        if init is not None and name == "kernel" and isinstance(owner, nnx.LinearGeneral):
            init = FlatInit(init, len(owner.batch_axis) + len(owner.in_features))
        inits.append(init)
    user = set(initializers or ())
    inits = _override(paths, tuple(inits), initializers)
    for p, v, init in zip(paths, leaves, inits):
        if init is not None and p not in user:
            _check_drawn_from(v, init, p)

    def apply_fn(pp, xx, **kw):
        return apply0(pp, xx, **{**apply_kwargs, **kw})

    shapes = [tuple(v.shape) for v in leaves]
    draw = _draw_fn(treedef, shapes, [v.dtype for v in leaves], inits, paths)
    return Model("nnx", apply_fn, params, tuple(paths), inits, draw)


def _plain(f, apply_kwargs, params, initializers) -> Model:
    if params is None or initializers is None:
        raise TypeError(
            "from_flax(f, x): for a plain function f(params, x) pass params= (a pytree of arrays "
            "or jax.ShapeDtypeStruct) and initializers= (the same pytree with a "
            "jax.nn.initializers function at each leaf, or a dict {'path': initializer}).")
    paths, leaves, treedef = _leaves(params)
    if isinstance(initializers, dict) and set(initializers) <= set(paths):
        inits = _override(paths, (None,) * len(paths), initializers)
    else:
        init_leaves, init_def = jax.tree_util.tree_flatten(initializers)
        if init_def != treedef:
            raise ValueError(f"from_flax(initializers=...): expected the structure of params "
                             f"{treedef}, got {init_def}.")
        inits = tuple(init_leaves)

    def apply_fn(p, xx, **kw):
        return f(p, xx, **{**apply_kwargs, **kw})

    shapes = [tuple(v.shape) for v in leaves]
    dtypes = [getattr(v, "dtype", jnp.result_type(float)) for v in leaves]
    params = jax.tree_util.tree_unflatten(
        treedef, [jax.ShapeDtypeStruct(s, d) for s, d in zip(shapes, dtypes)])
    draw = _draw_fn(treedef, shapes, dtypes, inits, paths)
    return Model("function", apply_fn, params, tuple(paths), inits, draw)


def as_model(module, example_input, apply_kwargs, params, initializers) -> Model:
    """Dispatches on the kind of ``module``."""
    linen = sys.modules.get("flax.linen")
    nnx = sys.modules.get("flax.nnx")
    if linen is not None and isinstance(module, linen.Module):
        return _linen(module, example_input, apply_kwargs, initializers)
    if nnx is not None and isinstance(module, nnx.Module):
        return _nnx(module, apply_kwargs, initializers)
    if callable(module):
        return _plain(module, apply_kwargs, params, initializers)
    raise TypeError(f"from_flax(module={type(module).__name__}): expected a flax.linen Module, "
                    f"a flax.nnx Module or a function f(params, x).")


def leaf_moments(model: Model, i: int, shape) -> Moments | None:
    init = model.inits[i]
    return None if init is None else initializer_moments(init, shape)
