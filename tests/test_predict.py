"""infwidth.predict against closed forms and independent computations (float64), its numerical
guards (not positive definite, singular kernels, conjugate gradients) and its argument errors.

Independent references here: hand-solved 1x1 and 2x2 dynamics, numpy linear solves of the GP
formulas, an explicit Euler gradient-descent simulation in numpy, the Runge-Kutta ODE path
(`gradient_descent`) for the same MSE loss, and the prior at t = 0.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, tol, x64

from infwidth import empirical_kernel_fn, predict, stax
from infwidth.predict import CG, Cholesky, NotPositiveDefiniteError


def _problem(n=10, n_test=6, c=2, seed=0):
    """Analytic NNGP/NTK of a small ReLU network on random data (well conditioned); computed
    once per size and float dtype."""
    return _cached_problem(n, n_test, c, seed, np.dtype(jnp.result_type(float)).name)


@functools.cache
def _cached_problem(n, n_test, c, seed, dtype_name):
    rng = np.random.RandomState(seed)
    x_train, x_test = rng.randn(n, 3), rng.randn(n_test, 3)
    y = rng.randn(n, c)
    _, _, kernel_fn = stax.serial(stax.Dense(256, W_std=1.5, b_std=0.2), stax.Relu(),
                                  stax.Dense(1, W_std=1.5, b_std=0.2))
    kernel_fn = jax.jit(kernel_fn, static_argnums=2)  # one compilation, not one per operation
    x_train, x_test = jnp.asarray(x_train), jnp.asarray(x_test)
    k_dd = kernel_fn(x_train, None, ("nngp", "ntk"))
    k_td = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    k_tt = kernel_fn(x_test, None, ("nngp", "ntk"))
    return kernel_fn, x_train, x_test, jnp.asarray(y), k_dd, k_td, k_tt


def test_one_dimensional_closed_form():
    with x64():
        k, k_td, y, f0, ft0, lr, t = 2.0, 0.7, 1.5, -0.3, 0.4, 0.3, 5.0
        fn = predict.gradient_descent_mse(jnp.array([[k]]), jnp.array([[y]]), learning_rate=lr)
        tr, te = fn(t, jnp.array([[f0]]), jnp.array([[ft0]]), jnp.array([[k_td]]))
        decay = np.exp(-lr * t * k / 1)  # n = y_train.size = 1
        assert_close(tr, [[y + decay * (f0 - y)]], tol("exact", "float64"), "train")
        assert_close(te, [[ft0 + k_td / k * (1 - decay) * (y - f0)]], tol("exact", "float64"),
                     "test")


def test_two_by_two_closed_form_in_eigenbasis():
    with x64():
        a, b, t = 3.0, 1.0, 2.0
        k = jnp.array([[a, b], [b, a]])
        y = jnp.array([[1.0], [-2.0]])
        tr = predict.gradient_descent_mse(k, y)(t, 0.0)
        # Eigenvectors (1, 1)/sqrt2 and (1, -1)/sqrt2 with eigenvalues a + b and a - b; n = 2.
        plus, minus = (y[0, 0] + y[1, 0]) / 2, (y[0, 0] - y[1, 0]) / 2
        g_plus, g_minus = 1 - np.exp(-(a + b) * t / 2), 1 - np.exp(-(a - b) * t / 2)
        want = [[g_plus * plus + g_minus * minus], [g_plus * plus - g_minus * minus]]
        assert_close(tr, want, tol("exact", "float64"), "2x2")


def test_time_zero_infinity_and_interpolation():
    with x64():
        _, _, _, y, k_dd, k_td, _ = _problem()
        rng = np.random.RandomState(1)
        f0, ft0 = jnp.asarray(rng.randn(*y.shape)), jnp.asarray(rng.randn(6, 2))
        fn = predict.gradient_descent_mse(k_dd.ntk, y, learning_rate=0.5)
        tr, te = fn(jnp.array([0.0, jnp.inf]), f0, ft0, k_td.ntk)
        assert_close(tr[0], f0, tol("exact", "float64"), "t=0 train")
        assert_close(te[0], ft0, tol("exact", "float64"), "t=0 test")
        tr_none, te_none = fn(None, f0, ft0, k_td.ntk)
        assert_close(tr[1], tr_none, 1e-8, "t=inf vs None, train")  # eigh vs Cholesky
        assert_close(te[1], te_none, 1e-8, "t=inf vs None, test")
        assert_close(fn(1e9, f0, ft0, k_td.ntk)[1], te_none, 1e-8, "t large")
        # At t=None with diag_reg=0, predicting on the training inputs interpolates y.
        assert_close(fn(None, f0, f0, k_dd.ntk)[1], y, 1e-8, "interpolation")


def test_closed_form_matches_euler_gradient_descent_and_the_ode():
    with x64():
        _, _, _, y, k_dd, k_td, _ = _problem()
        k, ktd, yn = np.asarray(k_dd.ntk), np.asarray(k_td.ntk), np.asarray(y)
        n, lr, steps = y.size, 0.05, 400
        f, ft = np.zeros_like(yn), np.zeros((6, 2))
        for _ in range(steps):  # explicit gradient descent on the linear model
            grad = (f - yn) / n
            f, ft = f - lr * k @ grad, ft - lr * ktd @ grad
        tr, te = predict.gradient_descent_mse(k_dd.ntk, y, lr)(steps, 0.0, 0.0, k_td.ntk)
        # Euler's error after time T is about lr * lambda_max / n relative to the change.
        assert_close(tr, f, 0.02, "train vs Euler")
        assert_close(te, ft, 0.02, "test vs Euler")
        mse = lambda fx, yy: 0.5 * jnp.mean((fx - yy) ** 2)
        tr_ode, te_ode = predict.gradient_descent(mse, k_dd.ntk, y, lr)(
            jnp.array([10.0, steps]), 0.0, 0.0, k_td.ntk)
        assert_close(tr_ode[1], tr, 1e-6, "train vs ODE")
        assert_close(te_ode[1], te, 1e-6, "test vs ODE")


def test_jit_and_gradient_in_time():
    with x64():
        _, _, _, y, k_dd, k_td, _ = _problem()
        fn = predict.gradient_descent_mse(k_dd.ntk, y)

        def loss_at(t):
            return jnp.sum(fn(t, None, 0.0, k_td.ntk) ** 2)

        eager = loss_at(3.0)
        assert_close(jax.jit(loss_at)(3.0), eager, tol("exact", "float64"), "jit")
        h = 1e-5
        numeric = (loss_at(3.0 + h) - loss_at(3.0 - h)) / (2 * h)
        assert_close(jax.grad(loss_at)(3.0), numeric, 1e-6, "d/dt")


def test_gp_inference_matches_numpy_formulas():
    with x64():
        _, _, _, y, k_dd, k_td, k_tt = _problem()
        kd, kt = np.asarray(k_dd.nngp), np.asarray(k_td.nngp)
        reg = 1e-2 * np.trace(kd) / kd.shape[0]
        out = predict.gp_inference(k_dd, y, diag_reg=1e-2)("nngp", k_td, k_tt)
        a = kd + reg * np.eye(kd.shape[0])
        assert_close(out.mean, kt @ np.linalg.solve(a, np.asarray(y)), 1e-10, "mean")
        assert_close(out.covariance, np.asarray(k_tt.nngp) - kt @ np.linalg.solve(a, kt.T),
                     1e-10, "cov")
        th, tht, k = np.asarray(k_dd.ntk), np.asarray(k_td.ntk), kd
        e = tht @ np.linalg.inv(th)
        want = np.asarray(k_tt.nngp) + e @ k @ e.T - e @ kt.T - kt @ e.T
        assert_close(predict.gp_inference(k_dd, y)("ntk", k_td, k_tt).covariance, want, 1e-8,
                     "ntk cov")


def test_ensemble_at_zero_is_prior_and_at_infinity_is_posterior():
    with x64():
        kernel_fn, x_train, x_test, y, k_dd, k_td, k_tt = _problem()
        fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y, learning_rate=2.0)
        out = fn(jnp.array([0.0, jnp.inf]), x_test, compute_cov=True)
        for g in ("nngp", "ntk"):
            r = getattr(out, g)
            assert_close(r.mean[0] + 1, np.ones((6, 2)), tol("exact", "float64"), g + " mean0")
            assert_close(r.covariance[0], k_tt.nngp, 1e-12, g + " prior covariance")
            inf = getattr(fn(None, x_test, compute_cov=True), g)
            assert_close(r.mean[1], inf.mean, 1e-8, g + " t=inf vs None mean")
            assert_close(r.covariance[1], inf.covariance, 1e-7, g + " t=inf vs None cov")
            cov = np.asarray(r.covariance[1])
            assert np.allclose(cov, cov.T, atol=1e-12)
            assert np.linalg.eigvalsh(cov).min() > -1e-9 * np.abs(cov).max()
        # Training only the last layer for ever samples the NNGP posterior.
        post = predict.gp_inference(k_dd, y)("nngp", k_td, k_tt)
        assert_close(out.nngp.mean[1], post.mean, 1e-8, "nngp posterior mean")
        assert_close(out.nngp.covariance[1], post.covariance, 1e-7, "nngp posterior cov")
        # On the training inputs the converged ensemble has the targets and no variance.
        train = fn(None, x_train, "ntk", compute_cov=True)
        assert_close(train.mean, y, 1e-8, "train mean")
        assert np.abs(train.covariance).max() < 1e-7 * np.abs(k_dd.nngp).max()


def test_conjugate_gradients_match_cholesky():
    with x64():
        _, _, _, y, k_dd, k_td, k_tt = _problem(n=24)
        chol = predict.gp_inference(k_dd, y, 1e-4)("ntk", k_td, k_tt)
        cg = predict.gp_inference(k_dd, y, 1e-4, solver=CG(tol=1e-12, tile_size=10))(
            "ntk", k_td, k_tt)
        assert_close(cg.mean, chol.mean, 1e-8, "mean")
        assert_close(cg.covariance, chol.covariance, 1e-8, "cov")
        te = predict.gradient_descent_mse(k_dd.ntk, y, solver="cg")(None, None, 0.0, k_td.ntk)
        assert_close(te, predict.gradient_descent_mse(k_dd.ntk, y)(None, None, 0.0, k_td.ntk),
                     1e-8, "mse")


def test_chebyshev_expansion_matches_eigendecomposition():
    with x64():
        rng = np.random.RandomState(3)
        x = rng.randn(552, 8)
        k = np.exp(x @ x.T / 8)  # an RBF-like positive-definite kernel, 512 train + 40 test
        k_dd, k_td = jnp.asarray(k[:512, :512]), jnp.asarray(k[512:, :512])
        y, f0, ft0 = (jnp.asarray(rng.randn(n, 3)) for n in (512, 512, 40))
        times = jnp.array([0.0, 3.0, 30.0, 300.0])
        ref = predict.gradient_descent_mse(k_dd, y, 0.5, finite_time_method="eigh")(
            times, f0, ft0, k_td)
        for method in ("chebyshev", "auto"):
            fn = predict.gradient_descent_mse(k_dd, y, 0.5, finite_time_method=method)
            for got, want in zip(fn(times, f0, ft0, k_td), ref):
                assert_close(got, want, 1e-11, method)
        # Infinite time cannot be expanded: 'auto' falls back, 'chebyshev' says so.
        fn = predict.gradient_descent_mse(k_dd, y, finite_time_method="auto")
        assert np.all(np.isfinite(fn(jnp.inf, f0, ft0, k_td)[1]))
        with pytest.raises(ValueError, match="finite times"):
            predict.gradient_descent_mse(k_dd, y, finite_time_method="chebyshev")(jnp.inf, f0)
        # The ensemble means use the same expansion ('auto' would only for N >= 512).
        kernel_fn, xs, ys = _problem()[0], jnp.asarray(x[:60, :3]), y[:60]
        fns = [predict.gradient_descent_mse_ensemble(kernel_fn, xs, ys, finite_time_method=m)
               for m in ("eigh", "chebyshev")]
        for x_test in (None, jnp.asarray(x[512:, :3])):
            means = [fn(times, x_test, ("nngp", "ntk")) for fn in fns]
            for g in ("nngp", "ntk"):
                assert_close(getattr(means[1], g), getattr(means[0], g), 1e-11, "ensemble " + g)


def test_not_positive_definite_raises_or_repairs_never_nan():
    with x64():
        k = jnp.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
        y = jnp.array([[1.0], [0.0]])
        fn = predict.gp_inference(k, y)
        with pytest.raises(NotPositiveDefiniteError, match="not positive definite.*diag_reg"):
            fn("nngp", k)
        with pytest.raises(NotPositiveDefiniteError, match="did not converge|not positive"):
            predict.gp_inference(k, y, solver="cg")("nngp", k)
        # Rounding-level indefiniteness is repaired by the smallest jitter, with a warning.
        v = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)
        k_noisy = jnp.asarray(v @ np.diag([2.0, -1e-13]) @ v.T)
        with pytest.warns(UserWarning, match="added"):
            mean = predict.gp_inference(k_noisy, y, solver=Cholesky(repair=True))("nngp", k_noisy)
        assert np.all(np.isfinite(mean))
        # Finite times clip negative eigenvalues: finite values and a warning, no NaN.
        with pytest.warns(UserWarning, match="not positive semi-definite"):
            out = predict.gradient_descent_mse(k, y)(jnp.array([1.0, jnp.inf]), 0.0, 0.0, k)
        assert all(np.all(np.isfinite(o)) for o in out)


def test_singular_kernel_finite_times_are_finite():
    with x64():
        k = jnp.ones((3, 3))  # rank one, exact zero eigenvalues
        y = jnp.array([[1.0], [2.0], [3.0]])
        tr, te = predict.gradient_descent_mse(k, y)(jnp.array([0.0, 1.0, jnp.inf]), 0.0, 0.0,
                                                    jnp.ones((2, 3)))
        assert np.all(np.isfinite(tr)) and np.all(np.isfinite(te))
        # Only the constant mode is learned: the mean of y (2) is approached, nothing else moves.
        assert_close(tr[-1], np.full((3, 1), 2.0), 1e-12, "projection on the learnable mode")


def test_max_learning_rate_separates_convergence_from_divergence():
    with x64():
        _, _, _, y, k_dd, _, _ = _problem()
        k, yn = np.asarray(k_dd.ntk), np.asarray(y)
        lr_max = predict.max_learning_rate(k_dd.ntk, y.size)

        def final_loss(lr, steps=3000):
            f = np.zeros_like(yn)
            for _ in range(steps):
                f = f - lr * k @ (f - yn) / y.size
            return np.mean((f - yn) ** 2)

        assert final_loss(0.95 * lr_max) < 1e-3 * np.mean(yn**2)
        assert final_loss(1.05 * lr_max, 300) > 1e3 * np.mean(yn**2)
        assert_close(predict.max_learning_rate(k_dd.ntk, y.size, momentum=0.5), 1.5 * lr_max,
                     1e-12, "momentum")


def test_float32_is_close_to_float64():
    kernel_fn, x_train, x_test, y, *_ = _problem()
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731 - float32 also under x64
    out32 = predict.gradient_descent_mse_ensemble(kernel_fn, f32(x_train), f32(y))(
        10.0, f32(x_test), "ntk")
    with x64():
        kernel_fn, x_train, x_test, y64, *_ = _problem()
        out64 = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y64)(10.0, x_test, "ntk")
    assert out32.dtype == jnp.float32
    assert_close(out32, out64, tol("nt", "float32") * 10, "float32 vs float64")


@pytest.mark.parametrize("call, err, match", [
    (lambda k, y: predict.gradient_descent_mse(k, y, learning_rate=-1.0), ValueError,
     "learning_rate must be a positive"),
    (lambda k, y: predict.gradient_descent_mse(k[:3, :3], y), ValueError, "needs"),
    (lambda k, y: predict.gradient_descent_mse(k, y)(1.0, 0.0, 0.0, k[:, :3]), ValueError,
     "k_test_train has shape"),
    (lambda k, y: predict.gradient_descent_mse(k, y)(-1.0, 0.0), ValueError, ">= 0"),
    (lambda k, y: predict.gradient_descent_mse(k, y)("soon", 0.0), TypeError, "t must be"),
    (lambda k, y: predict.gradient_descent_mse(k, y)(1.0, jnp.zeros((3, 2))), ValueError,
     "fx_train_0 has shape"),
    (lambda k, y: predict.gradient_descent_mse(k, y)(1.0, 0.0, 0.0), ValueError,
     "need k_test_train"),
    (lambda k, y: predict.gradient_descent_mse(k, y)(1.0, None), ValueError, "both None"),
    (lambda k, y: predict.gradient_descent_mse(k, y, diag_reg=-1.0), ValueError, "diag_reg"),
    (lambda k, y: predict.gradient_descent_mse(k, y, trace_axes=(5,)), ValueError,
     "trace_axes"),
    (lambda k, y: predict.gp_inference(k, y)("nngpp", k), ValueError, "unknown kernel"),
    (lambda k, y: predict.gp_inference(k, y)("ntk", k, k), ValueError, "needs both"),
    (lambda k, y: predict.gp_inference(k, y, solver="lu"), ValueError, "solver"),
    (lambda k, y: predict.gradient_descent_mse(k, y, finite_time_method="expm"), ValueError,
     "finite_time_method"),
    (lambda k, y: predict.gradient_descent(lambda f, yy: 0.0, k, y)(jnp.array([2.0, 1.0]), 0.0),
     ValueError, "non-decreasing"),
    (lambda k, y: predict.gradient_descent(lambda f, yy: 0.0, k, y)(None, 0.0), ValueError,
     "finite times"),
    (lambda k, y: predict.gradient_descent(lambda f, yy: 0.0, k, y, momentum=2.0), ValueError,
     "momentum"),
])
def test_bad_input_errors(call, err, match):
    k = jnp.eye(4) + 0.1
    y = jnp.ones((4, 2))
    with pytest.raises(err, match=match):
        call(k, y)


def test_ensemble_bad_input_errors():
    kernel_fn, x_train, x_test, y, *_ = _problem()
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y, learning_rate=0.0)
    fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y)
    with pytest.raises(ValueError, match="unknown kernel"):
        fn(1.0, x_test, get="ntkgp")
    with pytest.raises(TypeError, match="real numbers"):
        fn(jnp.array([1 + 1j]), x_test)
    with pytest.raises(ValueError, match="kernel_fn"):  # y_train does not fit x_train
        predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y[:4])(1.0, x_test)


def test_singular_kernel_infinite_time_is_the_pseudo_inverse_limit():
    """t=None on a positive semi-definite singular kernel (an empirical NTK with fewer
    parameters than outputs) gives the t -> inf limit of the finite-time formula, i.e. the
    pseudo-inverse solve, with a warning; an indefinite kernel still raises."""
    with x64():
        rng = np.random.default_rng(0)
        a = rng.normal(size=(6, 2))
        k = jnp.asarray(a @ a.T)          # rank 2 of 6
        y = jnp.asarray(rng.normal(size=(6, 1)))
        k_td = jnp.asarray(rng.normal(size=(3, 2)) @ a.T)
        fn = predict.gradient_descent_mse(k, y)
        with pytest.warns(UserWarning, match="singular.*rank 2 of 6.*pseudo-inverse"):
            _, te_inf = fn(None, 0.0, 0.0, k_td)
        _, te_late = fn(1e6, 0.0, 0.0, k_td)  # every non-zero mode has converged
        expected = np.asarray(k_td) @ np.linalg.pinv(np.asarray(k)) @ np.asarray(y)
        assert_close(te_inf, expected, 1e-8, "pseudo-inverse")
        assert_close(te_late, expected, 1e-8, "late-time limit")
        bad = jnp.array([[1.0, 2.0], [2.0, 1.0]])
        with pytest.raises(NotPositiveDefiniteError, match="smallest eigenvalue is -1"):
            predict.gradient_descent_mse(bad, y[:2])(None, 0.0, 0.0, bad)


def test_traced_batch_axis_shares_one_kernel_over_the_inputs():
    """trace_axes may include the batch axis (as in neural-tangents): the kernel is then over
    the remaining output axes, shared by every input; each input's outputs evolve as
    independent copies of that problem."""
    with x64():
        rng = np.random.default_rng(1)
        a = rng.normal(size=(4, 4))
        k = jnp.asarray(a @ a.T + np.eye(4))      # over the 4 positions of y's axis 1
        y = jnp.asarray(rng.normal(size=(3, 4)))  # 3 inputs share it
        t = 0.7
        out = predict.gradient_descent_mse(k, y, trace_axes=(0,))(t, 0.0)
        lr_over_size = 1.0 / y.size
        w, v = np.linalg.eigh(np.asarray(k))
        decay = v @ np.diag(np.exp(-w * t * lr_over_size)) @ v.T
        expected = (np.asarray(y) - (decay @ np.asarray(y).T).T)
        assert_close(out, expected, 1e-10, "independent copies")


def test_predictions_work_under_rank_promotion_raise():
    """neural-tangents' tests run with jax_numpy_rank_promotion='raise': finite-time
    covariances, several times and traced axes must not rely on implicit rank promotion."""
    with x64(), jax.numpy_rank_promotion("raise"):
        rng = np.random.default_rng(2)
        a = rng.normal(size=(5, 5))
        k = jnp.asarray(a @ a.T + np.eye(5))
        k_td = jnp.asarray(rng.normal(size=(2, 5)))
        y = jnp.asarray(rng.normal(size=(5, 2)))
        ts = jnp.array([[0.0, 1.0], [2.0, jnp.inf]])
        tr, te = predict.gradient_descent_mse(k, y)(ts, jnp.zeros((5, 2)), jnp.zeros((2, 2)),
                                                    k_td)
        assert tr.shape == (2, 2, 5, 2) and te.shape == (2, 2, 2, 2)
        assert_close(tr[1, 1], y, 1e-9, "infinite time interpolates")
        ens = predict.gradient_descent_mse_ensemble(
            lambda x1, x2, get, **kw: _toy_kernel(x1, x2, get), jnp.asarray(rng.normal(
                size=(5, 3))), y, diag_reg=1e-3)
        out = ens(jnp.array([0.5, 2.0]), jnp.asarray(rng.normal(size=(2, 3))), "ntk",
                  compute_cov=True)
        assert out.mean.shape == (2, 2, 2) and out.covariance.shape == (2, 2, 2)
        assert np.all(np.diagonal(np.asarray(out.covariance), axis1=-2, axis2=-1) >= 0)


def _toy_kernel(x1, x2, get):
    """An RBF NNGP and twice it as NTK, as a kernel_fn returning a namedtuple-like object."""
    x2 = x1 if x2 is None else x2
    d = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)
    nngp = jnp.exp(-d / 2)

    class K:
        pass

    out = K()
    out.nngp, out.ntk = nngp, 2 * nngp
    if isinstance(get, str):
        return getattr(out, get)
    return out


def test_ensemble_keywords_compare_as_pytrees():
    """Per-call keyword values: pytrees of arrays (params built twice) are accepted, different
    plain values for the training and test calls raise naming the argument."""
    net = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(1))
    x, y = jnp.ones((3, 2)), jnp.ones((3, 1))
    emp = empirical_kernel_fn(net.apply_fn)
    p1 = net.init_fn(jax.random.PRNGKey(0), x.shape)[1]
    p2 = net.init_fn(jax.random.PRNGKey(0), x.shape)[1]
    fn = predict.gradient_descent_mse_ensemble(emp, x, y, diag_reg=1e-3, params=p1)
    assert np.all(np.isfinite(np.asarray(fn(1.0, x, "ntk", params=p2))))
    fn = predict.gradient_descent_mse_ensemble(net.kernel_fn, x, y, diag_reg=1e-3,
                                               channel_axis=-1)
    with pytest.raises(ValueError, match="'channel_axis' is -1 for the training set but 1"):
        fn(1.0, x, "ntk", channel_axis=1)
