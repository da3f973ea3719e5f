"""Command-line entry point: ``python -m infwidth demo [options]`` (``make demo``)."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args) -> int:
    import jax

    from . import stax
    from .empirical import compare_widths

    def mlp(width):
        layers = []
        for _ in range(args.depth):
            layers += [stax.Dense(width, W_std=1.5, b_std=0.05), stax.Relu()]
        return stax.serial(*layers, stax.Dense(1, W_std=1.5, b_std=0.05))

    x = jax.random.normal(jax.random.PRNGKey(args.seed), (args.n, args.d))
    print(f"Empirical NTK of single ReLU networks (depth {args.depth}, {args.seeds} seeds per "
          f"width, {args.n} inputs in d={args.d}) against the analytic infinite-width NTK.")
    t0 = time.perf_counter()
    res = compare_widths(mlp, args.widths, x, n_seeds=args.seeds,
                         key=jax.random.PRNGKey(args.seed + 1))
    print(res.table())
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib (pip install 'infwidth[plot]'); skipped.")
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
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


def main(argv=None) -> int:
    """Parses ``argv`` and runs the command.

    >>> main(['demo', '--widths', '16', '64', '--seeds', '2', '--n', '3'])  # doctest: +ELLIPSIS
    Empirical NTK of single ReLU networks ...
    fitted rate: error ~ width^... (theory: -0.5)
    ...
    0
    """
    parser = argparse.ArgumentParser(prog="python -m infwidth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="finite-width NTK vs the infinite-width limit, over widths")
    demo.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    demo.add_argument("--seeds", type=int, default=8, help="networks per width")
    demo.add_argument("--depth", type=int, default=2, help="hidden layers")
    demo.add_argument("--n", type=int, default=8, help="number of inputs")
    demo.add_argument("--d", type=int, default=16, help="input dimension")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--plot", metavar="OUT.png", help="also save a log-log plot (matplotlib)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
