"""The prediction calls compared with neural-tangents: :func:`run` makes the same calls with
either library's ``predict`` module on stored float64 inputs and kernels, and returns a flat dict
of outputs (``tests/reference/predict.npz`` holds neural-tangents' dict)."""

import numpy as np

N_TRAIN, N_TEST, N_OUT, DIM = 12, 7, 3, 4
TIMES = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
ARCH = [("Dense", {"out_dim": 512, "W_std": 1.5, "b_std": 0.1}), ("Relu", {}),
        ("Dense", {"out_dim": 512, "W_std": 1.5, "b_std": 0.1}), ("Relu", {}),
        ("Dense", {"out_dim": 1, "W_std": 1.5, "b_std": 0.1})]


def inputs(seed=0):
    """Deterministic float64 data (the kernels are added by the make script)."""
    rng = np.random.RandomState(seed)
    out = {
        "x_train": rng.randn(N_TRAIN, DIM),
        "x_test": rng.randn(N_TEST, DIM),
        "y_train": rng.randn(N_TRAIN, N_OUT),
        "fx_train_0": 0.3 * rng.randn(N_TRAIN, N_OUT),
        "fx_test_0": 0.3 * rng.randn(N_TEST, N_OUT),
        "labels": np.eye(N_OUT)[rng.randint(0, N_OUT, N_TRAIN)],
        "times": TIMES,
    }
    # A kernel over outputs with a non-traced axis: y (N, H, C), kernel (N, N, H, H).
    n, h, c = 6, 2, 3
    a = rng.randn(n * h, 40)
    k = (a @ a.T / 40 + 0.1 * np.eye(n * h)).reshape(n, h, n, h).transpose(0, 2, 1, 3)
    b = rng.randn(4 * h, 40)
    k_td = (b @ a.T / 40).reshape(4, h, n, h).transpose(0, 2, 1, 3)
    out.update(spatial_k=k, spatial_k_td=k_td, spatial_y=rng.randn(n, h, c),
               spatial_f0=0.2 * rng.randn(n, h, c), spatial_ft0=0.2 * rng.randn(4, h, c))
    return out


def lookup_kernel_fn(data, namedtuple):
    """A ``kernel_fn(x1, x2, get)`` returning the stored kernels (isolates prediction code)."""
    kernel = namedtuple("Kernel", ("nngp", "ntk"))

    def kernel_fn(x1, x2=None, get=None, **kwargs):
        tag1 = "train" if np.array_equal(np.asarray(x1), data["x_train"]) else "test"
        tag2 = tag1 if x2 is None else "train"
        key = {("train", "train"): "dd", ("test", "train"): "td", ("test", "test"): "tt"}[
            (tag1, tag2)]
        k = kernel(data["nngp_" + key], data["ntk_" + key])
        if get is None:
            return k
        if isinstance(get, str):
            return getattr(k, get)
        return namedtuple("Kernel", tuple(get))(*(getattr(k, g) for g in get))

    return kernel_fn


