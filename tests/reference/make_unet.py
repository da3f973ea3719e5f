"""Writes unet.npz: neural-tangents' NNGP/NTK of the U-Nets of catalogue_unet.py, in float64.

    $NT tests/reference/make_unet.py

Keys ``<name>/<nngp|ntk>`` (of the pair ``x1``, ``x2``), ``x1``, ``x2``. Kernels that
neural-tangents returns with reversed spatial axes (``Kernel.is_reversed``) are put back in
input order, as infwidth keeps.
"""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from _catalogue import build, inputs  # noqa: E402
from catalogue_unet import CASES, SHAPE1, SHAPE2  # noqa: E402

x1, x2 = inputs(SHAPE1, SHAPE2, seed=3)
out = {"x1": x1, "x2": x2}
for name, (_, spec, kw) in CASES.items():
    kernel_fn = build(nt.stax, spec)[2]
    k = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), get=None, **kw)
    if k.is_reversed:
        k = k.reverse()
    out[f"{name}/nngp"] = np.asarray(k.nngp)
    out[f"{name}/ntk"] = np.asarray(k.ntk)
    print(name, k.nngp.shape, flush=True)
np.savez_compressed(os.path.join(here, "unet.npz"), **out)
print(f"wrote {len(out)} arrays for {len(CASES)} networks")
