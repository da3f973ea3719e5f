"""Writes dropin.npz: neural-tangents 0.6.5's values for the drop-in parity tests
(tests/test_nt_parity_dropin.py), in float64: the kernels of catalogue_dropin.CATALOGUE, the
parameters init_fn draws for catalogue_dropin.INIT from PRNGKey(1), an NTK-vector product,
the Diagonal algebra and unmask_fn."""

import itertools
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
from catalogue_dropin import CATALOGUE, INIT, inputs  # noqa: E402

stax = nt.stax
out = {}
xs = inputs()
for name, (a, b) in xs.items():
    out[f"x/{name}/1"], out[f"x/{name}/2"] = a, b

for name, build in CATALOGUE.items():
    layer, which, kwargs = build(stax, jnp)
    x1, x2 = (jnp.asarray(v) for v in xs[which])
    for tag, (a, b) in (("12", (x1, x2)), ("11", (x1, None))):
        try:
            k = layer[2](a, b, ("nngp", "ntk"), **kwargs)
        except Exception as e:  # recorded: the test then expects infwidth to do better
            print(f"{name}: neural-tangents raises {type(e).__name__}: {str(e)[:200]}")
            break
        out[f"{name}/nngp{tag}"], out[f"{name}/ntk{tag}"] = np.asarray(k.nngp), np.asarray(k.ntk)

for name, (build, shape) in INIT.items():
    _, params = build(stax)[0](jax.random.PRNGKey(1), shape)
    for i, leaf in enumerate(jax.tree_util.tree_leaves(params)):
        out[f"init/{name}/{i}"] = np.asarray(leaf)

# NTK-vector product of an MLP at the parameters drawn above
init_fn, apply_fn, _ = stax.serial(stax.Dense(8, b_std=0.5), stax.Erf(), stax.Dense(3))
_, params = init_fn(jax.random.PRNGKey(2), (5, 3))
x1, x2 = (jnp.asarray(v) for v in xs["flat"])
cot = jnp.asarray(np.random.RandomState(3).randn(4, 3))
out["ntk_vp/out12"] = np.asarray(nt.empirical_ntk_vp_fn(apply_fn, x1, x2, params)(cot))
out["ntk_vp/out11"] = np.asarray(
    nt.empirical_ntk_vp_fn(apply_fn, x1, None, params)(cot[:1].repeat(5, 0)))
for i, leaf in enumerate(jax.tree_util.tree_leaves(params)):
    out[f"ntk_vp/param/{i}"] = np.asarray(leaf)

# Diagonal algebra: every pair of the 9 requirements under >>, <<, & and bool
B = stax.Bool
reqs = [stax.Diagonal(input=i, output=o) for i, o in itertools.product(B, B)]
out["diagonal/pairs"] = np.array([[int(d.input), int(d.output)] for d in reqs])
for op, f in (("rshift", lambda a, b: a >> b), ("lshift", lambda a, b: a << b),
              ("and", lambda a, b: a & b)):
    out[f"diagonal/{op}"] = np.array([[[int(f(a, b).input), int(f(a, b).output)]
                                       for b in reqs] for a in reqs])
out["diagonal/bool"] = np.array([bool(d) for d in reqs])
out["bool/and"] = np.array([[int(a & b) for b in B] for a in B])

# unmask_fn zeroes the masked entries of a MaskedArray pytree
x = jnp.asarray(np.random.RandomState(4).randn(3, 4))
f = nt.stax.unmask_fn(lambda v: {"a": stax.MaskedArray(v, v > 0.5), "b": v})
res = f(x)
out["unmask/x"], out["unmask/a"], out["unmask/b"] = np.asarray(x), res["a"], res["b"]

# pending in infwidth (tests/test_nt_parity_pending.py): masking and a non-default channel axis
rng = np.random.RandomState(5)
xm1, xm2 = rng.randn(3, 6, 2), rng.randn(2, 6, 2)
xm1[0, 4:], xm2[1, 3:] = -1e9, -1e9  # padded positions carry the mask constant
out["mask/x1"], out["mask/x2"] = xm1, xm2
net = stax.serial(stax.Conv(3, (2,), padding="SAME"), stax.Relu(), stax.GlobalAvgPool(),
                  stax.Dense(1))
k = net[2](jnp.asarray(xm1), jnp.asarray(xm2), ("nngp", "ntk"), mask_constant=-1e9)
out["mask/nngp12"], out["mask/ntk12"] = np.asarray(k.nngp), np.asarray(k.ntk)
xc1, xc2 = rng.randn(3, 2, 5), rng.randn(2, 2, 5)  # (N, C, T)
out["channel_axis/x1"], out["channel_axis/x2"] = xc1, xc2
net = stax.serial(stax.Dense(3, b_std=0.1, channel_axis=1), stax.Relu(),
                  stax.Dense(1, channel_axis=1))
k = net[2](jnp.asarray(xc1), jnp.asarray(xc2), ("nngp", "ntk"), channel_axis=1)
out["channel_axis/nngp12"], out["channel_axis/ntk12"] = np.asarray(k.nngp), np.asarray(k.ntk)

np.savez_compressed(os.path.join(here, "dropin.npz"), **out)
print(f"wrote {len(out)} arrays")
