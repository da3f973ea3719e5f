"""Deep linear DMFT (infwidth.dmft.deep_linear): the lazy limit against the NTK prediction of
infwidth.predict, and finite muP networks of growing width (infwidth.dmft.train_mup, built from
stax 'mup' layers and trained with infwidth.mup.sgd) converging to the feature-learning limit.

Setting: 4 training and 2 test inputs in R^3, targets sign(x_0), float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import DMFT_TOLERANCES, x64

from infwidth import dmft, predict, stax

DT, STEPS = 0.25, 16


def _data():
    x = jax.random.normal(jax.random.PRNGKey(3), (6, 3), jnp.float64)
    return x[:4], jnp.sign(x[:4, 0]), x[4:]


@pytest.mark.parametrize("gamma0", [0.0, 1e-6])
@pytest.mark.parametrize("depth", [1, 3])
def test_lazy_limit_matches_ntk_gradient_descent(gamma0, depth):
    with x64():
        x, y, xt = _data()
        sol = dmft.deep_linear(x, y, xt, depth=depth, gamma0=gamma0, dt=DT, n_steps=STEPS)
        net = stax.serial(*[stax.Dense(512) for _ in range(depth)], stax.Dense(1))
        k_tt = net.kernel_fn(x, None, get="ntk")
        k_st = net.kernel_fn(xt, x, get="ntk")
        predict_fn = predict.gradient_descent_mse(k_tt, y[:, None], learning_rate=1.0)
        f_tr, f_te = predict_fn(t=sol.times, fx_train_0=jnp.zeros((4, 1)),
                                fx_test_0=jnp.zeros((2, 1)), k_test_train=k_st)
        loss = jnp.sum((f_tr[..., 0] - y) ** 2, -1) / 8
        err = float(jnp.max(jnp.abs(sol.loss - loss)) / loss[0])
        assert err < DMFT_TOLERANCES["lazy"], err
        assert float(jnp.max(jnp.abs(sol.f_test - f_te[..., 0]))) < DMFT_TOLERANCES["lazy"]
        # the training actually moves the outputs, so the comparison is not between zeros
        assert float(sol.loss[-1]) < 0.5 * float(sol.loss[0])


def test_feature_learning_changes_kernels_and_loss():
    with x64():
        x, y, xt = _data()
        lazy = dmft.deep_linear(x, y, xt, depth=2, gamma0=0.0, dt=DT, n_steps=STEPS)
        rich = dmft.deep_linear(x, y, xt, depth=2, gamma0=1.5, dt=DT, n_steps=STEPS)
        # the kernels align with the task: the target direction y y^T grows in Phi^l
        yy = jnp.outer(y, y)
        align = lambda k: float(jnp.sum(k[:4, :4] * yy) / jnp.linalg.norm(k[:4, :4]))  # noqa
        for l in range(2):
            assert align(rich.phi[l, -1]) > align(lazy.phi[l, -1]) + 0.05
            np.testing.assert_allclose(lazy.phi[l, -1], lazy.phi[l, 0], atol=1e-12)
        assert float(rich.loss[-1]) < float(lazy.loss[-1])


WIDTHS = (64, 256, 1024)


@pytest.mark.float32_stream
@pytest.mark.parametrize("gamma0", [0.5, 1.0, 2.0])
def test_finite_mup_networks_converge_to_the_limit(gamma0):
    # dt = 0.125: the DMFT's own time-discretization error is ~0.3% of the initial loss at
    # gamma0 = 2 (1.3% at dt = 0.25); two gradient-descent steps per DMFT step.
    dt, steps, depth = 0.125, 24, 2
    with x64():
        x, y, xt = (np.asarray(a) for a in _data())
        lim = dmft.deep_linear(x, y, xt, depth=depth, gamma0=gamma0, dt=dt, n_steps=steps)
        lazy = dmft.deep_linear(x, y, xt, depth=depth, gamma0=0.0, dt=dt, n_steps=steps)
    gap = float(np.max(np.abs(lazy.loss - lim.loss)) / lim.loss[0])
    x, y, xt = (jnp.asarray(a, jnp.float32) for a in (x, y, xt))
    loss_err, kern_err = [], []
    for width in WIDTHS:
        run = dmft.train_mup(x, y, xt, width=width, depth=depth, gamma0=gamma0, dt=dt,
                             n_steps=steps, seeds=range(4), substeps=2)
        loss_err.append(float(np.max(np.abs(run.loss - lim.loss)) / lim.loss[0]))
        kern_err.append(max(
            float(np.linalg.norm(run.phi[l] - lim.phi[l, -1]) / np.linalg.norm(lim.phi[l, -1]))
            for l in range(depth)))
    assert loss_err[-1] < DMFT_TOLERANCES["width_loss"], (loss_err, gap)
    if gamma0 >= 1:  # the finite networks follow the feature-learning limit, not the lazy one
        assert loss_err[-1] < gap / 2, (loss_err, gap)
    assert kern_err[-1] < DMFT_TOLERANCES["width_kernel"], kern_err
    # the kernels' 1/sqrt(N) trend: from width 64 to 1024 the error drops by about 4
    assert kern_err[0] > kern_err[1] > kern_err[2] and kern_err[0] / kern_err[-1] > 2, kern_err
