"""Residual-network DMFT (architecture='resnet' of infwidth.dmft.deep_linear and
infwidth.dmft.mlp, 1/sqrt(L) branches): the lazy limit against the NTK prediction of a stax
residual network built here, the exact linear solver against the Monte Carlo one (two
different algorithms for the same equations), finite muP residual networks of growing width
against the feature-learning limit, and the depth limit the 1/sqrt(L) scaling is for.

Setting: 4 training and 2 test inputs in R^3, targets sign(x_0).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import DMFT_TOLERANCES, rel_err, x64

from infwidth import dmft, predict, stax


def _data():
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (6, 3), jnp.float32), np.float64)
    return x[:4], np.sign(x[:4, 0]), x[4:]


def _stax_resnet(depth, relu=False):
    """``Dense, [h + Dense(phi(h)) / sqrt(depth)] * depth, phi, Dense`` in the NTK
    parameterization: the lazy limit of the DMFT's residual network."""
    phi = [stax.Relu()] if relu else []
    branch = stax.serial(*phi, stax.Dense(64, W_std=depth ** -0.5))
    block = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch), stax.FanInSum())
    return stax.serial(stax.Dense(64), *[block] * depth, *phi, stax.Dense(1))


@pytest.mark.parametrize("gamma0", [0.0, 1e-6])
@pytest.mark.parametrize("depth", [1, 3])
def test_lazy_resnet_matches_ntk_gradient_descent(gamma0, depth):
    with x64():
        x, y, xt = _data()
        sol = dmft.deep_linear(x, y, xt, depth=depth, gamma0=gamma0, dt=0.1, n_steps=16,
                               architecture="resnet")
        net = _stax_resnet(depth)
        predict_fn = predict.gradient_descent_mse(net.kernel_fn(x, None, get="ntk"),
                                                  y[:, None], learning_rate=1.0)
        f_tr, f_te = predict_fn(t=sol.times, fx_train_0=np.zeros((4, 1)),
                                fx_test_0=np.zeros((2, 1)),
                                k_test_train=net.kernel_fn(xt, x, get="ntk"))
        loss = np.sum((f_tr[..., 0] - y) ** 2, -1) / 8
        assert float(np.max(np.abs(sol.loss - loss)) / loss[0]) < DMFT_TOLERANCES["lazy"]
        assert float(np.max(np.abs(sol.f_test - f_te[..., 0]))) < DMFT_TOLERANCES["lazy"]
        assert float(sol.loss[-1]) < 0.2 * float(sol.loss[0])  # the outputs really move
        # the last layer's kernel is (1 + 1/L)^L K^x: each block adds 1/L of its input's
        np.testing.assert_allclose(sol.phi[-1, -1], (1 + 1 / depth) ** depth
                                   * np.concatenate([x, xt]) @ np.concatenate([x, xt]).T / 3,
                                   rtol=1e-10)


def test_monte_carlo_resnet_reproduces_exact_linear_resnet():
    # with more samples than source dimensions the draws are whitened jointly, so the linear
    # network's Monte Carlo solution is exact: only the iteration tolerance separates them
    with x64():
        x, y, xt = _data()
        kw = dict(depth=2, gamma0=1.0, dt=0.125, n_steps=8, architecture="resnet")
        exact = dmft.deep_linear(x, y, xt, **kw, tol=1e-10)
        mc = dmft.mlp(x, y, xt, **kw, activation="linear", n_samples=600, tol=1e-9)
        for l in range(3):
            assert rel_err(mc.phi[l], exact.phi[l]) < 1e-6
            assert rel_err(mc.g[l], exact.g[l]) < 1e-6
        np.testing.assert_allclose(mc.f_test, exact.f_test, atol=1e-7)
        # the responses matter: the rich kernels moved far beyond that agreement
        assert rel_err(exact.phi[1, -1], exact.phi[1, 0]) > 1e-2


def test_monte_carlo_relu_resnet_lazy_limit_is_the_stax_ntk():
    with x64():
        x, y, xt = _data()
        sol = dmft.mlp(x, y, xt, depth=2, gamma0=0.0, activation="relu", dt=0.25, n_steps=2,
                       n_samples=40000, architecture="resnet")
        xa = np.concatenate([x, xt])
        ntk = _stax_resnet(2, relu=True).kernel_fn(xa, None, get="ntk")
        assert rel_err(sol.ntk[-1], ntk) < DMFT_TOLERANCES["mc"]
        assert rel_err(sol.ntk[-1], sol.ntk[0]) < 1e-8  # lazy: the kernel does not move


