"""Contract test over a catalogue of fully connected architectures.

For every architecture: init_fn and apply_fn agree on the output shape, and the analytic NNGP
and NTK match Monte Carlo estimates from wide finite networks built from the same triple
(tests/helpers.mc_kernels: output covariance over seeds and channels; Jacobian contraction).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mc_kernels, rel_err, tol

from infwidth import stax

WIDTH = 1024
N_SAMPLES = 100

ACTIVATIONS = {
    "relu": stax.Relu,
    "leaky": lambda: stax.LeakyRelu(0.3),
    "abrelu": lambda: stax.ABRelu(-0.5, 1.2),
    "abs": stax.Abs,
    "erf": lambda: stax.Erf(1.2, 0.8, 0.1),
}


def mlp(depth, act, W_std, b_std, parameterization, out=64):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(WIDTH, W_std, b_std, parameterization=parameterization),
                   ACTIVATIONS[act]()]
    layers.append(stax.Dense(out, W_std, b_std, parameterization=parameterization))
    return stax.serial(*layers)


CATALOGUE = {
    "relu-d1-ntk": (1, "relu", 1.5, 0.1, "ntk"),
    "relu-d3-standard": (3, "relu", 1.4, 0.2, "standard"),
    "relu-d4-ntk-nobias": (4, "relu", 2**0.5, None, "ntk"),
    "leaky-d2-standard": (2, "leaky", 1.2, None, "standard"),
    "abrelu-d2-ntk": (2, "abrelu", 1.1, 0.3, "ntk"),
    "abs-d1-standard": (1, "abs", 0.9, 0.5, "standard"),
    "erf-d2-ntk": (2, "erf", 1.7, 0.2, "ntk"),
    "erf-d3-standard": (3, "erf", 1.3, None, "standard"),
    "linear-d0-ntk": (0, "relu", 1.3, 0.4, "ntk"),
}


def _inputs():
    key = jax.random.PRNGKey(0)
    x1 = jax.random.normal(key, (4, 6))
    x2 = jnp.concatenate([x1[:1], 0.5 * x1[1:2], jax.random.normal(key + 1, (1, 6))])
    return x1, x2  # x2 shares one input with x1 and has one collinear with it


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_shapes_agree(name):
    init_fn, apply_fn, kernel_fn = mlp(*CATALOGUE[name])
    x1, x2 = _inputs()
    out_shape, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    assert apply_fn(params, x1).shape == out_shape == (4, 64)
    k = kernel_fn(x1, x2)
    assert k.nngp.shape == k.ntk.shape == (4, 3)
    assert k.shape1 == out_shape


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_analytic_matches_monte_carlo(name):
    init_fn, apply_fn, kernel_fn = mlp(*CATALOGUE[name])
    x1, x2 = _inputs()
    mc_nngp, mc_ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), N_SAMPLES)
    k = kernel_fn(x1, x2, get=("nngp", "ntk"))
    assert rel_err(mc_nngp, k.nngp) < tol("mc"), rel_err(mc_nngp, k.nngp)
    assert rel_err(mc_ntk, k.ntk) < tol("mc"), rel_err(mc_ntk, k.ntk)
    # the comparison is sharp enough to fail: a kernel off by 20% is rejected
    assert rel_err(mc_nngp, 1.2 * np.asarray(k.nngp)) > tol("mc")
    assert rel_err(mc_ntk, 1.2 * np.asarray(k.ntk)) > tol("mc")
