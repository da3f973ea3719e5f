"""The theory against trained finite networks: wide ReLU networks (NTK parameterization) trained
by full-batch gradient descent on ``0.5 * mean((f - y)**2)`` for ``STEPS`` steps of size ``LR``
follow `gradient_descent_mse` at ``t = STEPS`` (with their own empirical NTK, computed here with
plain ``jax.jacrev``, and with the analytic NTK), and an ensemble over seeds trained with optax
SGD has the mean and covariance of `gradient_descent_mse_ensemble`.

Tolerances (stated per test) come from three sources: the linearization error of a finite
network, O(1/sqrt(width)); gradient descent with a finite step against gradient flow, about
``LR * lambda_max / (2 n)`` relative on the fast modes (here 0.05 at most); and, for the ensemble,
the Monte Carlo error of ``SEEDS`` seeds (about ``1/sqrt(SEEDS)`` of the spread for the mean and
``sqrt(2/SEEDS)`` for the covariance).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, x64

from infwidth import predict, stax

WIDTH = 2048
STEPS = 300
SEEDS = 64


def _net():
    return stax.serial(stax.Dense(WIDTH, W_std=1.5, b_std=0.5), stax.Relu(),
                       stax.Dense(1, W_std=1.5, b_std=0.5))


def _data():
    x_train = jnp.linspace(-2.0, 2.0, 8)[:, None]
    x_test = jnp.linspace(-3.0, 3.0, 12)[:, None]
    return x_train, x_test, jnp.sin(2 * x_train)


def _learning_rate(kernel_fn, x_train, y):
    """A step with lr * lambda_max / n = 0.1: stable and close to gradient flow."""
    return 0.05 * predict.max_learning_rate(kernel_fn(x_train, None, "ntk"), y.size)


def _loss(apply_fn, params, x, y):
    return 0.5 * jnp.mean((apply_fn(params, x) - y) ** 2)


def _empirical_ntk(apply_fn, params, x1, x2):
    def flat_jac(x):
        jac = jax.jacrev(lambda p: apply_fn(p, x)[:, 0])(params)
        return jnp.concatenate([j.reshape(x.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)],
                               axis=1)

    return flat_jac(x1) @ flat_jac(x2).T


def test_one_wide_network_follows_its_linearization():
    with x64():
        init_fn, apply_fn, kernel_fn = _net()
        x_train, x_test, y = _data()
        lr = _learning_rate(kernel_fn, x_train, y)
        _, params = init_fn(jax.random.PRNGKey(0), x_train.shape)
        f0, ft0 = apply_fn(params, x_train), apply_fn(params, x_test)
        ntk_dd = _empirical_ntk(apply_fn, params, x_train, x_train)
        ntk_td = _empirical_ntk(apply_fn, params, x_test, x_train)

        grad = jax.jit(jax.grad(lambda p: _loss(apply_fn, p, x_train, y)))

        def step(p, _):
            return jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grad(p)), None

        trained, _ = jax.lax.scan(step, params, None, length=STEPS)
        f_t, ft_t = apply_fn(trained, x_train), apply_fn(trained, x_test)
        assert float(jnp.mean((f_t - y) ** 2)) < 0.3 * float(jnp.mean((f0 - y) ** 2))

        # Empirical NTK of this network: linearization + discretization error only (< 5%;
        # it depends on the draw: measured 1.0% / 1.2% and 3.7% on two draws).
        tr, te = predict.gradient_descent_mse(ntk_dd, y, lr)(STEPS, f0, ft0, ntk_td)
        assert_close(tr - f0, f_t - f0, 0.05, "train change, empirical NTK")
        assert_close(te - ft0, ft_t - ft0, 0.05, "test change, empirical NTK")
        # Analytic NTK: adds the O(1/sqrt(width)) fluctuation of the NTK at init (< 5%;
        # measured 1.3% / 1.2%).
        k_dd = kernel_fn(x_train, None, "ntk")
        k_td = kernel_fn(x_test, x_train, "ntk")
        tr, te = predict.gradient_descent_mse(k_dd, y, lr)(STEPS, f0, ft0, k_td)
        assert_close(tr - f0, f_t - f0, 0.05, "train change, analytic NTK")
        assert_close(te - ft0, ft_t - ft0, 0.05, "test change, analytic NTK")


def test_ensemble_of_trained_networks_matches_infinite_ensemble():
    optax = pytest.importorskip("optax")
    with x64():
        init_fn, apply_fn, kernel_fn = _net()
        x_train, x_test, y = _data()
        lr = _learning_rate(kernel_fn, x_train, y)
        opt = optax.sgd(lr)

        def train(key):
            _, params = init_fn(key, x_train.shape)
            grad = jax.grad(lambda p: _loss(apply_fn, p, x_train, y))

            def step(carry, _):
                p, state = carry
                updates, state = opt.update(grad(p), state, p)
                return (optax.apply_updates(p, updates), state), None

            (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=STEPS)
            return apply_fn(p, x_test)[:, 0]

        outs = np.asarray(jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(1),
                                                                    SEEDS)))
        theory = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y, lr)(
            STEPS, x_test, "ntk", compute_cov=True)
        mean, cov = np.asarray(theory.mean[:, 0]), np.asarray(theory.covariance)
        std = np.sqrt(np.diag(cov))

        # Mean: within 4 Monte Carlo standard errors plus 0.05 (width + step-size bias);
        # measured: largest error 0.088 where 4 standard errors + 0.05 is 0.23.
        err = np.abs(outs.mean(0) - mean)
        assert np.all(err < 4 * std / np.sqrt(SEEDS) + 0.05), (err, std)
        # Covariance: relative Frobenius error below 2 sqrt(2 / SEEDS) (0.35); measured 0.18.
        emp_cov = np.cov(outs, rowvar=False)
        assert_close(emp_cov, cov, 2 * np.sqrt(2 / SEEDS), "ensemble covariance")
        # The test is not vacuous: the prior (t = 0) covariance is far from the trained one.
        prior = np.asarray(kernel_fn(x_test, None, "nngp"))
        assert np.linalg.norm(emp_cov - prior) > 2 * np.linalg.norm(emp_cov - cov)