def _width_sweep(gamma0, widths, seeds):
    """Loss and kernel errors of finite muP resnets against the limit, and the lazy gap."""
    # the residual NTK is ~e times an MLP's, so the finite networks take 16 gradient steps per
    # DMFT step to keep their own step-size error (fastest mode) below the width error
    kw = dict(depth=2, dt=0.125, n_steps=16, architecture="resnet")
    with x64():
        x, y, xt = _data()
        lim = dmft.deep_linear(x, y, xt, gamma0=gamma0, **kw)
        lazy = dmft.deep_linear(x, y, xt, gamma0=0.0, **kw)
    gap = float(np.max(np.abs(lazy.loss - lim.loss)) / lim.loss[0])
    x, y, xt = (jnp.asarray(a, jnp.float32) for a in (x, y, xt))
    loss_err, kern_err = [], []
    for width in widths:
        run = dmft.train_mup(x, y, xt, width=width, gamma0=gamma0, seeds=range(seeds),
                             substeps=16, **kw)
        loss_err.append(float(np.max(np.abs(run.loss - lim.loss)) / lim.loss[0]))
        kern_err.append(max(rel_err(run.phi[l], lim.phi[l, -1]) for l in range(3)))
    return loss_err, kern_err, gap


@pytest.mark.float32_stream
def test_finite_mup_resnets_approach_the_limit():
    # measured (16 seeds): kernel errors 0.056, 0.025 at widths 64, 1024; loss errors ~0.01
    # (the seed spread of the first steps dominates the loss error at these widths)
    loss_err, kern_err, gap = _width_sweep(1.0, (64, 1024), seeds=16)
    assert loss_err[-1] < DMFT_TOLERANCES["width_loss"], (loss_err, gap)
    assert kern_err[-1] < DMFT_TOLERANCES["width_kernel"], kern_err
    assert kern_err[0] > 1.8 * kern_err[-1], kern_err


@pytest.mark.float32_stream
@pytest.mark.parametrize("gamma0", [0.5, 1.0, 2.0])
def test_finite_mup_resnets_converge_to_the_limit(gamma0):
    # widths 256 and 4096, 16 seeds; measured at gamma0 = 1 / 2: loss errors 0.018 / 0.015
    # and 0.006 / 0.005 (lazy gap 0.020 / 0.068), kernel errors 0.032 / 0.033, 0.007 / 0.013
    loss_err, kern_err, gap = _width_sweep(gamma0, (256, 4096), seeds=16)
    assert loss_err[-1] < DMFT_TOLERANCES["width_loss"], (loss_err, gap)
    if gamma0 >= 1:  # the finite networks follow the feature-learning limit, not the lazy one
        assert loss_err[-1] < gap / 2, (loss_err, gap)
    assert kern_err[-1] < DMFT_TOLERANCES["width_kernel"], kern_err
    assert kern_err[0] > 2 * kern_err[-1], kern_err


def test_relu_resnet_rich_limit_matches_finite_mup_resnets():
    x, y, xt = _data()
    kw = dict(depth=1, gamma0=1.5, activation="relu", dt=0.125, n_steps=6,
              architecture="resnet")
    with x64():
        lim = dmft.mlp(x, y, xt, n_samples=1000, **kw)
        lazy = dmft.mlp(x, y, xt, n_samples=1000, **{**kw, "gamma0": 0.0})
    run = dmft.train_mup(*(jnp.asarray(a, jnp.float32) for a in (x, y, xt)), width=1024,
                         seeds=range(16), substeps=16, **kw)
    err = float(np.max(np.abs(run.loss - lim.loss)) / lim.loss[0])
    gap = float(np.max(np.abs(lazy.loss - lim.loss)) / lim.loss[0])
    assert err < DMFT_TOLERANCES["width_loss"] and err < gap / 2, (err, gap)
    for l in range(2):
        assert rel_err(run.phi[l], lim.phi[l, -1]) < DMFT_TOLERANCES["width_kernel"]


def test_branch_scaling_has_a_depth_limit():
    # 1/sqrt(L) branches: the rich training curves of L, 2L, 4L blocks converge (the
    # depthwise-transfer property); without the scaling the lazy kernel alone grows as 2^L
    with x64():
        x, y, _ = _data()
        losses = [dmft.deep_linear(x, y, depth=L, gamma0=1.0, dt=0.1, n_steps=8,
                                   architecture="resnet").loss for L in (4, 8, 16)]
        d1 = float(np.max(np.abs(losses[1] - losses[0])))
        d2 = float(np.max(np.abs(losses[2] - losses[1])))
        assert d2 < 0.7 * d1, (d1, d2)  # O(1/L) differences: 0.56 here
        assert d1 > 1e-4  # and depth does change the curve


def test_unsupported_architecture_is_named():
    x, y = np.eye(3)[:2], np.array([1.0, -1.0])
    for fn in (dmft.deep_linear, dmft.mlp):
        with pytest.raises(ValueError, match="architecture='transformer'.*'mlp', 'resnet'"):
            fn(x, y, depth=1, gamma0=1.0, architecture="transformer")
    with pytest.raises(ValueError, match="architecture='cnn'.*'resnet'"):
        dmft.train_mup(x, y, width=8, depth=1, gamma0=1.0, architecture="cnn")
