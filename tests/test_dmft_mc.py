"""Monte Carlo DMFT of MLPs (infwidth.dmft.mlp): against the exact linear solution
(activation 'linear', every response function exercised at depth 2), against the analytic
ReLU NTK of infwidth.stax in the lazy limit, and against finite muP ReLU networks in the rich
regime; plus the bad-input errors of the dmft module.

Setting: 4 training and 2 test inputs in R^3, targets sign(x_0).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import DMFT_TOLERANCES, rel_err, x64

from infwidth import dmft, stax

DT, STEPS = 0.25, 8


def _data():
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (6, 3), jnp.float32), np.float64)
    return x[:4], np.sign(x[:4, 0]), x[4:]


def test_mc_fields_reproduce_exact_linear_dmft():
    with x64():
        x, y, xt = _data()
        exact = dmft.deep_linear(x, y, xt, depth=2, gamma0=1.0, dt=DT, n_steps=STEPS)
        mc = dmft.mlp(x, y, xt, depth=2, gamma0=1.0, activation="linear", dt=DT,
                      n_steps=STEPS, n_samples=500, tol=1e-6)
        assert mc.residual < 1e-6
        tol = DMFT_TOLERANCES["mc"]
        for l in range(2):
            assert rel_err(mc.phi[l, -1], exact.phi[l, -1]) < tol
            assert rel_err(mc.g[l, -1], exact.g[l, -1]) < tol
        assert float(np.max(np.abs(mc.loss - exact.loss)) / exact.loss[0]) < tol
        # feature learning moved the kernels well beyond the Monte Carlo error
        assert rel_err(exact.phi[1, -1], exact.phi[1, 0]) > 3 * tol


def test_mc_relu_lazy_limit_is_the_stax_ntk():
    with x64():
        x, y, xt = _data()
        # a ReLU second moment has a per-sample relative spread of sqrt(5): 40000 samples
        # give ~1-2% per layer; three time steps keep the fields short
        sol = dmft.mlp(x, y, xt, depth=2, gamma0=0.0, activation="relu", dt=DT,
                       n_steps=2, n_samples=40000)
        net = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1), stax.Relu(), stax.Dense(1))
        xa = np.concatenate([x, xt])
        ntk = net.kernel_fn(xa, None, get="ntk")
        assert rel_err(sol.ntk[-1], ntk) < DMFT_TOLERANCES["mc"]
        assert rel_err(sol.ntk[-1], sol.ntk[0]) < 1e-8  # lazy: the kernel does not move


@pytest.mark.float32_stream
def test_mc_relu_rich_matches_finite_mup_networks():
    x, y, xt = _data()
    with x64():
        lim = dmft.mlp(x, y, xt, depth=1, gamma0=1.5, activation="relu", dt=DT,
                       n_steps=STEPS, n_samples=2000)
        lazy = dmft.mlp(x, y, xt, depth=1, gamma0=0.0, activation="relu", dt=DT,
                        n_steps=STEPS, n_samples=2000)
    run = dmft.train_mup(*(jnp.asarray(a, jnp.float32) for a in (x, y, xt)), width=1024,
                         depth=1, gamma0=1.5, activation="relu", dt=DT, n_steps=STEPS,
                         seeds=range(4), substeps=4)
    err = float(np.max(np.abs(run.loss - lim.loss)) / lim.loss[0])
    gap = float(np.max(np.abs(lazy.loss - lim.loss)) / lim.loss[0])
    assert err < DMFT_TOLERANCES["width_loss"] and err < gap / 2, (err, gap)
    assert rel_err(run.phi[0], lim.phi[0, -1]) < DMFT_TOLERANCES["width_kernel"]


X, Y = np.eye(3)[:2], np.array([1.0, -1.0])


@pytest.mark.parametrize("fn", [dmft.deep_linear, dmft.mlp, dmft.train_mup])
def test_negative_gamma0_is_refused(fn):
    kw = {"width": 8} if fn is dmft.train_mup else {}
    with pytest.raises(ValueError, match=r"gamma0=-1.*>= 0|gamma0=-1.*> 0"):
        fn(X, Y, depth=1, gamma0=-1.0, **kw)


def test_finite_networks_need_positive_gamma0():
    with pytest.raises(ValueError, match="gamma0.*> 0.*gradient_descent_mse"):
        dmft.train_mup(X, Y, width=8, depth=1, gamma0=0.0)


@pytest.mark.parametrize("fn", [dmft.deep_linear, dmft.mlp])
def test_unstable_step_names_the_bound(fn):
    # NTK of 2 linear layers on orthonormal inputs in R^3: 2 x x^T / 3, lambda_max = 2/3,
    # so the stable bound on learning_rate * dt is P / lambda_max = 3.
    with pytest.raises(ValueError, match=r"dt=4.0.*stable bound P / lambda_max\(NTK\) = 3\b"):
        fn(X, Y, depth=1, gamma0=1.0, dt=4.0, **({"activation": "linear"} if fn is dmft.mlp
                                                 else {}))


def test_unsupported_architecture():
    with pytest.raises(ValueError, match="activation='gelu'.*'relu'"):
        dmft.mlp(X, Y, depth=1, gamma0=1.0, activation="gelu")
    with pytest.raises(ValueError, match="depth=0.*positive integer"):
        dmft.deep_linear(X, Y, depth=0, gamma0=1.0)
    with pytest.raises(ValueError, match="one scalar target"):
        dmft.deep_linear(X, np.ones((2, 2)), depth=1, gamma0=1.0)
