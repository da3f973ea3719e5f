"""Myrtle-5 CNN kernel regression at CIFAR-10 shape by random features, against the exact
kernel (the CNN's NNGP) on a subset where both run, in one process.

    python benchmarks/cnn_sketch.py [--n-train 10000] [--n-test 200] [--subset 128] [--m 128]

Data: 32x32x3 images (smooth Gaussian fields: white noise blurred by a 5x5 box filter,
standardized), 10 classes given by the argmax of a fixed random teacher (a Myrtle-5 network
of width 16 with ReLUs; each logit standardized over a fixed reference set of 2,000 images);
targets one-hot minus 0.1. Model: the NNGP of
`infwidth.architectures.myrtle(depth=5)` (float32); `predict.kernel_regression` solves the
ridge problem, `solver='features'` with `feature_fn(..., n_features=m)` on the full training
set, `solver='cholesky'` with the exact kernel on the first ``--subset`` training images (and
features on the same subset, for the like-for-like accuracy). Reported: test accuracy, wall
time (after compilation, which is reported apart) and the per-pair / per-image costs from
which the exact kernel's time on the full training set is extrapolated (N^2 / 2 + N * n_test
pairs).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from infwidth import predict
from infwidth.architectures import myrtle
from infwidth.features import feature_fn


def images(n, seed):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 37, 37, 3).astype(np.float32)
    c = np.cumsum(np.cumsum(x, 1), 2)  # 5x5 box blur by summed-area tables
    blur = c[:, 5:, 5:] - c[:, :-5, 5:] - c[:, 5:, :-5] + c[:, :-5, :-5]
    blur = blur[:, :32, :32]
    return (blur - blur.mean()) / blur.std()


def labels(x):
    init_fn, apply_fn, _ = myrtle(depth=5, width=16, parameterization="standard")
    _, params = init_fn(jax.random.PRNGKey(1234), (1, 32, 32, 3))

    def out(z):
        return jnp.concatenate([apply_fn(params, jnp.asarray(z[i:i + 512]))
                                for i in range(0, len(z), 512)])

    ref = out(images(2000, 99))
    logits = (out(x) - ref.mean(0)) / ref.std(0)
    return np.asarray(jnp.argmax(logits, -1))


def one_hot(y):
    return np.eye(10, dtype=np.float32)[y] - 0.1


def timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--subset", type=int, default=128)
    p.add_argument("--m", type=int, default=128, help="n_features")
    p.add_argument("--diag-reg", type=float, default=1e-2)
    p.add_argument("--tile", type=int, default=None,
                   help="images per feature tile (default: kernel_regression sizes it from "
                        "the feature map and the free memory; each image holds 32x32 "
                        "positions x ~18 m columns)")
    a = p.parse_args()
    net = myrtle(depth=5)
    x_train, x_test = images(a.n_train, 0), images(a.n_test, 1)
    y_train, y_test = labels(x_train), labels(x_test)
    print(f"Myrtle-5 NNGP, float32, {a.n_train} training / {a.n_test} test images 32x32x3, "
          f"10 classes (majority class {np.bincount(y_test).max() / a.n_test:.2f}), "
          f"m = {a.m} features, diag_reg = {a.diag_reg}")
    rows = []

    # random features on the full training set
    phi = feature_fn(net, jax.random.PRNGKey(0), a.m, get="nngp")
    _, compile_s = timed(phi, x_train[:8])
    t0 = time.perf_counter()
    fit = predict.kernel_regression(net.kernel_fn, x_train, one_hot(y_train), solver="features",
                                    n_features=a.m, diag_reg=a.diag_reg, key=jax.random.PRNGKey(0),
                                    tile_size=a.tile)
    pred = np.asarray(fit(x_test))
    feat_s = time.perf_counter() - t0
    print(f"feature tiles of {fit.info['tile_size']} images")
    rows.append(("features", a.n_train, float(np.mean(pred.argmax(-1) == y_test)), feat_s,
                 compile_s))

    # the subset: exact CNTK (Cholesky) and features on the same images
    n = a.subset
    kernel_fn = jax.jit(net.kernel_fn, static_argnames="get")
    _, compile_exact = timed(lambda: kernel_fn(x_train[:2], x_train[2:4], get="nngp"))
    t0 = time.perf_counter()
    k_tt = np.asarray(kernel_fn(x_train[:n], None, get="nngp"), np.float64)
    k_st = np.asarray(kernel_fn(x_test, x_train[:n], get="nngp"), np.float64)
    exact_s = time.perf_counter() - t0
    reg = a.diag_reg * np.trace(k_tt) / n
    alpha = np.linalg.solve(k_tt + reg * np.eye(n), one_hot(y_train[:n]))
    acc_exact = float(np.mean((k_st @ alpha).argmax(-1) == y_test))
    rows.append(("exact", n, acc_exact, exact_s, compile_exact))
    fit_sub = predict.kernel_regression(net.kernel_fn, x_train[:n], one_hot(y_train[:n]),
                                        solver="features", n_features=a.m, diag_reg=a.diag_reg,
                                        key=jax.random.PRNGKey(0), tile_size=a.tile)
    t0 = time.perf_counter()
    pred_sub = np.asarray(fit_sub(x_test))
    rows.append(("features", n, float(np.mean(pred_sub.argmax(-1) == y_test)),
                 time.perf_counter() - t0, None))

    print(f"{'solver':>9} {'N train':>8} {'test acc':>9} {'time s':>8} {'compile s':>10}")
    for r in rows:
        print(f"{r[0]:>9} {r[1]:>8} {r[2]:9.3f} {r[3]:8.1f} "
              f"{'' if r[4] is None else f'{r[4]:10.1f}'}")
    pairs = n * (n + 1) / 2 + a.n_test * n
    per_pair = exact_s / pairs
    full_pairs = a.n_train * (a.n_train + 1) / 2 + a.n_test * a.n_train
    print(f"exact kernel: {per_pair * 1e3:.1f} ms per pair; on {a.n_train} training images "
          f"{full_pairs * per_pair / 3600:.0f} h (extrapolated) against {feat_s:.0f} s for "
          f"features: {full_pairs * per_pair / feat_s:.0f}x")


if __name__ == "__main__":
    main()
