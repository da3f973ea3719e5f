"""Time to fit the hyperparameters of an infinite-width kernel by marginal likelihood.

    python benchmarks/gp_fit.py [--sizes 500 1000 2000] [--steps 20] [--x64]

Model: the NNGP of a depth-2 fully connected ReLU network, W_std and b_std shared by all
layers (a 2-hyperparameter kernel), noise variance fixed at 0.01 * mean diagonal (or learned,
'+noise' rows); data: N points in 8 dimensions, y = sin(x_0) + cos(x_1) + 0.1 noise.
`infwidth.gp.fit` runs optax L-BFGS for a fixed number of steps, compiled once: the times
below include compilation (each `fit` call compiles its loop) and are the median of
`--repeats` calls (default 3),
each case in a fresh subprocess with its peak resident memory. For reference, scikit-learn's
GaussianProcessRegressor (fmin_l_bfgs_b, no restarts) fits the same kernel through
`infwidth.gp.sklearn.InfiniteWidthKernel` (+ WhiteKernel, so it also learns the noise).
'evidence/N' is the evidence per point each reaches; 'CPU s' the CPU time of the whole worker
process (imports and all repeats), less distorted than wall time on a shared machine.
neural-tangents has no fitting, so there is no ratio against it.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _data(n):
    import numpy as np

    rng = np.random.RandomState(0)
    x = rng.randn(n, 8)
    y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + 0.1 * rng.randn(n)
    return x, (y - y.mean()) / y.std()


def _net(stax, w, b):
    return stax.serial(stax.Dense(1, w, b), stax.Relu(), stax.Dense(1, w, b), stax.Relu(),
                       stax.Dense(1, w, b))


def worker(kind, n, steps, x64, repeats):
    import jax

    if x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from infwidth import gp, stax

    x, y = _data(n)
    times = []
    if kind in ("fit", "fit+noise"):
        init = {"W_std": 1.0, "b_std": 0.5}
        kwargs = {"diag_reg": 0.01}
        if kind == "fit+noise":
            init, kwargs = {**init, "diag_reg": 0.05}, {}
        make = lambda h: _net(stax, h["W_std"], h["b_std"]).kernel_fn
        for _ in range(repeats):
            t = time.perf_counter()
            r = gp.fit(make, init, jnp.asarray(x), jnp.asarray(y), steps=steps, **kwargs)
            times.append(time.perf_counter() - t)
        value = -float(r.losses[-1])
        hp = r.hparams
    else:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import WhiteKernel

        from infwidth.gp.sklearn import InfiniteWidthKernel

        def net(W_std, b_std):
            return _net(stax, W_std, b_std)

        for _ in range(repeats):
            kernel = InfiniteWidthKernel(net, {"W_std": 1.0, "b_std": 0.5}) + WhiteKernel(0.05)
            t = time.perf_counter()
            g = GaussianProcessRegressor(kernel).fit(x, y)
            times.append(time.perf_counter() - t)
        value = g.log_marginal_likelihood_value_ / n
        hp = {**g.kernel_.k1.hparams, "noise": g.kernel_.k2.noise_level}
    return {"time": statistics.median(times), "first": times[0], "value": value,
            "hparams": {k: round(float(v), 4) for k, v in hp.items()},
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--x64", action="store_true")
    p.add_argument("--kinds", nargs="+", default=["fit", "fit+noise", "sklearn"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", nargs=2)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.steps, a.x64, a.repeats)))
        return
    print(f"dtype {'float64' if a.x64 else 'float32'}, {a.steps} L-BFGS steps, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    t0 = os.times()
    print(f"{'N':>6} {'method':>10} {'median s':>9} {'first s':>8} {'peak MiB':>9} "
          f"{'evidence/N':>11} {'CPU s':>7}  fitted")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))}
    for n in a.sizes:
        for kind in a.kinds:
            cmd = [sys.executable, __file__, "--worker", kind, str(n), "--steps", str(a.steps),
                   "--repeats", str(a.repeats)]
            cmd += ["--x64"] if a.x64 else []
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"{n:>6} {kind:>10} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            t1 = os.times()
            r["cpu"] = (t1.children_user + t1.children_system - t0.children_user
                        - t0.children_system)
            t0 = t1
            print(f"{n:>6} {kind:>10} {r['time']:9.2f} {r['first']:8.2f} {r['rss']:9.0f} "
                  f"{r['value']:11.4f} {r['cpu']:7.1f}  {r['hparams']}", flush=True)


if __name__ == "__main__":
    main()
