"""Combinators: `serial`, `parallel` and `Identity`."""

from __future__ import annotations

import jax

from ._layer import Layer, make_layer


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

    def transform(k, **kwargs):
        for kernel_fn in kernel_fns:
            k = kernel_fn(k, **kwargs)
        return k

    return make_layer("serial", init_fn, apply_fn, transform, shape_fn=None)


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

    def transform(ks, **kwargs):
        _check_count(ks, "inputs")
        return [kernel_fn(k, **kwargs) for kernel_fn, k in zip(kernel_fns, ks)]

    return make_layer("parallel", init_fn, apply_fn, transform, shape_fn=None)


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

    def transform(k, **kwargs):
        return k

    return make_layer("Identity", init_fn, apply_fn, transform, shape_fn=None)
