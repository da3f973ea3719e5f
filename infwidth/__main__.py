"""Command-line entry point: ``python -m infwidth demo [options]`` (``make demo``)."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# name -> (layer factory, W_std): W_std at or near each activation's edge of chaos
ACTIVATIONS = {
    "relu": ("Relu", 2**0.5),
    "erf": ("Erf", 1.5),
    "gelu": ("Gelu", 1.5),
    "tanh": ("Tanh", 1.2),
    "abs": ("Abs", 2**0.5),
}


def _table(runs) -> str:
    """The errors of every width over all repeats and seeds, and the fitted rate with its
    spread across repeats (each repeat: fresh inputs, fresh networks)."""
    from .empirical import fit_rate

    widths = runs[0].widths
    errors = np.concatenate([res.errors for res in runs], axis=1)
    mean = errors.mean(1)
    rate, _, prefactor = fit_rate(widths, mean)
    lines = [f"{'width':>8} {'rel. error (mean)':>18} {'std over networks':>18} {'fit':>10}",
             "-" * 57]
    for w, m, s in zip(widths, mean, errors.std(1)):
        lines.append(f"{int(w):>8d} {m:>18.4g} {s:>18.3g} {prefactor * w ** rate:>10.4g}")
    rates = np.array([res.rate for res in runs])
    if len(runs) > 1:
        lines.append("fitted rate of each repeat: " + ", ".join(f"{r:.3f}" for r in rates))
        spread = (f" (mean +- std over {len(runs)} repeats: {rates.mean():.3f} "
                  f"+- {rates.std(ddof=1):.3f})")
    else:
        spread = " (one repeat: pass --repeats 3 or more to measure its spread)"
    lines.append(f"fitted rate: error ~ width^{rate:.3f}{spread} (theory: -0.5)")
    return "\n".join(lines)


def _demo(args) -> int:
    import jax

    from . import stax
    from .empirical import compare_widths, fit_rate

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
    print(f"Empirical NTK of single {layer_name} networks ({args.seeds} seeds per width, "
          f"{args.repeats} repeat(s), each with fresh inputs and networks) against the analytic "
          f"infinite-width NTK.")
    t0 = time.perf_counter()
    runs = []
    for r in range(args.repeats):  # repeat 0 uses the inputs above
        xr = x if r == 0 else jax.random.normal(jax.random.PRNGKey(args.seed + 2 * r),
                                                (args.n, args.d))
        runs.append(compare_widths(mlp, args.widths, xr, n_seeds=args.seeds,
                                   key=jax.random.PRNGKey(args.seed + 2 * r + 1)))
    text = _table(runs)
    print(text)
    print(f"({time.perf_counter() - t0:.1f} s)")
    widths = runs[0].widths
    errors = np.concatenate([res.errors for res in runs], axis=1)  # (W, repeats * seeds)
    mean, std = errors.mean(1), errors.std(1)
    rate, _, prefactor = fit_rate(widths, mean)
    os.makedirs(args.out, exist_ok=True)
    table = os.path.join(args.out, "ntk_vs_width.txt")
    with open(table, "w") as f:
        f.write(text + "\n")
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
        ax.errorbar(widths, mean, yerr=std, fmt="o",
                    label="empirical vs analytic (mean, std over networks)")
        ax.plot(widths, prefactor * widths.astype(float) ** rate, label=f"fit: width^{rate:.2f}")
        ax.plot(widths, mean[0] * (widths / widths[0]) ** -0.5, "--", label="1/sqrt(width)")
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
    ...       '--repeats', '2', '--out', out])  # doctest: +ELLIPSIS
    Analytic kernels of the 2-hidden-layer Relu network ...
    fitted rate: error ~ width^... (mean +- std over 2 repeats: ...) (theory: -0.5)
    ...
    0
    """
    parser = argparse.ArgumentParser(prog="python -m infwidth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="finite-width NTK vs the infinite-width limit, over widths")
    demo.add_argument("--widths", type=int, nargs="+",
                      default=[64, 128, 256, 512, 1024, 2048, 4096])
    demo.add_argument("--seeds", type=int, default=8, help="networks per width")
    demo.add_argument("--repeats", type=int, default=3,
                      help="independent repeats, each with fresh inputs and networks; the "
                           "fitted rate is reported as mean +- std over them (default 3)")
    demo.add_argument("--depth", type=int, default=2, help="hidden layers")
    demo.add_argument("--n", type=int, default=8, help="number of inputs")
    demo.add_argument("--d", type=int, default=16, help="input dimension")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    demo.add_argument("--out", default="demo_output",
                      help="folder for the table and the log-log plot (default: demo_output)")
    demo.add_argument("--no-plot", action="store_true", help="skip the plot")
    args = parser.parse_args(argv)
    if args.command == "demo" and args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give at least 1 repeat.")
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
