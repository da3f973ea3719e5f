"""Writes graph.npz: neural-tangents' Aggregate kernels (float64) and apply_fn outputs.

Keys: ``<case>/x1``, ``x2``, ``p1``, ``p2`` (patterns), ``<case>/<nngp|ntk><12|11>`` and
``<case>/apply`` (apply_fn of Aggregate alone on x1 with p1).
"""

import os
import sys
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

warnings.simplefilter("ignore")
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from _catalogue import build, inputs  # noqa: E402
from catalogue_graph import CASES, patterns  # noqa: E402

out = {}
for i, (name, (spec, shape1, shape2, axes, impl)) in enumerate(CASES.items()):
    x1, x2 = inputs(shape1, shape2, seed=i)
    p1, p2 = patterns(shape1, axes, impl, 10 + i), patterns(shape2, axes, impl, 20 + i)
    kernel_fn = build(nt.stax, spec)[2]
    k12 = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), get=("nngp", "ntk"), pattern=(p1, p2))
    k11 = kernel_fn(jnp.asarray(x1), None, get=("nngp", "ntk"), pattern=(p1, p1))
    agg = [s for s in spec if s[0] == "Aggregate"][0][1]
    y = nt.stax.Aggregate(**agg)[1]((), jnp.asarray(x1), pattern=jnp.asarray(p1))
    out.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/p1": p1, f"{name}/p2": p2,
                f"{name}/apply": np.asarray(y)})
    for tag, k in (("12", k12), ("11", k11)):
        out[f"{name}/nngp{tag}"] = np.asarray(k.nngp)
        out[f"{name}/ntk{tag}"] = np.asarray(k.ntk)
np.savez_compressed(os.path.join(here, "graph.npz"), **out)
print(f"wrote {len(out)} arrays")
