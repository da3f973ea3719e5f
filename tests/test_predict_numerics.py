"""Numbers you can trust in prediction (issue 14, items 3, 7, 9, 10): rounding-level eigenvalues
are never learned, variances are never negative, bad arguments fail before any kernel is
computed, and bad kernels give an error that names the problem instead of NaN or a silent fix.

Expected values are derived independently in numpy float64 (projections onto the learnable
eigenvectors, built here from a known eigenbasis)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, tol, x64

from infwidth import predict, stax
from infwidth.analysis import measured_learning_curve


def _kernel_with_spectrum(evals, seed=0):
    """``Q diag(evals) Q^T`` for a random orthogonal ``Q`` (float64 numpy), and ``Q``."""
    q, _ = np.linalg.qr(np.random.RandomState(seed).randn(len(evals), len(evals)))
    return (q * np.asarray(evals)) @ q.T, q


def test_all_ones_kernel_learns_only_the_mean_at_infinite_time():
    # ones((3, 3)) has eigenvalues 3, 0, 0: at t = inf only the constant mode is fitted, so the
    # training outputs go to the mean of y (2) and a test point with k = (1, 1, 1) predicts 2.
    for dtype in (jnp.float32, jnp.float64):
        with x64():
            k = jnp.ones((3, 3), dtype)
            y = jnp.array([[1.0], [2.0], [3.0]], dtype)
            tr, te = predict.gradient_descent_mse(k, y)(jnp.inf, 0.0, 0.0, jnp.ones((1, 3), dtype))
            assert_close(tr, np.full((3, 1), 2.0), tol("exact", dtype), f"train {dtype}")
            assert_close(te, np.full((1, 1), 2.0), tol("exact", dtype), f"test {dtype}")


def test_rounding_level_eigenvalues_are_not_learned():
    # Two real modes and 48 at 5e-15 of the largest: below N * eps (1.1e-14 for N = 50), i.e.
    # indistinguishable from rounding. They must stay unlearned at t = inf (and at huge t).
    n = 50
    evals = np.r_[1.0, 0.5, np.full(n - 2, 5e-15)]
    k, q = _kernel_with_spectrum(evals)
    rng = np.random.RandomState(1)
    y = rng.randn(n, 2)
    k_td = rng.randn(3, n) @ (q[:, :2] * evals[:2]) @ q[:, :2].T  # lies in the learnable span
    proj = q[:, :2] @ q[:, :2].T
    want_train = proj @ y
    want_test = k_td @ (q[:, :2] / evals[:2]) @ q[:, :2].T @ y
    with x64():
        fn = predict.gradient_descent_mse(jnp.asarray(k), jnp.asarray(y))
        tr, te = fn(jnp.array([jnp.inf, 1e20]), 0.0, 0.0, jnp.asarray(k_td))
        for i in range(2):
            assert_close(tr[i], want_train, 1e-9, "train outputs: projection on learnable modes")
        # (at t = 1e20 the test outputs would multiply rounding of k_td's null part by t)
        assert_close(te[0], want_test, 1e-9, "test outputs at t = inf")
        ens = predict.gradient_descent_mse_ensemble(lambda x1, x2, get: _Pair(jnp.asarray(k)),
                                                    jnp.zeros((n, 1)), jnp.asarray(y))
        assert_close(ens(jnp.inf, None, "ntk"), want_train, 1e-9, "ensemble mean, train set")


class _Pair:
    def __init__(self, k):
        self.nngp = self.ntk = k


def _chaotic_erf_problem():
    """float32 kernels of a deep chaotic Erf network, test points within 1e-6 of training
    points: the posterior variances are at the rounding level of float32."""
    layers = []
    for _ in range(8):
        layers += [stax.Dense(512, W_std=4.0, b_std=0.05), stax.Erf()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=4.0, b_std=0.05))
    x = jax.random.normal(jax.random.PRNGKey(0), (197, 5), jnp.float32)
    x_train, x_test = x[:100], x[:97] + 1e-6 * x[100:]
    return jax.jit(kernel_fn, static_argnames="get"), x_train, x_test, jnp.sin(x_train[:, :1])


def test_float32_variances_are_never_negative_and_repairs_are_reported():
    kernel_fn, x_train, x_test, y = _chaotic_erf_problem()
    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y, diag_reg=1e-4)
    k_dd = kernel_fn(x_train, None, ("nngp", "ntk"))
    k_td = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    k_tt = kernel_fn(x_test, None, ("nngp", "ntk"))
    gp = predict.gp_inference(k_dd, y, diag_reg=1e-4)
    calls = [lambda: ens(None, x_test, "nngp", compute_cov=True),
             lambda: ens(jnp.array([1e3, 1e6]), x_test, "ntk", compute_cov=True),
             lambda: gp(("nngp", "ntk"), k_td, k_tt)]
    n_warned = 0
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = call()
        n_warned += any("predictive variances were negative" in str(w.message) for w in caught)
        for o in (out if isinstance(out, tuple) and not hasattr(out, "mean") else [out]):
            cov = np.asarray(o.covariance)
            var = np.diagonal(cov, axis1=-2, axis2=-1)
            assert np.all(np.isfinite(cov)) and np.all(var >= 0), var.min()
    # (whether float32 rounding makes any variance negative here depends on the kernel's own
    # rounding, which the consistent-covariance rule reduced; the repair is what is checked)
    assert n_warned <= len(calls)


def _counting(kernel_fn):
    calls = []

    def wrapped(x1, x2=None, get=None, **kwargs):
        calls.append((x1.shape, None if x2 is None else x2.shape))
        return kernel_fn(x1, x2, get, **kwargs)

    return wrapped, calls


@pytest.mark.parametrize("kwargs, err, match", [
    ({"t": -5.0}, ValueError, "t=-5"),
    ({"t": jnp.array([1.0, -1.0])}, ValueError, ">= 0"),
    ({"t": 1.0, "compute_cov": "yes"}, TypeError, "compute_cov"),
    ({"t": 1.0, "x_test_features": 3}, ValueError, "x_test has shape"),
    ({"t": 1.0, "x_test_features": 0}, ValueError, "empty"),
    ({"t": 1.0, "x_test_complex": True}, TypeError, "complex"),
    ({"t": 1.0, "get": "ntkk"}, ValueError, "unknown kernel"),
])
def test_ensemble_argument_errors_come_before_the_test_kernels(kwargs, err, match):
    _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    kernel_fn, calls = _counting(kernel_fn)
    x_train = jnp.linspace(-1, 1, 8).reshape(4, 2)
    fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, jnp.ones((4, 1)))
    kwargs = dict(kwargs)
    d = kwargs.pop("x_test_features", 2)
    x_test = jnp.ones((5, d)) * (1j if kwargs.pop("x_test_complex", False) else 1)
    with pytest.raises(err, match=match):
        fn(x_test=x_test, **kwargs)
    assert calls == []  # nothing was computed, not even the train-train kernel


def test_mse_predict_fn_checks_t_first():
    fn = predict.gradient_descent_mse(jnp.eye(3), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="t=-5"):
        fn(-5.0, 0.0, 0.0, jnp.ones((2, 3)))


_K = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
_Y = np.ones((3, 1))


def _nan_kernel():
    k = _K.copy()
    k[1, 2] = k[2, 1] = np.nan
    return k


def _asymmetric_kernel():
    k = _K.copy()
    k[0, 2] = 0.5
    return k


@pytest.mark.parametrize("make", [
    lambda k, y: predict.gp_inference(k, y),
    lambda k, y: predict.gradient_descent_mse(k, y),
    lambda k, y: predict.gradient_descent(lambda f, yy: jnp.sum((f - yy) ** 2), k, y),
])
@pytest.mark.parametrize("k, y, err, match", [
    (_nan_kernel(), _Y, ValueError, r"non-finite .* rows \[1, 2\]"),
    (_asymmetric_kernel(), _Y, ValueError, r"not symmetric: \|k\[0, 2\] - k\[2, 0\]\| = 0.5"),
    (_K + 0j, _Y, TypeError, "k_train_train is complex"),
    (_K, _Y + 1j, TypeError, "y_train is complex"),
    (_K, np.ones((3, 0)), ValueError, "no entries"),
])
def test_bad_train_kernels_and_targets_are_named(make, k, y, err, match):
    with pytest.raises(err, match=match):
        make(jnp.asarray(k), jnp.asarray(y))


def test_nan_in_a_kernel_namedtuple_is_named_with_its_field():
    k = _Pair(jnp.asarray(_K))
    k.ntk = jnp.asarray(_nan_kernel())
    with pytest.raises(ValueError, match=r"k_train_train.ntk has 2 non-finite"):
        predict.gp_inference(k, jnp.asarray(_Y))


def test_ensemble_rejects_empty_training_inputs():
    _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    with pytest.raises(ValueError, match=r"x_train of shape \(4, 0\) is empty"):
        predict.gradient_descent_mse_ensemble(kernel_fn, jnp.ones((4, 0)), jnp.ones((4, 1)))


def test_measured_learning_curve_on_a_rank_deficient_kernel():
    # A linear kernel of 2-D inputs has rank 2; training sets of 5 and 10 points make K_XX
    # singular. The minimum-norm interpolant still learns the linear target exactly.
    x = np.random.RandomState(0).randn(40, 2)
    with x64():
        curve = measured_learning_curve(jnp.asarray(x @ x.T), jnp.asarray(x[:, 0]), [5, 10],
                                        n_draws=3)
        err = np.asarray(curve.error)
    assert np.all(np.isfinite(err)) and np.all(err < 1e-18), err


def test_blas_threads_follow_idle_cores_and_the_override(monkeypatch):
    from infwidth.predict import _helpers

    monkeypatch.delenv("INFWIDTH_BLAS_THREADS", raising=False)
    monkeypatch.setattr(_helpers.os, "getloadavg", lambda: (25.0, 25.0, 25.0))
    assert _helpers.blas_thread_count() == 1  # every core busy: no spin-waiting threads
    monkeypatch.setattr(_helpers.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert _helpers.blas_thread_count() == len(_helpers.os.sched_getaffinity(0))
    monkeypatch.setenv("INFWIDTH_BLAS_THREADS", "3")
    assert _helpers.blas_thread_count() == 3
