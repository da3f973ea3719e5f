"""Combinators: `serial`, `parallel`, `Identity` and `repeat`."""

from __future__ import annotations

import jax

from .._checks import check_nonnegative_int
from ..kernel import STATIC_FIELDS, Kernel
from ._layer import Layer, make_layer
from ._masking import MaskedArray


def _check_layers(layers, combinator):
    if not layers:
        raise ValueError(f"{combinator}(): give at least one layer, e.g. "
                         f"{combinator}(Dense(512), Relu()).")
    for i, layer in enumerate(layers):
        if not (isinstance(layer, tuple) and len(layer) == 3 and all(map(callable, layer))):
            raise TypeError(f"{combinator}(): argument {i} is {type(layer).__name__}, not a "
                            f"layer (init_fn, apply_fn, kernel_fn); did you forget to call it, "
                            f"e.g. Relu() rather than Relu?")


def _split_rng(kwargs, n):
    rng = kwargs.pop("rng", None)
    return (None,) * n if rng is None else tuple(jax.random.split(rng, n))


def serial(*layers: Layer) -> Layer:
    """Layers applied one after the other; the kernel maps compose in the same order.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(
      ...     stax.Dense(256, W_std=1.5, b_std=0.05), stax.Erf(), stax.Dense(1))
      >>> _, params = init_fn(jax.random.PRNGKey(1), (3, 5))
      >>> apply_fn(params, jnp.ones((3, 5))).shape
      (3, 1)
      >>> kernel_fn(jnp.ones((3, 5)), get=('nngp', 'ntk')).ntk.shape
      (3, 3)
    """
    _check_layers(layers, "serial")
    init_fns, apply_fns, kernel_fns = zip(*layers)

    def init_fn(key, input_shape):
        params = []
        for init in init_fns:
            key, layer_key = jax.random.split(key)
            input_shape, p = init(layer_key, input_shape)
            params.append(p)
        return input_shape, params

    def apply_fn(params, x, **kwargs):
        rngs = _split_rng(kwargs, len(apply_fns))
        for fn, p, rng in zip(apply_fns, params, rngs):
            x = fn(p, x, rng=rng, **kwargs) if rng is not None else fn(p, x, **kwargs)
        return x

    def kernel_map(k, **kwargs):
        for kernel_fn in kernel_fns:
            k = kernel_fn(k, **kwargs)
        return k

    return make_layer("serial", init_fn, apply_fn, kernel_map, shape_fn=None, children=kernel_fns)


def parallel(*layers: Layer) -> Layer:
    """Layers applied side by side, the i-th to the i-th of a list of inputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.parallel(stax.Dense(4), stax.Identity())
      >>> shapes, params = init_fn(jax.random.PRNGKey(0), [(2, 3), (2, 5)])
      >>> shapes
      [(2, 4), (2, 5)]
      >>> [k.shape for k in kernel_fn([jnp.ones((2, 3)), jnp.ones((2, 5))], get='nngp')]
      [(2, 2), (2, 2)]
    """
    _check_layers(layers, "parallel")
    init_fns, apply_fns, kernel_fns = zip(*layers)
    n = len(layers)

    def _check_count(values, what):
        if not isinstance(values, (list, tuple)) or len(values) != n:
            raise ValueError(f"parallel: expected a list of {n} {what}, one per layer; got "
                             f"{type(values).__name__} of length "
                             f"{len(values) if isinstance(values, (list, tuple)) else 1}.")

    def init_fn(key, input_shapes):
        _check_count(input_shapes, "input shapes")
        keys = jax.random.split(key, n)
        out = [init(kk, shape) for init, kk, shape in zip(init_fns, keys, input_shapes)]
        return [o[0] for o in out], [o[1] for o in out]

    def apply_fn(params, xs, **kwargs):
        _check_count(xs, "inputs")
        rngs = _split_rng(kwargs, n)
        return [fn(p, x, rng=rng, **kwargs) if rng is not None else fn(p, x, **kwargs)
                for fn, p, x, rng in zip(apply_fns, params, xs, rngs)]

    def kernel_map(ks, **kwargs):
        _check_count(ks, "inputs")
        return [kernel_fn(k, **kwargs) for kernel_fn, k in zip(kernel_fns, ks)]

    return make_layer("parallel", init_fn, apply_fn, kernel_map, shape_fn=None,
                      children=kernel_fns)


def Identity() -> Layer:
    """The identity layer: no parameters, and the kernel passes through unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> stax.Identity().kernel_fn(jnp.eye(2), get='nngp').tolist()
      [[0.5, 0.0], [0.0, 0.5]]
    """

    def init_fn(key, input_shape):
        return input_shape, ()

    def apply_fn(params, x, **kwargs):
        return x

    def kernel_map(k, **kwargs):
        return k

    return make_layer("Identity", init_fn, apply_fn, kernel_map, shape_fn=None, any_axes=True)