def run(predict, jnp, jax, data):
    """All compared calls; ``data`` holds the inputs and the stored kernels (float64)."""
    from collections import namedtuple

    d = {k: jnp.asarray(v) for k, v in data.items()}
    kd = namedtuple("K", ("nngp", "ntk"))(d["nngp_dd"], d["ntk_dd"])
    kt = namedtuple("K", ("nngp", "ntk"))(d["nngp_td"], d["ntk_td"])
    out = {}

    # gp_inference: every mode, mean and covariance, with and without regularization.
    for reg in (0.0, 1e-3):
        fn = predict.gp_inference(kd, d["y_train"], diag_reg=reg)
        for g in ("nngp", "ntk", "ntkgp"):
            r = fn(g, kt, namedtuple("K", ("nngp", "ntk"))(d["nngp_tt"], d["ntk_tt"]))
            out[f"gp/{reg}/{g}/mean"], out[f"gp/{reg}/{g}/cov"] = r.mean, r.covariance
            out[f"gp/{reg}/{g}/mean_only"] = fn(g, kt)
        out[f"gp/{reg}/train_cov"] = fn("nngp", None, True).covariance
    out["gp/abs"] = predict.gp_inference(d["ntk_dd"], d["y_train"], 0.5, True)("ntk", d["ntk_td"])

    # gradient_descent_mse: finite times (array), a scalar, infinity, t=None.
    for lr, reg in ((1.0, 0.0), (0.7, 1e-4)):
        fn = predict.gradient_descent_mse(d["ntk_dd"], d["y_train"], lr, reg)
        tr, te = fn(d["times"], d["fx_train_0"], d["fx_test_0"], d["ntk_td"])
        out[f"mse/{lr}/train"], out[f"mse/{lr}/test"] = tr, te
        out[f"mse/{lr}/scalar"] = fn(3.0, d["fx_train_0"], d["fx_test_0"], d["ntk_td"])[1]
        out[f"mse/{lr}/inf"] = fn(jnp.inf, d["fx_train_0"], d["fx_test_0"], d["ntk_td"])[1]
        out[f"mse/{lr}/none"] = fn(None, d["fx_train_0"], d["fx_test_0"], d["ntk_td"])[1]
        out[f"mse/{lr}/test_only"] = fn(d["times"][1:3], None, d["fx_test_0"], d["ntk_td"])
        out[f"mse/{lr}/none_test_only"] = fn(None, None, d["fx_test_0"], d["ntk_td"])
        out[f"mse/{lr}/train_only"] = fn(d["times"], d["fx_train_0"])
    t2 = d["times"][1:].reshape(2, 2)
    out["mse/t2d"] = predict.gradient_descent_mse(d["ntk_dd"], d["y_train"])(
        t2, 0.0, 0.0, d["ntk_td"])[1]

    # Non-traced output axis (N, H, C) with kernel (N, N, H, H).
    fn = predict.gradient_descent_mse(d["spatial_k"], d["spatial_y"], 2.0, 1e-3)
    sp = fn(d["times"][:3], d["spatial_f0"], d["spatial_ft0"], d["spatial_k_td"])
    out["spatial/train"], out["spatial/test"] = sp
    out["spatial/none"] = fn(None, d["spatial_f0"], d["spatial_ft0"], d["spatial_k_td"])[1]
    out["spatial/gp"] = predict.gp_inference(d["spatial_k"], d["spatial_y"])(
        "nngp", d["spatial_k_td"])

    # gradient_descent_mse_ensemble: mean and covariance, test and train set.
    kernel_fn = lookup_kernel_fn(data, namedtuple)
    for lr, reg in ((1.0, 0.0), (2.0, 1e-4)):
        fn = predict.gradient_descent_mse_ensemble(kernel_fn, d["x_train"], d["y_train"], lr, reg)
        for tname, t in (("t", d["times"]), ("none", None)):
            r = fn(t, d["x_test"], None, True)
            for g in ("nngp", "ntk"):
                out[f"ens/{lr}/{tname}/{g}/mean"] = getattr(r, g).mean
                out[f"ens/{lr}/{tname}/{g}/cov"] = getattr(r, g).covariance
            out[f"ens/{lr}/{tname}/ntk_mean_only"] = fn(t, d["x_test"], "ntk")
            rt = fn(t, None, ("nngp", "ntk"), True)
            for g in ("nngp", "ntk"):
                out[f"ens/{lr}/{tname}/train/{g}/mean"] = getattr(rt, g).mean
                out[f"ens/{lr}/{tname}/train/{g}/cov"] = getattr(rt, g).covariance

    # gradient_descent (ODE): cross-entropy, and MSE with momentum.
    def cross_entropy(fx, y):
        return -jnp.mean(jax.nn.log_softmax(fx) * y)

    fn = predict.gradient_descent(cross_entropy, d["ntk_dd"], d["labels"], 2.0)
    tr, te = fn(d["times"][:4], d["fx_train_0"], d["fx_test_0"], d["ntk_td"])
    out["ode/ce/train"], out["ode/ce/test"] = tr, te

    def mse(fx, y):
        return 0.5 * jnp.mean((fx - y) ** 2)

    fn = predict.gradient_descent(mse, d["ntk_dd"], d["y_train"], 0.5, momentum=0.9)
    tr, te = fn(d["times"][1:4], d["fx_train_0"], d["fx_test_0"], d["ntk_td"])
    out["ode/momentum/train"], out["ode/momentum/test"] = tr, te

    out["max_lr"] = jnp.asarray(predict.max_learning_rate(d["ntk_dd"]))
    out["max_lr_momentum"] = jnp.asarray(predict.max_learning_rate(d["ntk_dd"], 36, 0.9))
    return {k: np.asarray(v) for k, v in out.items()}
