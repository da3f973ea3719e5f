"""Tiled kernel evaluation, infwidth.batch vs nt.batch: NNGP + NTK of the depth-10 FC network.

    python benchmarks/batching.py [--nt-python $(benchmarks/nt_env.sh)] [--cases ...]

Inputs (N, 100), float32, x2 = None, results gathered on the host (nt: store_on_device=False).
Each case runs in a fresh process: the time is that of one call after a first (compiling) call,
or, for the cases with repeats=0, of a single call with compilation included. Peak memory is
the process's peak RSS, which includes the N x N x 2 float32 results (N=8192: 512 MiB,
N=16384: 2 GiB, N=20000: 3 GiB). Cases named 'devices=k' run on k fake CPU devices
(--xla_force_host_platform_device_count=k) to show the sharded path; on this 2-core machine
they cannot be faster. Myrtle-5 keeps full (32x32)^2 spatial covariances: 'Myrtle-5 N=64'
takes many minutes on a CPU (nt: hours) and is not in the default cases; 'Myrtle-5 N=16' is.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main, time_call  # noqa: E402

DEPTH = 10
CASES = {
    "FC N=8192 tile=2048": {"n": 8192, "tile": 2048},
    "FC N=16384 tile=2048": {"n": 16384, "tile": 2048, "repeats": 0},
    "FC N=20000 tile=1024": {"n": 20000, "tile": 1024, "repeats": 0},
    "FC N=8192 devices=2": {"n": 8192, "tile": 2048, "devices": 2},
    "FC N=8192 devices=4": {"n": 8192, "tile": 2048, "devices": 4},
    "Myrtle-5 N=16 tile=8": {"n": 16, "tile": 8, "myrtle": True, "repeats": 0},
    "Myrtle-5 N=64 tile=8": {"n": 64, "tile": 8, "myrtle": True, "repeats": 0},
}
DEFAULT = ["FC N=8192 tile=2048", "FC N=16384 tile=2048", "FC N=20000 tile=1024",
           "FC N=8192 devices=4", "Myrtle-5 N=16 tile=8"]


def _fc(stax):
    layers = []
    for _ in range(DEPTH):
        layers += [stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu()]
    layers.append(stax.Dense(1, W_std=1.5, b_std=0.05))
    return stax.serial(*layers)


def _myrtle5(stax):
    """Myrtle-5 (Shankar et al. 2020, arXiv:2003.02237): conv-relu x2, pool, conv-relu, pool,
    conv-relu, three pools, a linear readout; 32x32 images."""
    def conv():
        return [stax.Conv(1, (3, 3), W_std=2 ** 0.5, b_std=0.0, padding="SAME"), stax.Relu()]

    pool = stax.AvgPool((2, 2), strides=(2, 2))
    return stax.serial(*conv(), *conv(), pool, *conv(), pool, *conv(), pool, pool, pool,
                       stax.Flatten(), stax.Dense(10, W_std=2 ** 0.5, b_std=0.0))


def _inputs(case):
    import numpy as np

    rng = np.random.RandomState(0)
    if case.get("myrtle"):
        return rng.randn(case["n"], 32, 32, 3).astype("float32")
    return rng.randn(case["n"], 100).astype("float32")


def _setup_devices(case):
    os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count="
                               f"{case.get('devices', 1)}")


def _time(fn, case):
    import time

    import jax

    repeats = case.get("repeats", 3)
    if repeats == 0:  # one call: the time includes compilation
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        return {"time_s": time.perf_counter() - t0, "compile_s": float("nan"), "repeats": 0}
    return time_call(fn, repeats=repeats)


def infwidth_worker(case):
    _setup_devices(case)
    import infwidth
    from infwidth import stax

    if case.get("myrtle") and not hasattr(stax, "Conv"):
        raise SystemExit("needs stax.Conv (issue 4)")
    kernel_fn = (_myrtle5 if case.get("myrtle") else _fc)(stax).kernel_fn
    x = _inputs(case)
    batched = infwidth.batch(kernel_fn, case["tile"])
    result = _time(lambda: batched(x, None, get=("nngp", "ntk")), case)
    result["tiles"] = batched.stats["tiles"]
    return result


def nt_worker(case):
    if "devices" in case:
        raise SystemExit("not run (scaling case)")
    _setup_devices(case)
    import neural_tangents as nt
    from neural_tangents import stax

    kernel_fn = (_myrtle5 if case.get("myrtle") else _fc)(stax)[2]
    x = _inputs(case)
    batched = nt.batch(kernel_fn, case["tile"], store_on_device=False)
    return _time(lambda: batched(x, None, ("nngp", "ntk")), case)


if __name__ == "__main__":
    main(__doc__.splitlines()[0], CASES, {"infwidth": infwidth_worker, "nt": nt_worker},
         default_cases=DEFAULT)
