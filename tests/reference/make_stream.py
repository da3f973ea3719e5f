"""Writes stream.npz: neural-tangents 0.6.5's random stream beyond init_fn (tests/
test_random_stream.py), in float32 (its default): Dropout's apply_fn with an rng, empirical
NTKs with an rng (the keys of x1 and x2), and Monte Carlo estimates (the key chain)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

stax = nt.stax
here = os.path.dirname(os.path.abspath(__file__))
x1 = np.random.RandomState(0).randn(5, 4).astype(np.float32)
x2 = np.random.RandomState(1).randn(3, 4).astype(np.float32)
out = {"x1": x1, "x2": x2}
init_fn, apply_fn, _ = stax.serial(stax.Dense(64, b_std=0.1), stax.Relu(),
                                   stax.Dropout(0.8, mode="train"), stax.Dense(3))
_, params = init_fn(jax.random.PRNGKey(1), x1.shape)
out["dropout/apply"] = np.asarray(apply_fn(params, x1, rng=jax.random.PRNGKey(2)))
emp = nt.empirical_ntk_fn(apply_fn, trace_axes=())
for tag, b in (("12", x2), ("copy", x1 + 0), ("none", None)):
    out[f"empirical/{tag}"] = np.asarray(emp(x1, b, params, rng=jax.random.PRNGKey(2)))
mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(5), [2, 6])
for tag, b in (("12", x2), ("none", None)):
    for n, k in zip((2, 6), mc(x1, b, ("nngp", "ntk"))):
        out[f"mc/{tag}/{n}/nngp"], out[f"mc/{tag}/{n}/ntk"] = np.asarray(k.nngp), np.asarray(k.ntk)
np.savez_compressed(os.path.join(here, "stream.npz"), **out)
print(f"wrote {len(out)} arrays")
