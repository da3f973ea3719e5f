"""Kernel regression at scale: FC ReLU NNGP on a synthetic teacher task (d = 32).

    python benchmarks/kernel_regression.py features --n 100000 1000000 --m 2048
    python benchmarks/kernel_regression.py exact --n 20000 --m 2048
    python benchmarks/kernel_regression.py cg --n 20000 50000
    python benchmarks/kernel_regression.py rate --n 64 256 1024 4096

* ``features``: `kernel_regression(solver='features')` on N training points read from a
  memory-mapped .npy file (made once, tile by tile, in ``--data``), so the process holds one
  chunk of tiles and the n_features^2 moments, never N x n_features. Peak memory is reported
  as the peak resident anonymous memory (RssAnon, sampled every 20 ms: the solver's own
  allocations, not the file pages the kernel maps in) and as ru_maxrss (everything).
* ``exact``: on the first N points, the exact kernel (Cholesky) and 'features' side by side,
  test MSE of both and their relative difference.
* ``cg``: matrix-free CG at each N; at the smallest N also Cholesky, and their agreement.
* ``rate``: the error of ``phi phi^T`` against ``kernel_fn`` as a function of n_features.

Test error: mean squared error on 5,000 fresh points with the same noise (its floor is the noise
variance 0.01). Each run prints one table row per measurement and appends it as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from infwidth import predict, stax  # noqa: E402

D = 32
NET = stax.serial(stax.Dense(1, W_std=2**0.5, b_std=0.1), stax.Relu(),
                  stax.Dense(1, W_std=1.0, b_std=0.1))


def teacher(x):
    """A fixed random two-layer tanh network of width 64 (targets add noise of variance
    0.01, in training and test sets alike)."""
    rng = np.random.RandomState(1234)
    w1 = rng.randn(D, 64) / np.sqrt(D)
    w2 = rng.randn(64, 1) / np.sqrt(64)
    return np.tanh(x @ w1) @ w2


def make_data(path, n, chunk=100_000):
    """``x`` (n, 32) float32 and ``y`` (n, 1) float32 written chunk by chunk to .npy files."""
    xp, yp = f"{path}_x_{n}.npy", f"{path}_y_{n}.npy"
    if not (os.path.exists(xp) and os.path.exists(yp)):
        x = np.lib.format.open_memmap(xp + ".tmp", "w+", np.float32, (n, D))
        y = np.lib.format.open_memmap(yp + ".tmp", "w+", np.float32, (n, 1))
        for start in range(0, n, chunk):
            rng = np.random.RandomState(start // chunk)
            xc = rng.randn(min(chunk, n - start), D)
            x[start:start + len(xc)] = xc
            y[start:start + len(xc)] = teacher(xc) + 0.1 * rng.randn(len(xc), 1)
        x.flush()
        y.flush()
        del x, y
        os.replace(xp + ".tmp", xp)
        os.replace(yp + ".tmp", yp)
    return np.load(xp, mmap_mode="r"), np.load(yp, mmap_mode="r")


def test_set(n=5000):
    rng = np.random.RandomState(999_999)
    x = rng.randn(n, D)
    return x, teacher(x) + 0.1 * rng.randn(n, 1)


class PeakAnon:
    """Samples RssAnon of this process in a thread; ``peak`` in bytes."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _read(self):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self):
        self.peak = self._read()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def mse(a, b):
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def emit(out, row):
    print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in row.items()), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def run_features(args):
    xt, yt = test_set()
    for n in args.n:
        x, y = make_data(args.data, n)
        with PeakAnon() as mem:
            t0 = time.perf_counter()
            fit = predict.kernel_regression(NET, x, y, solver="features", n_features=args.m,
                                            key=jax.random.PRNGKey(0), diag_reg=args.diag_reg,
                                            tile_size=args.tile)
            t_fit = time.perf_counter() - t0
            err = mse(fit(xt), yt)
        emit(args.out, dict(part="features", n=n, m=args.m, test_mse=err, fit_s=t_fit,
                            peak_anon_mib=mem.peak / 2**20,
                            maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run_exact(args):
    xt, yt = test_set()
    for n in args.n:
        x, y = make_data(args.data, n)
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        saved = f"{args.data}_exact_pred_{n}_{args.diag_reg:g}.npz"
        if os.path.exists(saved):  # the Cholesky solve of an earlier run (same data)
            with np.load(saved) as f:
                pe, t_exact = f["pred"], float(f["seconds"])
        else:
            t0 = time.perf_counter()
            exact = predict.kernel_regression(NET.kernel_fn, x, y, solver="cholesky",
                                              diag_reg=args.diag_reg)
            pe = exact(xt)
            t_exact = time.perf_counter() - t0
            np.savez(saved, pred=pe, seconds=t_exact)
        t0 = time.perf_counter()
        feats = predict.kernel_regression(NET, x, y, solver="features", n_features=args.m,
                                          key=jax.random.PRNGKey(0), diag_reg=args.diag_reg,
                                          tile_size=args.tile)
        pf = feats(xt)
        t_feat = time.perf_counter() - t0
        e_exact, e_feat = mse(pe, yt), mse(pf, yt)
        emit(args.out, dict(part="exact_vs_features", n=n, m=args.m, exact_mse=e_exact,
                            features_mse=e_feat, rel_diff=abs(e_feat - e_exact) / e_exact,
                            exact_s=t_exact, features_s=t_feat))


def run_cg(args):
    xt, yt = test_set()
    for n in args.n:
        x, y = make_data(args.data, n)
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        t0 = time.perf_counter()
        cg = predict.kernel_regression(NET.kernel_fn, x, y, solver="cg", diag_reg=args.diag_reg,
                                       tol=args.tol, rank=args.rank, tile_size=args.tile,
                                       progress=args.progress,
                                       checkpoint=args.checkpoint and f"{args.data}_cg_{n}.npz")
        pc = cg(xt)
        t_cg = time.perf_counter() - t0
        row = dict(part="cg", n=n, test_mse=mse(pc, yt), iterations=cg.info["iterations"],
                   residual=cg.info["residual"], precond_s=cg.info["preconditioner_seconds"],
                   cg_s=cg.info["cg_seconds"], total_s=t_cg)
        ref = f"{args.data}_exact_pred_{n}_{args.diag_reg:g}.npz"
        if os.path.exists(ref):
            with np.load(ref) as f:
                pe = f["pred"]
            row["max_rel_diff_vs_cholesky"] = float(np.abs(pc - pe).max() / np.abs(pe).max())
        emit(args.out, row)


def run_rate(args):
    """Relative Frobenius error of phi phi^T against kernel_fn vs n_features (mean of 8 keys)."""
    from infwidth.features import feature_fn

    nets = {"fc_relu_depth2": (stax.serial(
        stax.Dense(1, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.4, b_std=0.1),
        stax.Relu(), stax.Dense(1)), np.random.RandomState(2).randn(50, D)),
        "fc_erf_depth2": (stax.serial(
            stax.Dense(1, W_std=1.4, b_std=0.1), stax.Erf(), stax.Dense(1, W_std=1.4),
            stax.Erf(), stax.Dense(1)), np.random.RandomState(2).randn(50, D)),
        "cnn_relu": (stax.serial(
            stax.Conv(1, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
            stax.Conv(1, (3, 3), padding="SAME", W_std=1.4), stax.Relu(),
            stax.GlobalAvgPool(), stax.Dense(1)), np.random.RandomState(2).randn(8, 8, 8, 3))}
    for name, (net, x) in nets.items():
        k = net.kernel_fn(x, x, get=("nngp", "ntk"))
        for m in args.n:
            errs = []
            for s in range(8):
                f = feature_fn(net, jax.random.PRNGKey(s), m)(x)
                errs.append([float(np.linalg.norm(f.nngp @ f.nngp.T - k.nngp)
                                   / np.linalg.norm(k.nngp)),
                             float(np.linalg.norm(f.ntk @ f.ntk.T - k.ntk)
                                   / np.linalg.norm(k.ntk))])
            e = np.mean(errs, 0)
            emit(args.out, dict(part="rate", net=name, m=m, nngp_rel_err=float(e[0]),
                                ntk_rel_err=float(e[1])))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["features", "exact", "cg", "rate"])
    p.add_argument("--n", type=int, nargs="+", default=[20000])
    p.add_argument("--m", type=int, default=2048, help="n_features")
    p.add_argument("--diag-reg", type=float, default=3.0)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--rank", type=int, default=512)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--checkpoint", action="store_true", help="save and resume the CG state")
    p.add_argument("--data", default="/tmp/infwidth_kr")
    p.add_argument("--out", default="benchmarks/kernel_regression.jsonl")
    run = {"features": run_features, "exact": run_exact, "cg": run_cg, "rate": run_rate}
    run[p.parse_args().part](p.parse_args())
