"""Writes empirical.npz: neural-tangents' empirical NTK (each implementation) and NNGP of the
small networks in catalogue_empirical.py, with the parameters and inputs used, in float64."""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import catalogue_empirical as cat  # noqa: E402

out = {}
for name, (f, _, _) in cat.NETS.items():
    p = [jnp.asarray(a) for a in cat.params(name)]
    x1, x2, x2same = cat.inputs(name)
    for i, a in enumerate(p):
        out[f"{name}/param{i}"] = np.asarray(a)
    out[f"{name}/x1"], out[f"{name}/x2"], out[f"{name}/x2same"] = x1, x2, x2same
    ndim = cat.OUT_NDIM[name]
    for trace_axes, diagonal_axes in cat.COMBOS[ndim]:
        c = cat.combo_name(trace_axes, diagonal_axes)
        b = x2same if cat.needs_same_batch(trace_axes, diagonal_axes, ndim) else x2
        for impl in (1, 2, 3):
            ntk_fn = nt.empirical_ntk_fn(f, trace_axes, diagonal_axes, implementation=impl)
            out[f"{name}/{c}/ntk{impl}"] = np.asarray(ntk_fn(jnp.asarray(x1), jnp.asarray(b), p))
        nngp_fn = nt.empirical_nngp_fn(f, trace_axes, diagonal_axes)
        out[f"{name}/{c}/nngp"] = np.asarray(nngp_fn(jnp.asarray(x1), jnp.asarray(b), p))
np.savez_compressed(os.path.join(here, "empirical.npz"), **out)
print(f"wrote {len(out)} arrays")
