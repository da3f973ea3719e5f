"""Architecture specs that build the same network with neural-tangents' or infwidth's stax."""

import numpy as np


def build(stax, spec):
    """``spec``: a list of ``(name, kwargs)``; nested lists inside kwargs values named
    ``'layers'`` are built recursively (for ``serial`` / ``parallel``)."""
    layers = []
    for name, kwargs in spec:
        kwargs = dict(kwargs)
        if "layers" in kwargs:
            layers.append(getattr(stax, name)(*[build(stax, s) for s in kwargs.pop("layers")]))
        else:
            layers.append(getattr(stax, name)(**kwargs))
    return stax.serial(*layers)


def inputs(shape1, shape2, seed=0):
    """Deterministic float64 inputs: x1 and x2 with different batch sizes."""
    rng = np.random.RandomState(seed)
    return rng.randn(*shape1), rng.randn(*shape2)


def run_catalogue(stax, jnp, catalogue, shape1, shape2, seed=0, kernel_kwargs=None):
    """Evaluates every spec on (x1, x2) and on (x1, None); returns a flat dict of arrays."""
    kernel_kwargs = kernel_kwargs or {}
    x1, x2 = inputs(shape1, shape2, seed)
    out = {"x1": x1, "x2": x2}
    for name, spec in catalogue.items():
        kernel_fn = build(stax, spec)[2]
        k12 = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), get=("nngp", "ntk"), **kernel_kwargs)
        k11 = kernel_fn(jnp.asarray(x1), None, get=("nngp", "ntk"), **kernel_kwargs)
        for tag, k in (("12", k12), ("11", k11)):
            out[f"{name}/nngp{tag}"] = np.asarray(k.nngp)
            out[f"{name}/ntk{tag}"] = np.asarray(k.ntk)
    return out
