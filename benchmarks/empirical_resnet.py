"""Empirical NTK of neural-tangents' notebook ResNet18 (flax.linen, batch norm in eval mode),
infwidth vs neural-tangents, per implementation (1 Jacobian contraction, 2 NTK-vector
products, 3 structured derivatives, 0 auto), trace_axes=(), vmap_axes=0, 2 x 2 images.

    python benchmarks/empirical_resnet.py [--nt-python $(../shared/tools/nt-venv.sh)] [--cases ...]

infwidth differentiates the Flax model itself (tests/flax_resnet.py). neural-tangents' venv has
no flax (JAX 0.4.25), so it differentiates a plain-JAX twin of the same network with the same
variables; the infwidth worker checks that the twin and the Flax model agree before timing.
The 3x512 MLP is in benchmarks/empirical_ntk.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _harness import main, time_call  # noqa: E402

CASES = {}
for out in (10, 128, 1000):
    for impl in (1, 2, 3, 0):
        CASES[f"resnet18-16 O={out} impl={impl}"] = {"out": out, "impl": impl, "filters": 16,
                                                     "image": 32}
CASES["resnet18-64 224px O=1000 impl=0"] = {"out": 1000, "impl": 0, "filters": 64,
                                            "image": 224}
DEFAULT = [c for c in CASES if "O=1000 impl=1" not in c and "224px" not in c]
STAGES = (2, 2, 2, 2)


def _variables(case):
    """The variables of the Flax model as nested dicts of numpy arrays, seeded, so both
    libraries get the same values (shapes from the Flax model, saved by the infwidth side)."""
    import numpy as np

    path = f"/tmp/empirical_resnet_{case['filters']}_{case['out']}_{case['image']}.npz"
    data = np.load(path)
    tree = {}
    for key in data.files:
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = data[key]
    return tree, data


def twin(v, x):
    """Plain-JAX ResNet with the Flax model's variable layout (same math, no flax)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    dn = ("NHWC", "HWIO", "NHWC")

    def conv(h, w, s, pad):
        return lax.conv_general_dilated(h, w, (s, s), pad, dimension_numbers=dn)

    def bn(h, p, s):
        return (h - s["mean"]) * lax.rsqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]

    P, S = v["params"], v["batch_stats"]
    h = jax.nn.relu(bn(conv(x, P["conv_init"]["kernel"], 2, [(3, 3), (3, 3)]), P["bn_init"],
                       S["bn_init"]))
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    k = 0
    for i, size in enumerate(STAGES):
        for j in range(size):
            s = 2 if i > 0 and j == 0 else 1
            p, st = P[f"Block_{k}"], S[f"Block_{k}"]
            y = jax.nn.relu(bn(conv(h, p["Conv_0"]["kernel"], s, "SAME"), p["BatchNorm_0"],
                               st["BatchNorm_0"]))
            y = bn(conv(y, p["Conv_1"]["kernel"], 1, "SAME"), p["BatchNorm_1"],
                   st["BatchNorm_1"])
            r = h
            if "conv_proj" in p:
                r = bn(conv(h, p["conv_proj"]["kernel"], s, "SAME"), p["norm_proj"],
                       st["norm_proj"])
            h = jax.nn.relu(r + y)
            k += 1
    h = jnp.mean(h, axis=(1, 2))
    return h @ P["Dense_0"]["kernel"] + P["Dense_0"]["bias"]


def _run(empirical_ntk_fn, f, v, x1, x2, case):
    import jax

    ntk_fn = empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=case["impl"])
    fn = jax.jit(lambda p, a, b: ntk_fn(a, b, p))
    out = time_call(fn, v, x1, x2, repeats=3 if case["image"] < 100 else 1)
    k = fn(v, x1, x2)
    out["k0000"] = float(k[0, 0, 0, 0])
    return out


def infwidth_worker(case):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax_resnet import resnet_fn

    from infwidth.empirical import empirical_ntk_fn

    f, v, x = resnet_fn(STAGES, case["out"], case["filters"], image=case["image"], n=4)
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(v)}
    np.savez(f"/tmp/empirical_resnet_{case['filters']}_{case['out']}_{case['image']}.npz",
             x=np.asarray(x), **flat)
    tree, _ = _variables(case)
    t, ref = twin(tree, x), f(v, x)
    assert float(jnp.max(jnp.abs(t - ref))) < 1e-4 * float(jnp.max(jnp.abs(ref))) + 1e-6
    return _run(empirical_ntk_fn, f, v, x[:2], x[2:], case)


def nt_worker(case):
    import jax.numpy as jnp
    from neural_tangents import empirical_ntk_fn

    tree, data = _variables(case)
    del tree["x"]
    x = jnp.asarray(data["x"])
    return _run(empirical_ntk_fn, twin, tree, x[:2], x[2:], case)


if __name__ == "__main__":
    main(__doc__.splitlines()[0], CASES, {"infwidth": infwidth_worker, "nt": nt_worker},
         default_cases=DEFAULT)
