"""Writes layouts.npz: neural-tangents 0.6.5's float64 kernels of catalogue_layouts.CATALOGUE
(networks on inputs in non-default layouts) for tests/test_nt_parity_layouts.py."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from catalogue_layouts import CATALOGUE, MASKED, inputs, kernel_kwargs, masked_inputs  # noqa: E402

out = {}
for name, (spec, filter_spec, build) in CATALOGUE.items():
    x1, x2 = inputs(spec)
    kernel_fn = build(nt.stax, spec, filter_spec)[2]
    kw = kernel_kwargs(name)
    for tag, b in (("12", x2), ("11", None)):
        if tag == "11" and "pattern" in kw:
            kw = {"pattern": (kw["pattern"][0], kw["pattern"][0])}
        k = kernel_fn(x1, b, ("nngp", "ntk"), **kw)
        out[f"{name}/nngp{tag}"], out[f"{name}/ntk{tag}"] = np.asarray(k.nngp), np.asarray(k.ntk)
for name, (spec, filter_spec, build) in MASKED.items():
    x1, x2 = masked_inputs(spec)
    kernel_fn = build(nt.stax, spec, filter_spec)[2]
    for tag, b in (("12", x2), ("11", None)):
        k = kernel_fn(x1, b, ("nngp", "ntk"), mask_constant=-1e9)
        out[f"{name}/nngp{tag}"], out[f"{name}/ntk{tag}"] = np.asarray(k.nngp), np.asarray(k.ntk)
np.savez_compressed(os.path.join(here, "layouts.npz"), **out)
print(f"wrote {len(out)} arrays")
