"""Prediction (float64), infwidth vs neural-tangents: gradient_descent_mse sweep and ensemble.

    python benchmarks/predict.py [--nt-python $(../shared/tools/nt-venv.sh)] [--cases ...]

Each timed call builds a fresh ``predict_fn`` from a train-train NTK (N x N), 10 outputs and a
test-train NTK (N/4 x N), and predicts train and test outputs at t = 10, 100, 1000 (one call
with an array of times) and t = None, so the factorizations are inside the timing. The kernel is
the NTK of a one-hidden-layer ReLU network on random inputs, computed with numpy. Both workers
write their outputs to the temp directory and the driver prints their largest relative
difference (``equal accuracy``).

The ``ensemble`` case is issue 26's workload: ``gradient_descent_mse_ensemble`` of a 2-hidden-
layer ReLU network (width-independent kernels, computed by each library's own ``kernel_fn``),
2048 training and 512 test points, 10 outputs, ``get='ntk'`` with ``compute_cov=True`` at 4
times (one call with an array of times); a fresh ``predict_fn`` per timed call, so the kernels
and the eigendecomposition are inside the timing.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main, time_call  # noqa: E402

CASES = {f"N={n} test={n // 4} C=10": {"n": n, "n_test": n // 4, "c": 10} for n in (1024, 4096)}
CASES["ensemble N=2048 test=512 C=10"] = {"n": 2048, "n_test": 512, "c": 10, "ensemble": True}
DEFAULT = list(CASES)
TIMES = (10.0, 100.0, 1000.0)


def _out_path(lib, case):
    tag = f"n{case['n']}" + ("_ensemble" if case.get("ensemble") else "")
    return os.path.join(tempfile.gettempdir(), f"infwidth_bench_predict_{lib}_{tag}.npz")


def _data(case):
    import numpy as np

    rng = np.random.RandomState(0)
    n, n_test, c, d = case["n"], case["n_test"], case["c"], 64
    x = rng.randn(n + n_test, d)
    x /= np.linalg.norm(x, axis=1, keepdims=True) / np.sqrt(d)
    nngp0 = x @ x.T / d
    q = np.sqrt(np.outer(np.diag(nngp0), np.diag(nngp0)))
    theta = np.arccos(np.clip(nngp0 / q, -1, 1))
    nngp1 = q * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    ntk = nngp1 + nngp0 * (np.pi - theta) / (2 * np.pi)  # Dense-Relu-Dense NTK, W_std=1
    return {
        "k_dd": ntk[:n, :n], "k_td": ntk[n:, :n], "y": rng.randn(n, c),
        "f0": 0.1 * rng.randn(n, c), "ft0": 0.1 * rng.randn(n_test, c),
    }


def _run_ensemble(predict, stax, lib, case):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.RandomState(0)
    n, n_test, c = case["n"], case["n_test"], case["c"]
    x = jnp.asarray(rng.randn(n + n_test, 64))
    x_train, x_test, y = x[:n], x[n:], jnp.asarray(rng.randn(n, c))
    _, _, kernel_fn = stax.serial(stax.Dense(512, 1.5, 0.05), stax.Relu(),
                                  stax.Dense(512, 1.5, 0.05), stax.Relu(),
                                  stax.Dense(c, 1.5, 0.05))
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    times = jnp.asarray(TIMES + (1e4,))

    def ensemble():
        fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y)
        return fn(times, x_test, "ntk", compute_cov=True)

    result = time_call(ensemble, repeats=1)
    out = ensemble()
    np.savez(_out_path(lib, case), mean=np.asarray(out.mean), cov=np.asarray(out.covariance))
    return result


def _run(predict, lib, case):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    d = {k: jnp.asarray(v) for k, v in _data(case).items()}
    times = jnp.asarray(TIMES)

    def sweep():
        fn = predict.gradient_descent_mse(d["k_dd"], d["y"], learning_rate=1.0)
        finite = fn(times, d["f0"], d["ft0"], d["k_td"])
        inf = fn(None, d["f0"], d["ft0"], d["k_td"])
        return finite, inf

    result = time_call(sweep, repeats=2)
    (tr, te), (tr_inf, te_inf) = sweep()
    np.savez(_out_path(lib, case), train=np.asarray(tr), test=np.asarray(te),
             test_inf=np.asarray(te_inf))
    return result


def infwidth_worker(case):
    from infwidth import predict, stax

    if case.get("ensemble"):
        return _run_ensemble(predict, stax, "infwidth", case)
    return _run(predict, "infwidth", case)


def nt_worker(case):
    from neural_tangents import predict, stax

    if case.get("ensemble"):
        return _run_ensemble(predict, stax, "nt", case)
    return _run(predict, "nt", case)


def _accuracy(names):
    import numpy as np

    for name in names:
        case = CASES[name]
        paths = [_out_path(lib, case) for lib in ("infwidth", "nt")]
        if not all(os.path.exists(p) for p in paths):
            continue
        a, b = (np.load(p) for p in paths)
        errs = {k: float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k])) for k in b.files}
        print(f"{name}: relative difference infwidth vs nt: "
              + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))


if __name__ == "__main__":
    main(__doc__.splitlines()[0], CASES, {"infwidth": infwidth_worker, "nt": nt_worker},
         default_cases=DEFAULT)
    if "--worker" not in sys.argv:
        _accuracy([n for n in CASES if n in " ".join(sys.argv)] or DEFAULT)
