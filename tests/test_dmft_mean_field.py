"""The two-layer mean-field particle flow (infwidth.dmft.mean_field) converging, as the
population grows, to the exact two-layer linear DMFT (infwidth.dmft.deep_linear, depth 1), with
its half-population convergence check tracking the error.

Setting: 4 training and 2 test inputs in R^3, targets sign(x_0), float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import DMFT_TOLERANCES, rel_err, x64

from infwidth import dmft


def test_particle_flow_converges_to_the_dmft_limit():
    with x64():
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (6, 3), jnp.float32), float)
        x, y, xt = x[:4], np.sign(x[:4, 0]), x[4:]
        exact = dmft.deep_linear(x, y, xt, depth=1, gamma0=1.5, dt=0.25, n_steps=8)
        lazy = dmft.deep_linear(x, y, xt, depth=1, gamma0=0.0, dt=0.25, n_steps=8)
        errs, residuals = [], []
        for m in (1024, 8192):
            flow = dmft.mean_field(x, y, xt, gamma0=1.5, activation="linear", dt=0.25,
                                   n_steps=8, n_particles=m)
            errs.append(rel_err(flow.phi[0, -1], exact.phi[0, -1]))
            residuals.append(flow.residual)
        assert errs[1] < errs[0] / 2 and residuals[1] < residuals[0] / 2, (errs, residuals)
        assert errs[1] < DMFT_TOLERANCES["mc"]
        loss_err = float(np.max(np.abs(flow.loss - exact.loss)) / exact.loss[0])
        gap = float(np.max(np.abs(lazy.loss - exact.loss)) / exact.loss[0])
        assert loss_err < DMFT_TOLERANCES["mc"] and loss_err < gap / 4, (loss_err, gap)


def test_particle_flow_errors():
    x, y = np.eye(3)[:2], np.array([1.0, -1.0])
    with pytest.raises(ValueError, match="n_particles=7.*even"):
        dmft.mean_field(x, y, gamma0=1.0, n_particles=7)
    with pytest.raises(ValueError, match="gamma0=0.0.*> 0"):
        dmft.mean_field(x, y, gamma0=0.0)
    with pytest.raises(RuntimeError, match="n_particles"):
        dmft.mean_field(x, y, gamma0=1.0, n_particles=8, n_steps=4, tol=1e-6)


def test_particles_move_down_the_gradient_of_the_loss():
    """The returned neuron trajectories are the gradient flow of the finite network's loss:
    their central finite-difference velocity equals -eta gamma0^2 m dL/d(a_i, w_i) computed by
    autodiff of the network sum_i a_i phi(w_i.x / sqrt(D)) / (gamma0 m) (m = half the
    particles, each half one network), and the loss does not increase."""
    with x64():
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (5, 3)), float)
        y = np.sign(x[:, 0])
        gamma0, eta, dt, m = 1.5, 1.0, 0.01, 32
        flow = dmft.particle_flow(x, y, gamma0=gamma0, activation="tanh", learning_rate=eta,
                                  dt=dt, n_steps=4, n_particles=2 * m, substeps=4)
        a, w = np.asarray(flow.a), np.asarray(flow.w)
        assert a.shape == (5, 2 * m) and w.shape == (5, 2 * m, 3)

        def f(a, w):
            return jnp.tanh(x @ w.T / jnp.sqrt(3.0)) @ a / (gamma0 * m)

        for half in (slice(0, m), slice(m, 2 * m)):
            f0 = f(a[0, half], w[0, half])

            def loss(a_, w_, f0=f0):
                return jnp.sum((f(a_, w_) - f0 - y) ** 2) / (2 * len(y))

            ga, gw = jax.grad(loss, argnums=(0, 1))(a[2, half], w[2, half])
            va = (a[3, half] - a[1, half]) / (2 * dt)
            vw = (w[3, half] - w[1, half]) / (2 * dt)
            scale = eta * gamma0 ** 2 * m
            assert rel_err(va, -scale * np.asarray(ga)) < 1e-3
            assert rel_err(vw, -scale * np.asarray(gw)) < 1e-3
        assert np.all(np.diff(np.asarray(flow.solution.loss)) <= 1e-12)
