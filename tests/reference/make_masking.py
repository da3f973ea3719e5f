"""Writes masking.npz: neural-tangents 0.6.5's kernels of catalogue_masking.CATALOGUE on padded
inputs (``kernel_fn(..., mask_constant=...)``), in float64, for tests/test_masking.py, and the
NNGP of the same inputs padded with zeros and no mask (which the masked kernels must differ
from)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from catalogue_masking import CATALOGUE, MASK, inputs, patterns  # noqa: E402

out = {}
xs = inputs()
for name, (a, b) in xs.items():
    out[f"x/{name}/1"], out[f"x/{name}/2"] = a, b
p1, p2 = patterns()
out["pattern/1"], out["pattern/2"] = p1, p2

for name, build in CATALOGUE.items():
    layer, which = build(nt.stax)
    x1, x2 = (jnp.asarray(v) for v in xs[which])
    c = np.nan if which == "nan" else MASK
    for tag, (a, b) in (("12", (x1, x2)), ("11", (x1, None))):
        kw = {"mask_constant": c}
        if name == "aggregate":
            kw["pattern"] = (jnp.asarray(p1), jnp.asarray(p1 if b is None else p2))
        try:
            k = layer[2](a, b, ("nngp", "ntk"), **kw)
        except Exception as e:  # recorded: the test then skips the comparison
            print(f"{name}: neural-tangents raises {type(e).__name__}: {str(e)[:200]}")
            break
        out[f"{name}/nngp{tag}"], out[f"{name}/ntk{tag}"] = np.asarray(k.nngp), np.asarray(k.ntk)
    # the same inputs padded with zeros and no mask: the tests check the masks matter
    kw = {"pattern": (jnp.asarray(p1), jnp.asarray(p2))} if name == "aggregate" else {}
    z1, z2 = (jnp.where((v == MASK) | jnp.isnan(v), 0.0, v) for v in (x1, x2))
    out[f"{name}/zero_padded_nngp12"] = np.asarray(layer[2](z1, z2, "nngp", **kw))

np.savez_compressed(os.path.join(here, "masking.npz"), **out)
print(f"wrote {len(out)} arrays")
