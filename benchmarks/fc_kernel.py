"""NNGP + NTK of a depth-10 ReLU network (float32, x2 = x1), infwidth vs neural-tangents.

    python benchmarks/fc_kernel.py [--nt-python $(benchmarks/nt_env.sh)] [--cases ...]

Both libraries run the same jit-compiled kernel_fn in a fresh process; times are medians after
compilation, peak memory is the process's peak RSS.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main, time_call, untiled_if_asked, with_untiled  # noqa: E402

DEPTH = 10
CASES = {f"N={n} d={d}": {"n": n, "d": d} for n in (1024, 2048, 4096) for d in (100, 1024, 3072)}
CASES = with_untiled(CASES)
DEFAULT = ["N=1024 d=100", "N=1024 d=3072", "N=2048 d=1024", "N=4096 d=100", "N=4096 d=3072"]


def _network(stax):
    layers = []
    for _ in range(DEPTH):
        layers += [stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu()]
    layers.append(stax.Dense(1, W_std=1.5, b_std=0.05))
    return stax.serial(*layers)


def _run(stax, case):
    import jax
    import numpy as np

    x = jax.numpy.asarray(np.random.RandomState(0).randn(case["n"], case["d"]), "float32")
    kernel_fn = jax.jit(_network(stax)[2], static_argnames="get")
    return time_call(kernel_fn, x, None, get=("nngp", "ntk"))


def infwidth_worker(case):
    from infwidth import stax

    untiled_if_asked(stax, case)
    return _run(stax, case)


def nt_worker(case):
    from neural_tangents import stax

    return _run(stax, case)


if __name__ == "__main__":
    main(__doc__.splitlines()[0], CASES, {"infwidth": infwidth_worker, "nt": nt_worker},
         default_cases=DEFAULT)