def _describe(tree) -> str:
    leaves = jax.tree_util.tree_leaves(tree)
    struct = jax.tree_util.tree_structure(tree)
    meta = ""
    if isinstance(tree, Kernel):
        meta = ", ".join(f"{f}={getattr(tree, f)!r}" for f in STATIC_FIELDS) + "; "
    return meta + f"{struct.num_leaves} arrays of shapes {[tuple(x.shape) for x in leaves]}"


def repeat(layer: Layer, n: int) -> Layer:
    """``layer`` composed with itself ``n`` times, compiled as one `jax.lax.scan`.

    The same computation as ``serial(*[layer] * n)`` (the same parameters from the same key, the
    same outputs and kernels) but the loop body is traced and compiled once, so compile time and
    program size do not grow with ``n``: a depth-100 ReLU network compiles in about the time of a
    depth-2 one (see benchmarks/README.md). As in neural-tangents the layer must keep the
    activation shape (``init_fn``), and its ``kernel_fn`` must return a `Kernel` of the same
    structure (shapes, ``is_gaussian``, layouts) as it receives after the first application,
    which is unrolled. Parameters are stacked along a new leading axis of length ``n``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> block = stax.serial(stax.Dense(64, W_std=1.5, b_std=0.1), stax.Relu())
      >>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(64), stax.repeat(block, 20))
      >>> out_shape, (_, [(W, b), _]) = init_fn(jax.random.PRNGKey(0), (3, 64))
      >>> out_shape, W.shape  # 20 stacked weight matrices
      ((3, 64), (20, 64, 64))
      >>> x = jnp.eye(3, 64)
      >>> k = kernel_fn(x, get='nngp')
      >>> k_unrolled = stax.serial(stax.Dense(64), *[block] * 20)[2](x, get='nngp')
      >>> bool(jnp.allclose(k, k_unrolled, rtol=1e-5))
      True
    """
    _check_layers((layer,), "repeat")
    n = check_nonnegative_int(n, "n", "repeat")
    if n == 0:  # as in neural-tangents: no layer at all
        return Identity()
    init, apply, kernel_fn = layer

    def init_fn(key, input_shape):
        shapes = []
        jax.eval_shape(lambda k: shapes.append(init(k, input_shape)[0]), key)  # no real work
        out_shape = shapes[0]
        if tuple(out_shape) != tuple(input_shape):
            raise ValueError(
                f"repeat(layer, n={n}): the layer changes the activation shape from "
                f"{tuple(input_shape)} to {tuple(out_shape)}; repeat needs a shape-preserving "
                f"layer. Put the first (shape-changing) layer before repeat, or use "
                f"serial(*[layer] * n).")

        def body(key, _):
            key, layer_key = jax.random.split(key)
            return key, init(layer_key, input_shape)[1]

        _, params = jax.lax.scan(body, key, None, length=n)
        return tuple(input_shape), params

    def apply_fn(params, x, **kwargs):
        rng = kwargs.pop("rng", None)
        rngs = None if rng is None else jax.random.split(rng, n)

        def body(x, p_rng):
            p, r = p_rng
            return (apply(p, x, **kwargs) if r is None else apply(p, x, rng=r, **kwargs)), None

        if isinstance(x, MaskedArray) and n > 1:
            # the first application may reduce the mask's channels: only then is the carry's
            # structure fixed
            x = body(x, jax.tree_util.tree_map(lambda a: a[0], (params, rngs)))[0]
            rest = jax.tree_util.tree_map(lambda a: a[1:], (params, rngs))
            return jax.lax.scan(body, x, rest, length=n - 1)[0]
        return jax.lax.scan(body, x, (params, rngs), length=n)[0]

    def kernel_map(k, **kwargs):
        k = kernel_fn(k, **kwargs)
        if n == 1:
            return k
        after = jax.eval_shape(lambda kk: kernel_fn(kk, **kwargs), k)
        same = jax.tree_util.tree_structure(after) == jax.tree_util.tree_structure(k) and all(
            a.shape == b.shape and a.dtype == b.dtype
            for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(k)))
        if not same:
            raise ValueError(
                f"repeat(layer, n={n}): the layer's kernel_fn changes the Kernel's structure "
                f"from one application to the next, so it cannot run in a loop:\n"
                f"  after 1 application:  {_describe(k)}\n"
                f"  after 2 applications: {_describe(after)}\n"
                f"Use serial(*[layer] * n), or make the layer map its output structure to "
                f"itself (e.g. repeat(serial(layer, layer), n // 2)).")
        return jax.lax.scan(lambda kk, _: (kernel_fn(kk, **kwargs), None), k, None,
                            length=n - 1)[0]

    return make_layer("repeat", init_fn, apply_fn, kernel_map, shape_fn=None,
                      children=(kernel_fn,), hparams={"n": n})
