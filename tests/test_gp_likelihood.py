"""infwidth.gp objectives and fit against independent float64 computations: the arc-cosine
NNGP of a deep ReLU network written out in numpy (the recursion of Cho & Saul 2009 / Lee et
al. 2018, the formula of BoTorch's InfiniteWidthBNNKernel), Gaussian log densities from scipy,
leave-one-out by refitting N times, and scipy's L-BFGS-B on the numpy evidence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from gp_closed_forms import evidence_numpy, relu_nngp_numpy
from helpers import tol, x64

from infwidth import gp, stax

RNG = np.random.RandomState(0)
X = RNG.randn(30, 3)
Y = np.sin(X[:, :1] * 2) + 0.1 * RNG.randn(30, 1)


def relu_net(w_std, b_std, depth):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(8, w_std, b_std), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, w_std, b_std))


@pytest.mark.parametrize("absolute", [False, True])
def test_evidence_matches_closed_form(absolute):
    with x64():
        y = np.concatenate([Y, np.cos(X[:, 1:2])], 1)  # two outputs share the kernel
        kernel_fn = relu_net(1.4, 0.3, 2).kernel_fn
        lml = gp.log_marginal_likelihood(kernel_fn, jnp.asarray(X), jnp.asarray(y), 0.05,
                                         diag_reg_absolute_scale=absolute)
        k = relu_nngp_numpy(X, X, 1.4, 0.3, 2)
        noise = 0.05 if absolute else 0.05 * np.mean(np.diag(k))
        assert abs(float(lml) - evidence_numpy(k, y, noise)) < tol("exact") * 1e3
        # a 1-D y is one output column
        one = gp.log_marginal_likelihood(kernel_fn, jnp.asarray(X), jnp.asarray(y[:, 0]), 0.05,
                                         diag_reg_absolute_scale=absolute)
        assert abs(float(one) - evidence_numpy(k, y[:, :1], noise)) < 1e-6


def test_evidence_gradient_matches_finite_differences_of_closed_form():
    """d evidence / d(W_std, b_std, noise) by jax.grad under jit against central differences
    of the numpy evidence."""
    with x64():
        x, y = jnp.asarray(X), jnp.asarray(Y)

        def lml(p):
            return gp.log_marginal_likelihood(relu_net(p[0], p[1], 2).kernel_fn, x, y, p[2],
                                              diag_reg_absolute_scale=True)

        p0 = np.array([1.3, 0.4, 0.02])
        g = np.asarray(jax.jit(jax.grad(lml))(jnp.asarray(p0)))
        eps = 1e-6
        for i in range(3):
            e = np.eye(3)[i] * eps
            f = [evidence_numpy(relu_nngp_numpy(X, X, *(p[:2]), 2), Y, p[2])
                 for p in (p0 + e, p0 - e)]
            fd = (f[0] - f[1]) / (2 * eps)
            assert abs(g[i] - fd) < tol("fd") * max(1.0, abs(fd)), (i, g[i], fd)


def test_evidence_hessian_matches_finite_differences_of_closed_form():
    """The evidence's closed-form derivative rule is itself differentiable: jax.hessian in
    (W_std, b_std, noise) against second central differences of the numpy evidence, and
    forward mode (jacfwd) equal to reverse mode (grad)."""
    with x64():
        x, y = jnp.asarray(X[:20]), jnp.asarray(Y[:20])

        def lml(p):
            return gp.log_marginal_likelihood(relu_net(p[0], p[1], 2).kernel_fn, x, y, p[2],
                                              diag_reg_absolute_scale=True)

        def numpy_lml(p):
            return evidence_numpy(relu_nngp_numpy(X[:20], X[:20], p[0], p[1], 2), Y[:20], p[2])

        p0 = np.array([1.3, 0.4, 0.05])
        h = np.asarray(jax.jit(jax.hessian(lml))(jnp.asarray(p0)))
        np.testing.assert_allclose(np.asarray(jax.jacfwd(lml)(jnp.asarray(p0))),
                                   np.asarray(jax.grad(lml)(jnp.asarray(p0))), rtol=1e-10)
        eps = 1e-4
        for i in range(3):
            for j in range(3):
                ei, ej = np.eye(3)[i] * eps, np.eye(3)[j] * eps
                fd = (numpy_lml(p0 + ei + ej) - numpy_lml(p0 + ei - ej)
                      - numpy_lml(p0 - ei + ej) + numpy_lml(p0 - ei - ej)) / (4 * eps**2)
                assert abs(h[i, j] - fd) < 1e-5 * max(1.0, abs(fd)), (i, j, h[i, j], fd)


def test_ill_conditioned_kernel_is_finite_and_right():
    """Repeated inputs make the kernel singular; a deep network makes it nearly constant. With
    a tiny noise the evidence is still finite and equals the float64 closed form."""
    x = np.concatenate([X[:10]] * 3)
    y = np.concatenate([Y[:10]] * 3) + 1e-3 * RNG.randn(30, 1)
    with x64():
        kernel_fn = relu_net(1.0, 1.0, 6).kernel_fn
        k = relu_nngp_numpy(x, x, 1.0, 1.0, 6)
        assert np.linalg.cond(k + 1e-8 * np.eye(30)) > 1e8
        lml = gp.log_marginal_likelihood(kernel_fn, jnp.asarray(x), jnp.asarray(y), 1e-8,
                                         diag_reg_absolute_scale=True)
        assert abs(float(lml) - evidence_numpy(k, y, 1e-8)) < 1e-6 * abs(float(lml))
    # float32: finite value and gradient even so
    kernel32 = lambda w: relu_net(w, 1.0, 6).kernel_fn
    f = jax.jit(jax.value_and_grad(lambda w: gp.log_marginal_likelihood(
        kernel32(w), jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 1e-4)))
    v, g = f(jnp.float32(1.0))
    assert np.isfinite(v) and np.isfinite(g)


def test_leave_one_out_matches_refitting():
    with x64():
        kernel_fn = relu_net(1.2, 0.2, 1).kernel_fn
        x, y = X[:12], Y[:12]
        loo = gp.leave_one_out_log_likelihood(kernel_fn, jnp.asarray(x), jnp.asarray(y), 0.1,
                                              diag_reg_absolute_scale=True)
        k = relu_nngp_numpy(x, x, 1.2, 0.2, 1) + 0.1 * np.eye(12)
        expected = 0.0
        for i in range(12):
            rest = np.delete(np.arange(12), i)
            kr = k[np.ix_(rest, rest)]
            mean = k[i, rest] @ np.linalg.solve(kr, y[rest, 0])
            var = k[i, i] - k[i, rest] @ np.linalg.solve(kr, k[rest, i])
            expected += scipy.stats.norm(mean, np.sqrt(var)).logpdf(y[i, 0])
        assert abs(float(loo) - expected) < 1e-9 * abs(expected)


def test_validation_objectives_match_posterior_formula():
    with x64():
        kernel_fn = relu_net(1.2, 0.2, 2).kernel_fn
        xt, yt, xv, yv = X[:20], Y[:20], X[20:], Y[20:]
        args = (jnp.asarray(xt), jnp.asarray(yt), jnp.asarray(xv), jnp.asarray(yv))
        noise = 0.05
        v = gp.validation_log_likelihood(kernel_fn, *args, noise, diag_reg_absolute_scale=True)
        m = gp.validation_mse(kernel_fn, *args, noise, diag_reg_absolute_scale=True)
        ktt = relu_nngp_numpy(xt, xt, 1.2, 0.2, 2) + noise * np.eye(20)
        kvt = relu_nngp_numpy(xv, xt, 1.2, 0.2, 2)
        kvv = relu_nngp_numpy(xv, xv, 1.2, 0.2, 2)
        mean = kvt @ np.linalg.solve(ktt, yt[:, 0])
        var = np.diag(kvv) - np.sum(kvt * np.linalg.solve(ktt, kvt.T).T, 1) + noise
        expected = np.sum(scipy.stats.norm(mean, np.sqrt(var)).logpdf(yv[:, 0]))
        assert abs(float(v) - expected) < 1e-9 * abs(expected)
        assert abs(float(m) - np.mean((yv[:, 0] - mean) ** 2)) < 1e-12


def make_relu(h):
    return relu_net(h["W_std"], h["b_std"], 2).kernel_fn


def test_fit_reaches_the_closed_form_optimum():
    """gp.fit (optax L-BFGS, noise learned) against scipy's L-BFGS-B maximizing the numpy
    evidence of the same model: both reach the same evidence and hyperparameters."""
    x, y = X[:25], Y[:25]
    with x64():
        result = gp.fit(make_relu, {"W_std": 1.0, "b_std": 0.5, "diag_reg": 0.1},
                        jnp.asarray(x), jnp.asarray(y), steps=40, diag_reg_absolute_scale=True)

    def neg(logp):
        w, b, s = np.exp(logp)
        return -evidence_numpy(relu_nngp_numpy(x, x, w, b, 2), y, s)

    ref = scipy.optimize.minimize(neg, np.log([1.0, 0.5, 0.1]), method="L-BFGS-B")
    h = result.hparams
    ours = -neg(np.log([h["W_std"], h["b_std"], h["diag_reg"]]))
    assert ours >= -ref.fun - 1e-6 * abs(ref.fun), (ours, -ref.fun)
    assert abs(result.losses[-1] * 25 + ours) < 1e-8 * abs(ours)  # the loss is -evidence / N
    assert result.losses[-1] < result.losses[0]
    assert abs(np.log(h["diag_reg"]) - ref.x[2]) < 1e-2


def test_fit_other_objectives_and_optimizers():
    import optax

    x, y = jnp.asarray(X[:12], jnp.float32), jnp.asarray(Y[:12], jnp.float32)
    xv, yv = jnp.asarray(X[12:20], jnp.float32), jnp.asarray(Y[12:20], jnp.float32)
    init = {"W_std": 1.0, "b_std": 0.5}
    make = lambda h: relu_net(h["W_std"], h["b_std"], 1).kernel_fn
    for objective, extra in (("loo", {}), ("validation", {"validation_data": (xv, yv)})):
        r = gp.fit(make, init, x, y, optax.adam(0.05), steps=10, diag_reg=0.05,
                   objective=objective, constraints={"b_std": (0.0, 3.0)}, **extra)
        assert r.objective == objective and 2 <= r.losses.shape[0] <= 11
        assert r.losses[-1] < r.losses[0] and 0 < r.hparams["b_std"] < 3


def test_fit_stops_once_converged_and_tolerances_zero_take_every_step():
    """The default tolerances end the fit at a stationary point of the evidence (central
    differences of the numpy evidence in the log coordinates vanish there) long before
    ``steps``; ``tol=0, gtol=0`` takes every step and gets no better."""
    x, y = X[:25], Y[:25]
    init = {"W_std": 1.0, "b_std": 0.5, "diag_reg": 0.1}
    with x64():
        r = gp.fit(make_relu, init, jnp.asarray(x), jnp.asarray(y), steps=300,
                   diag_reg_absolute_scale=True)
        n_taken = len(r.losses) - 1
        full = gp.fit(make_relu, init, jnp.asarray(x), jnp.asarray(y), steps=n_taken + 15,
                      diag_reg_absolute_scale=True, tol=0, gtol=0)
    assert 3 <= n_taken < 100, n_taken
    assert len(full.losses) == n_taken + 16
    assert full.losses[-1] >= r.losses[-1] - 1e-8 * abs(r.losses[-1])

    def neg_per_point(logp):
        w, b, s = np.exp(logp)
        return -evidence_numpy(relu_nngp_numpy(x, x, w, b, 2), y, s) / 25

    h = r.hparams
    u = np.log([h["W_std"], h["b_std"], h["diag_reg"]])
    eps = 1e-5
    grad = [(neg_per_point(u + e) - neg_per_point(u - e)) / (2 * eps) for e in np.eye(3) * eps]
    assert np.max(np.abs(grad)) < 1e-5, grad
    for bad in ({"tol": -1e-3}, {"tol": 2.0}, {"gtol": "small"}, {"gtol": True}):
        with pytest.raises(ValueError, match=rf"fit\({next(iter(bad))}="):
            gp.fit(make_relu, init, jnp.asarray(x), jnp.asarray(y), **bad)


def test_refit_reuses_the_compiled_loop_and_gets_what_a_fresh_compile_gets():
    import importlib

    fit_module = importlib.import_module("infwidth.gp.fit")
    x = jnp.asarray(X[:15], jnp.float32)
    init = {"W_std": 1.0, "b_std": 0.5, "diag_reg": 0.1}
    first = gp.fit(make_relu, init, x, jnp.asarray(Y[:15], jnp.float32), steps=8)
    n_cached = len(fit_module._COMPILED)
    y2 = jnp.asarray(np.cos(X[:15, :1]), jnp.float32)
    again = gp.fit(make_relu, {**init, "b_std": 0.7}, x, y2, steps=8)
    assert len(fit_module._COMPILED) == n_cached  # no new entry: the loop was reused
    fit_module._COMPILED.clear()
    fresh = gp.fit(make_relu, {**init, "b_std": 0.7}, x, y2, steps=8)
    np.testing.assert_array_equal(again.losses, fresh.losses)
    assert again.hparams == fresh.hparams and first.hparams != again.hparams


def test_fit_never_returns_nan():
    """A learning rate so large that steps leave the kernel's finite range: those steps are
    rejected, and the result stays finite."""
    import optax

    x, y = jnp.asarray(X[:10], jnp.float32), jnp.asarray(Y[:10], jnp.float32)
    make = lambda h: relu_net(h["W_std"], h["b_std"], 1).kernel_fn
    r = gp.fit(make, {"W_std": 1.0, "b_std": 0.5, "diag_reg": 0.1}, x, y, optax.sgd(1e3),
               steps=4)
    assert np.all(np.isfinite(r.losses))
    assert all(np.isfinite(v) for v in r.hparams.values())


def test_bad_input_raises_clear_errors():
    kernel_fn = relu_net(1.0, 0.1, 1).kernel_fn
    x, y = jnp.asarray(X[:5]), jnp.asarray(Y[:5])
    with pytest.raises(ValueError, match=r"diag_reg=0.0\).*must be a finite scalar > 0"):
        gp.log_marginal_likelihood(kernel_fn, x, y, 0.0)
    with pytest.raises(ValueError, match=r"diag_reg=-1"):
        gp.leave_one_out_log_likelihood(kernel_fn, x, y, -1)
    with pytest.raises(ValueError, match="y has 1 NaN or infinite entries"):
        gp.log_marginal_likelihood(kernel_fn, x, y.at[2, 0].set(jnp.nan), 0.1)
    with pytest.raises(ValueError, match="x has 5 inputs but y has 4 rows"):
        gp.log_marginal_likelihood(kernel_fn, x, y[:4], 0.1)
    with pytest.raises(ValueError, match=r"get='cov1'"):
        gp.log_marginal_likelihood(kernel_fn, x, y, 0.1, get="cov1")
    with pytest.raises(ValueError, match=r"init_hparams\['W_std'\]=-1.0\): outside its domain"):
        gp.fit(make_relu, {"W_std": -1.0, "b_std": 0.1}, x, y, diag_reg=0.1)
    with pytest.raises(ValueError, match=r"init_hparams\['b_std'\]=5.0\).*in \(0, 2\)"):
        gp.fit(make_relu, {"W_std": 1.0, "b_std": 5.0}, x, y, diag_reg=0.1,
               constraints={"b_std": (0, 2)})
    with pytest.raises(ValueError, match="give the noise variance"):
        gp.fit(make_relu, {"W_std": 1.0, "b_std": 0.1}, x, y)
    with pytest.raises(ValueError, match="y has 1 output columns but y_val has 2"):
        gp.fit(make_relu, {"W_std": 1.0, "b_std": 0.1}, x, y, diag_reg=0.1,
               objective="validation", validation_data=(x, jnp.ones((5, 2))))
    with pytest.raises(ValueError, match=r"y has 1 NaN"):
        gp.fit(make_relu, {"W_std": 1.0, "b_std": 0.1}, x, y.at[0, 0].set(jnp.inf), diag_reg=.1)
    with pytest.raises(ValueError, match=r"\(N, N\) kernel"):
        conv = stax.Conv(1, (2,)).kernel_fn
        gp.log_marginal_likelihood(conv, jnp.ones((3, 4, 2)), jnp.ones(3), 0.1)


def test_works_under_rank_promotion_raise():
    with jax.numpy_rank_promotion("raise"):
        v = gp.fit(make_relu, {"W_std": 1.0, "b_std": 0.5, "diag_reg": 0.1},
                   jnp.asarray(X[:10], jnp.float32), jnp.asarray(Y[:10, 0], jnp.float32),
                   steps=2)
        assert np.isfinite(v.losses).all()
