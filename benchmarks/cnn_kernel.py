"""NNGP + NTK of convolutional networks (float32, x2 = x1), infwidth vs neural-tangents.

    python benchmarks/cnn_kernel.py [--nt-python $(benchmarks/nt_env.sh)] [--cases ...]

Cases: Myrtle-5 (Shankar et al. 2020) on 32x32x3 images with the full (N, N, 32, 32, 32, 32)
position-pair kernel; a 3-layer 3x3 'SAME' ReLU CNN with global average pooling on 16x16x3;
a 21-layer 3x3 'SAME' ReLU CNN with a Flatten readout evaluated with diagonal_spatial=True.
Both libraries run the same jit-compiled kernel_fn in a fresh process; times are medians after
compilation (one timed call after the compiling one for Myrtle-5 with N >= 16), peak memory
is the process's peak RSS.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main, time_call, untiled_if_asked, with_untiled  # noqa: E402

CASES = {}
for _n in (8, 16, 32):
    CASES[f"myrtle5 32px N={_n}"] = {"net": "myrtle5", "n": _n, "px": 32, "diag": False}
for _n in (8, 16):
    CASES[f"cnn3-gap 16px N={_n}"] = {"net": "cnn3-gap", "n": _n, "px": 16, "diag": False}
for _n in (64, 256):
    CASES[f"cnn21-flat-diag 32px N={_n}"] = {"net": "cnn21-flatten", "n": _n, "px": 32,
                                             "diag": True}
CASES = with_untiled(CASES)
DEFAULT = ["cnn3-gap 16px N=16", "myrtle5 32px N=8", "myrtle5 32px N=16",
           "cnn21-flat-diag 32px N=64", "cnn21-flat-diag 32px N=256"]


def _network(stax, net):
    W, b = 2**0.5, 0.05
    conv = lambda: stax.Conv(64, (3, 3), padding="SAME", W_std=W, b_std=b)  # noqa: E731
    if net == "myrtle5":
        layers = [conv(), stax.Relu(), conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
                  conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
                  conv(), stax.Relu()] + [stax.AvgPool((2, 2), (2, 2))] * 3 + [stax.Flatten()]
    elif net == "cnn3-gap":
        layers = [conv(), stax.Relu()] * 3 + [stax.GlobalAvgPool()]
    else:
        layers = [conv(), stax.Relu()] * 21 + [stax.Flatten()]
    return stax.serial(*layers, stax.Dense(10, W_std=W, b_std=b))


def _run(stax, case):
    import jax
    import numpy as np

    shape = (case["n"], case["px"], case["px"], 3)
    x = jax.numpy.asarray(np.random.RandomState(0).randn(*shape), "float32")
    kernel_fn = jax.jit(_network(stax, case["net"])[2],
                        static_argnames=("get", "diagonal_spatial"))
    heavy = case["net"] == "myrtle5" and case["n"] >= 16  # minutes per call in neural-tangents
    return time_call(kernel_fn, x, None, get=("nngp", "ntk"), diagonal_spatial=case["diag"],
                     repeats=1 if heavy else 3)


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
