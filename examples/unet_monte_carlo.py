"""Monte Carlo check of the U-Net kernel: finite U-Nets of growing width against the analytic
NNGP and NTK (`infwidth.architectures.unet`, Ronneberger et al. 2015, arXiv:1505.04597).

    python examples/unet_monte_carlo.py [--px 8] [--widths 16 64 256] [--ntk-samples 8]

Two 8x8x3 images, depth 2 (8 -> 4 -> 2 pixels), one convolution per block, equal widths at
every level; the analytic kernels in float64, the estimates (`monte_carlo_kernel_fn`) in
float32. Prints the relative Frobenius error of the estimate and its standard error (both
relative to the analytic kernel). The NNGP averages 64 output channels per draw; the NTK uses
one output channel.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from infwidth.architectures import unet
from infwidth.empirical import monte_carlo_kernel_fn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--px", type=int, default=8)
    parser.add_argument("--widths", type=int, nargs="*", default=[16, 64, 256])
    parser.add_argument("--nngp-samples", type=int, default=256)
    parser.add_argument("--ntk-samples", type=int, default=8)
    args = parser.parse_args()
    x = np.random.RandomState(0).randn(2, args.px, args.px, 3)
    with jax.enable_x64(True):
        kernel_fn = jax.jit(unet(depth=2, n_conv=1)[2], static_argnames="get")
        exact = kernel_fn(jnp.asarray(x), get=("nngp", "ntk"))
        exact = {f: np.asarray(getattr(exact, f)) for f in ("nngp", "ntk")}
    x = jnp.asarray(x, jnp.float32)
    print(f"{'kernel':<6} {'width':>6} {'draws':>6} {'rel. error':>10} {'std. error':>10} "
          f"{'time s':>7}")
    for get, n_samples, out_dim in (("nngp", args.nngp_samples, 64),
                                    ("ntk", args.ntk_samples, 1)):
        for width in args.widths:
            init_fn, apply_fn, _ = unet(depth=2, width=width, n_conv=1, channel_multiplier=1,
                                        out_dim=out_dim)
            t0 = time.perf_counter()
            est = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(1), n_samples,
                                        standard_error=True)(x, None, get)
            norm = np.linalg.norm(exact[get])
            err = np.linalg.norm(np.asarray(est.mean) - exact[get]) / norm
            se = np.linalg.norm(np.asarray(est.stderr)) / norm
            print(f"{get:<6} {width:>6} {n_samples:>6} {err:>10.4f} {se:>10.4f} "
                  f"{time.perf_counter() - t0:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
