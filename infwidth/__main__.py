"""Command-line entry point: ``python -m infwidth demo [options]`` (``make demo``)."""

from __future__ import annotations

import argparse
import os
import sys
import time

# name -> (layer factory, W_std): W_std at or near each activation's edge of chaos
ACTIVATIONS = {
    "relu": ("Relu", 2**0.5),
    "erf": ("Erf", 1.5),
    "gelu": ("Gelu", 1.5),
    "tanh": ("Tanh", 1.2),
    "abs": ("Abs", 2**0.5),
}


def _demo(args) -> int:
    import jax

    from . import stax
    from .empirical import compare_widths

    layer_name, W_std = ACTIVATIONS[args.activation]
    activation = getattr(stax, layer_name)()  # one instance: its kernel map compiles once

    def mlp(width):
        layers = []
        for _ in range(args.depth):
            layers += [stax.Dense(width, W_std=W_std, b_std=0.05), activation]
        return stax.serial(*layers, stax.Dense(1, W_std=W_std, b_std=0.05))

    x = jax.random.normal(jax.random.PRNGKey(args.seed), (args.n, args.d))
    nngp, ntk = mlp(1)[2](x, get=("nngp", "ntk"))
    print(f"Analytic kernels of the {args.depth}-hidden-layer {layer_name} network on {args.n} "
          f"random inputs in d={args.d}: NNGP diagonal mean {float(nngp.diagonal().mean()):.4f}, "
          f"NTK diagonal mean {float(ntk.diagonal().mean()):.4f}.")
    print(f"Empirical NTK of single {layer_name} networks ({args.seeds} seeds per width) against "
          f"the analytic infinite-width NTK.")
    t0 = time.perf_counter()
    res = compare_widths(mlp, args.widths, x, n_seeds=args.seeds,
                         key=jax.random.PRNGKey(args.seed + 1))
    print(res.table())
    print(f"({time.perf_counter() - t0:.1f} s)")
    os.makedirs(args.out, exist_ok=True)
    table = os.path.join(args.out, "ntk_vs_width.txt")
    with open(table, "w") as f:
        f.write(res.table() + "\n")
    print(f"wrote {table}")
    if not args.no_plot:
        plot = os.path.join(args.out, "ntk_vs_width.png")
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("no plot: matplotlib is not installed (pip install 'infwidth[plot]').")
            return 0
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.errorbar(res.widths, res.mean, yerr=res.std, fmt="o", label="empirical vs analytic")
        ax.plot(res.widths, res.prefactor * res.widths.astype(float) ** res.rate,
                label=f"fit: width^{res.rate:.2f}")
        ax.plot(res.widths, res.mean[0] * (res.widths / res.widths[0]) ** -0.5, "--",
                label="1/sqrt(width)")
        ax.set(xscale="log", yscale="log", xlabel="width", ylabel="relative NTK error")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        plt.close(fig)
        print(f"wrote {plot}")
    return 0


def main(argv=None) -> int:
    """Parses ``argv`` and runs the command.

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> main(['demo', '--widths', '16', '64', '--seeds', '2', '--n', '3', '--no-plot',
    ...       '--out', out])  # doctest: +ELLIPSIS
    Analytic kernels of the 2-hidden-layer Relu network ...
    fitted rate: error ~ width^... (theory: -0.5)
    ...
    0
    """
    parser = argparse.ArgumentParser(prog="python -m infwidth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="finite-width NTK vs the infinite-width limit, over widths")
    demo.add_argument("--widths", type=int, nargs="+",
                      default=[64, 128, 256, 512, 1024, 2048, 4096])
    demo.add_argument("--seeds", type=int, default=8, help="networks per width")
    demo.add_argument("--depth", type=int, default=2, help="hidden layers")
    demo.add_argument("--n", type=int, default=8, help="number of inputs")
    demo.add_argument("--d", type=int, default=16, help="input dimension")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    demo.add_argument("--out", default="demo_output",
                      help="folder for the table and the log-log plot (default: demo_output)")
    demo.add_argument("--no-plot", action="store_true", help="skip the plot")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
