"""NNGP + NTK of a U-Net on 32x32x3 images (float32, x2 = x1), infwidth vs neural-tangents.

    python benchmarks/unet_kernel.py [--nt-python $(benchmarks/nt_env.sh)] [--cases ...]

The network is `infwidth.architectures.unet(depth=2, n_conv=2)` (Ronneberger et al. 2015,
arXiv:1505.04597: 3x3 'SAME' ReLU convolution blocks, 2x2 downsampling, 2x2 transposed
convolutions, skip concatenation, 1x1 readout), written layer by layer for neural-tangents
(tests/reference/catalogue_unet.py). Cases: the full per-pixel-pair kernel
(N, N, 32, 32, 32, 32) with average-pooling downsampling; the per-pixel kernel (N, N, 32, 32)
with diagonal_spatial=True, which needs strided-convolution downsampling; the image-level
kernel (N, N) of the global-average-pooling readout. Times are medians after compilation in a
fresh process; peak memory is the process's peak RSS.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
from _harness import main, time_call  # noqa: E402

CASES = {}
for _n in (1, 2, 4, 8):
    CASES[f"unet2-pixel 32px N={_n}"] = {"down": "avgpool", "readout": "pixel", "n": _n,
                                         "diag": False}
for _n in (8, 64):
    CASES[f"unet2-pixel-diag 32px N={_n}"] = {"down": "conv", "readout": "pixel", "n": _n,
                                              "diag": True}
for _n in (4, 8):
    CASES[f"unet2-gap 32px N={_n}"] = {"down": "avgpool", "readout": "gap", "n": _n,
                                       "diag": False}
DEFAULT = ["unet2-pixel 32px N=1", "unet2-pixel 32px N=4", "unet2-pixel-diag 32px N=64",
           "unet2-gap 32px N=4"]


def _run(stax, case, spec_or_builder):
    import jax
    import numpy as np

    x = jax.numpy.asarray(np.random.RandomState(0).randn(case["n"], 32, 32, 3), "float32")
    kernel_fn = jax.jit(spec_or_builder[2], static_argnames=("get", "diagonal_spatial"))
    return time_call(kernel_fn, x, None, get=("nngp", "ntk"), diagonal_spatial=case["diag"],
                     repeats=1 if case["n"] >= 8 and not case["diag"] else 3)


def infwidth_worker(case):
    from infwidth import stax
    from infwidth.architectures import unet

    return _run(stax, case, unet(depth=2, width=64, n_conv=2, downsample=case["down"],
                                 readout=case["readout"], out_dim=3, W_std=1.3, b_std=0.1))


def nt_worker(case):
    from _catalogue import build
    from catalogue_unet import unet_spec
    from neural_tangents import stax

    return _run(stax, case, build(stax, unet_spec(2, 64, 2, 2, case["down"], case["readout"])))


if __name__ == "__main__":
    main(__doc__.splitlines()[0], CASES, {"infwidth": infwidth_worker, "nt": nt_worker},
         default_cases=DEFAULT)
