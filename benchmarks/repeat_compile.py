"""Compile time of a depth-n residual ReLU network's NNGP + NTK: `repeat(block, n)` (one
lax.scan) vs `serial(*[block] * n)` (unrolled), infwidth vs neural-tangents (float32, N=64).

    python benchmarks/repeat_compile.py [--nt-python $(benchmarks/nt_env.sh)]

compile_s is the first call of the jit-compiled kernel_fn (trace + compile + run); the speedup
column compares run times after compilation.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main, time_call  # noqa: E402

CASES = {f"{kind} n={n}": {"kind": kind, "n": n}
         for kind in ("repeat", "serial") for n in (1, 10, 100)}


def _network(stax, case):
    block = stax.serial(stax.FanOut(2),
                        stax.parallel(stax.Identity(),
                                      stax.serial(stax.Relu(), stax.Dense(256, 1.4, 0.05))),
                        stax.FanInSum())
    body = (stax.repeat(block, case["n"]) if case["kind"] == "repeat"
            else stax.serial(*[block] * case["n"]))
    return stax.serial(stax.Dense(256, 1.4, 0.05), body, stax.Relu(), stax.Dense(1))


def _run(stax, case):
    import jax
    import numpy as np

    x = jax.numpy.asarray(np.random.RandomState(0).randn(64, 32), "float32")
    kernel_fn = jax.jit(_network(stax, case)[2], static_argnames="get")
    return time_call(kernel_fn, x, None, get=("nngp", "ntk"))


def infwidth_worker(case):
    from infwidth import stax

    return _run(stax, case)


def nt_worker(case):
    from neural_tangents import stax

    return _run(stax, case)


if __name__ == "__main__":
    main(__doc__.splitlines()[0], CASES, {"infwidth": infwidth_worker, "nt": nt_worker})
