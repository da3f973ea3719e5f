"""Empirical NTK (float32, trace over the 8 outputs, vmap_axes=0), infwidth vs neural-tangents,
per implementation: 1 Jacobian contraction, 2 NTK-vector products, 3 structured derivatives.

    python benchmarks/empirical_ntk.py [--nt-python $(../shared/tools/nt-venv.sh)] [--cases ...]

Both libraries differentiate the same plain-JAX function with the same parameters, so only the
empirical-NTK machinery differs. Sizes follow issue 6 except the MLP width: 3 hidden layers of
WIDTH (default 512, not 2048) on d=3072 inputs, because the Jacobian-contraction baseline needs
N * 8 * params floats (7.5 GB at width 2048 and N=16) and this machine is shared. The CNN is
two 3x3 SAME convolutions (32 channels) on 16x16x3 images, then a dense readout.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main, time_call  # noqa: E402

WIDTH = int(os.environ.get("EMPIRICAL_BENCH_WIDTH", 512))
D, OUT = 3072, 8
CASES = {}
for n in (16, 128):
    for impl in (1, 2, 3):
        CASES[f"mlp N={n} impl={impl}"] = {"net": "mlp", "n": n, "impl": impl}
for impl in (1, 2, 3):
    CASES[f"cnn N=16 impl={impl}"] = {"net": "cnn", "n": 16, "impl": impl}
# Jacobian contraction at N=128 needs ~8.6 GB of Jacobians: left out by default.
DEFAULT = [c for c in CASES if c != "mlp N=128 impl=1"]


def _net(case):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    rng = np.random.RandomState(0)
    if case["net"] == "mlp":
        shapes = [(D, WIDTH), (WIDTH,), (WIDTH, WIDTH), (WIDTH,), (WIDTH, WIDTH), (WIDTH,),
                  (WIDTH, OUT)]
        x = rng.randn(case["n"], D)

        def f(p, x):
            h = x
            for i in range(0, 6, 2):
                h = jax.nn.relu(h @ p[i] / np.sqrt(p[i].shape[0]) + p[i + 1])
            return h @ p[6] / np.sqrt(WIDTH)
    else:
        shapes = [(3, 3, 3, 32), (32,), (3, 3, 32, 32), (32,), (16 * 16 * 32, OUT)]
        x = rng.randn(case["n"], 16, 16, 3)
        dn = ("NHWC", "HWIO", "NHWC")

        def f(p, x):
            h = x
            for i in (0, 2):
                h = lax.conv_general_dilated(h, p[i], (1, 1), "SAME", dimension_numbers=dn)
                h = jax.nn.relu(h / np.sqrt(np.prod(p[i].shape[:3])) + p[i + 1])
            h = h.reshape(h.shape[0], -1)
            return h @ p[4] / np.sqrt(h.shape[-1])

    params = [jnp.asarray(rng.randn(*s), jnp.float32) for s in shapes]
    return f, params, jnp.asarray(x, jnp.float32)


def _run(empirical_ntk_fn, case):
    import jax

    f, params, x = _net(case)
    ntk_fn = empirical_ntk_fn(f, vmap_axes=0, implementation=case["impl"])
    fn = jax.jit(lambda p, x: ntk_fn(x, None, p))
    return time_call(fn, params, x, repeats=3)


def infwidth_worker(case):
    from infwidth.empirical import empirical_ntk_fn

    return _run(empirical_ntk_fn, case)


def nt_worker(case):
    from neural_tangents import empirical_ntk_fn

    return _run(empirical_ntk_fn, case)


if __name__ == "__main__":
    main(__doc__.splitlines()[0], CASES, {"infwidth": infwidth_worker, "nt": nt_worker},
         default_cases=DEFAULT)
