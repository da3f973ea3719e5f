"""The evidence a fitted FC-ReLU NNGP reaches: infwidth's `gp.fit` against BoTorch's
InfiniteWidthBNNKernel fitted by BoTorch's own `fit_gpytorch_mll`, on the same data.

    BT=$(benchmarks/botorch_env.sh)      # builds a BoTorch environment once, prints its python
    python benchmarks/botorch_evidence.py --botorch-python $BT [--data diabetes teacher]

The model is the same on both sides: BoTorch's kernel of depth L (weight variance
``sigma_w^2`` and bias variance ``sigma_b^2`` shared by all layers, the arc-cosine recursion of
Cho & Saul 2009) is `stax.serial(Dense(1, W, b), [Relu(), Dense(1, W, b)] * L)` with
``W**2 = sigma_w^2`` and ``b**2 = sigma_b^2``, a zero mean and a learned Gaussian noise
variance (BoTorch: `SingleTaskGP` with `ZeroMean`, no outcome transform and a noise
likelihood without a prior, so that its marginal log likelihood is the plain evidence). Both
start from BoTorch's initial values (softplus(0) = 0.693 for both variances and the noise),
both in float64. Columns:

- ``evidence``: log p(y | x) at the fitted hyperparameters, as the library itself reports it;
- ``infwidth at theta``: infwidth's `gp.log_marginal_likelihood` evaluated at that library's
  fitted hyperparameters: for BoTorch's row it shows that the two models are one model (they
  differ by BoTorch's clamp of the correlation to 1 - 1e-7 only);
- ``first s``: wall time of the first fit in a fresh process (for infwidth, compilation
  included); ``fit s``: the median of ``--repeats`` further fits of the same model (infwidth
  reuses the compiled loop, as a user refitting the same model does).

Data: scikit-learn's bundled diabetes regression set (442 points, 10 features) and a teacher
task (N points in 8 dimensions, ``y = sin(x_0) + cos(x_1) + 0.1 noise``); inputs and targets
standardized.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

INIT = 0.6931471805599453  # softplus(0): BoTorch's initial variances and noise


def make_data(name, n, path):
    import numpy as np

    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
    elif name == "teacher":
        rng = np.random.RandomState(0)
        x = rng.randn(n, 8)
        y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + 0.1 * rng.randn(n)
    else:
        raise SystemExit(f"--data {name!r}: choose diabetes or teacher")
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    np.savez(path, x=x, y=y)
    return len(y)


def worker_infwidth(path, depth, repeats):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from infwidth import gp, stax

    d = np.load(path)
    x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])

    def net(w, b):
        layers = [stax.Dense(1, w, b)]
        for _ in range(depth):
            layers += [stax.Relu(), stax.Dense(1, w, b)]
        return stax.serial(*layers)

    init = {"W_std": INIT**0.5, "b_std": INIT**0.5, "diag_reg": INIT}

    def make_kernel_fn(h):
        return net(h["W_std"], h["b_std"]).kernel_fn

    times = []
    for _ in range(1 + repeats):  # later fits reuse the first one's compiled loop
        t = time.perf_counter()
        r = gp.fit(make_kernel_fn, init, x, y, steps=200, diag_reg_absolute_scale=True)
        times.append(time.perf_counter() - t)
    h = r.hparams
    theta = {"weight_var": h["W_std"] ** 2, "bias_var": h["b_std"] ** 2, "noise": h["diag_reg"]}
    out = {"theta": theta, "evidence": -float(r.losses[-1]) * y.size, "first": times[0],
           "median": statistics.median(times[1:]) if repeats else times[0],
           "steps": len(r.losses) - 1}
    if os.environ.get("EVAL_THETA"):  # infwidth's evidence at another library's theta
        other = json.loads(os.environ["EVAL_THETA"])
        kf = net(other["weight_var"] ** 0.5, other["bias_var"] ** 0.5).kernel_fn
        out["at_other"] = float(gp.log_marginal_likelihood(kf, x, y, other["noise"],
                                                           diag_reg_absolute_scale=True))
    out["at_own"] = float(gp.log_marginal_likelihood(
        net(h["W_std"], h["b_std"]).kernel_fn, x, y, h["diag_reg"],
        diag_reg_absolute_scale=True))
    return out


def worker_botorch(path, depth, repeats):
    import warnings

    import numpy as np
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.kernels import InfiniteWidthBNNKernel
    from gpytorch.constraints import GreaterThan
    from gpytorch.likelihoods import GaussianLikelihood
    from gpytorch.means import ZeroMean
    from gpytorch.mlls import ExactMarginalLogLikelihood

    warnings.filterwarnings("ignore")
    d = np.load(path)
    x = torch.tensor(d["x"], dtype=torch.float64)
    y = torch.tensor(d["y"], dtype=torch.float64)[:, None]
    times = []
    for _ in range(1 + repeats):
        t = time.perf_counter()
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(1e-6)).double()
        model = SingleTaskGP(x, y, covar_module=InfiniteWidthBNNKernel(depth).double(),
                             mean_module=ZeroMean(), likelihood=likelihood,
                             outcome_transform=None)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        fit_gpytorch_mll(mll)
        times.append(time.perf_counter() - t)
    model.train()
    with torch.no_grad():
        evidence = float(mll(model(x), y[:, 0])) * len(y)  # ExactMLL divides by N
    k = model.covar_module
    theta = {"weight_var": float(k.weight_var), "bias_var": float(k.bias_var),
             "noise": float(model.likelihood.noise)}
    return {"theta": theta, "evidence": evidence, "first": times[0],
            "median": statistics.median(times[1:]) if repeats else times[0], "steps": None}


def run(python, kind, path, a, env=None):
    cmd = [python, os.path.abspath(__file__), "--worker", kind, path, "--depth", str(a.depth),
           "--repeats", str(a.repeats)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, **(env or {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--botorch-python", default=os.environ.get("BOTORCH_PYTHON"),
                   help="python of an environment with BoTorch (benchmarks/botorch_env.sh)")
    p.add_argument("--data", nargs="+", default=["diabetes", "teacher"])
    p.add_argument("--n", type=int, default=1000, help="points of the teacher task")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", nargs=2)
    a = p.parse_args()
    if a.worker:
        fn = worker_infwidth if a.worker[0] == "infwidth" else worker_botorch
        print(json.dumps(fn(a.worker[1], a.depth, a.repeats)))
        return
    print(f"FC-ReLU NNGP of depth {a.depth}, float64, noise learned; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not a.botorch_python:
        print("(no --botorch-python: infwidth's rows only; benchmarks/botorch_env.sh builds "
              "BoTorch's environment)")
    print(f"{'data':>9} {'N':>5} {'library':>9} {'evidence':>11} {'infwidth at theta':>18} "
          f"{'sigma_w^2':>9} {'sigma_b^2':>9} {'noise':>8} {'first s':>8} {'fit s':>6} "
          f"{'steps':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.data:
            path = os.path.join(tmp, f"{name}.npz")
            n = make_data(name, a.n, path)
            rows = []
            if a.botorch_python:
                bt = run(a.botorch_python, "botorch", path, a)
                ours = run(sys.executable, "infwidth", path, a,
                           {"EVAL_THETA": json.dumps(bt["theta"])})
                bt["at_theta"] = ours["at_other"]
                rows.append(("BoTorch", bt))
            else:
                ours = run(sys.executable, "infwidth", path, a)
            ours["at_theta"] = ours["at_own"]
            rows.insert(0, ("infwidth", ours))
            for lib, r in rows:
                t = r["theta"]
                print(f"{name:>9} {n:>5} {lib:>9} {r['evidence']:11.4f} {r['at_theta']:18.4f} "
                      f"{t['weight_var']:9.4f} {t['bias_var']:9.4f} {t['noise']:8.5f} "
                      f"{r['first']:8.2f} {r['median']:6.2f} {r['steps'] or '':>5}", flush=True)


if __name__ == "__main__":
    main()
