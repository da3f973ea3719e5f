"""Contract test over the convolutional layers (issue 4): for every layer (Conv, ConvTranspose,
ConvLocal, AvgPool, SumPool, GlobalAvgPool, GlobalSumPool, Flatten) a small network in which it
appears, checked for

* shapes: init_fn, apply_fn and kernel_fn's shape1 agree;
* the analytic NNGP and NTK against Monte Carlo estimates from wide finite CNNs built from the
  same triple (tests/helpers.mc_kernels: output covariance over seeds and channels; Jacobian
  contraction), with a check that the comparison is sharp enough to reject a 20% error.

Sizes are modest (256 channels, 32 samples, 5x4 images). A single linear layer's kernel is
moreover compared in float64 with the exact expectation over the weights of the finite layer
(a Jacobian contraction, since the output is linear in the weights).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64

from infwidth import stax

WIDTH = 256
N_SAMPLES = 32
OUT = 128  # readout channels: the NNGP estimate averages over them


def _conv(*args, **kwargs):
    return stax.Conv(WIDTH, *args, **kwargs)


CATALOGUE = {
    # layer under test first in the name
    "conv-same-valid-flatten": lambda: stax.serial(
        _conv((3, 3), padding="SAME", W_std=1.4, b_std=0.2), stax.Relu(),
        _conv((2, 2), strides=(2, 1), W_std=1.3), stax.Relu(), stax.Flatten(),
        stax.Dense(OUT, W_std=1.2, b_std=0.1)),
    "conv-circular-standard-gap": lambda: stax.serial(
        _conv((3, 2), padding="CIRCULAR", W_std=1.5, b_std=0.3, parameterization="standard"),
        stax.Erf(), stax.GlobalAvgPool(),
        stax.Dense(OUT, W_std=1.1, b_std=0.2, parameterization="standard")),
    "convtranspose-circular-standard": lambda: stax.serial(
        stax.ConvTranspose(WIDTH, (2, 3), strides=(1, 2), padding="CIRCULAR", W_std=1.2,
                           b_std=0.1, parameterization="standard"), stax.Relu(),
        stax.GlobalSumPool(), stax.Dense(OUT, parameterization="standard")),
    "convlocal-valid": lambda: stax.serial(  # unshared weights: 12 positions x 1024 x 128
        stax.Conv(WIDTH, (2, 2), padding="SAME", W_std=1.3, b_std=0.3), stax.Relu(),
        stax.ConvLocal(128, (2, 2), W_std=1.2, b_std=0.1), stax.Flatten(), stax.Dense(OUT)),
    "avgpool-same-normalize": lambda: stax.serial(
        _conv((2, 2), padding="SAME", b_std=0.1), stax.Relu(),
        stax.AvgPool((2, 3), strides=(2, 1), padding="SAME", normalize_edges=True),
        stax.Flatten(), stax.Dense(OUT)),
    "sumpool-circular-gsp": lambda: stax.serial(
        _conv((2, 2), padding="CIRCULAR", W_std=1.2), stax.Abs(),
        stax.SumPool((2, 2), padding="CIRCULAR"), stax.GlobalSumPool(), stax.Dense(OUT)),
}
DIAGONAL = {"conv-same-valid-flatten", "convlocal-valid"}


def _inputs(name):
    shape = (2, 7, 2) if "1d" in name else (2, 5, 4, 2)
    key = jax.random.PRNGKey(0)
    x1 = jax.random.normal(key, shape)
    x2 = jnp.concatenate([x1[:1], jax.random.normal(key + 1, (1,) + shape[1:])])
    return x1, x2  # x2 shares one input with x1


def _jit(kernel_fn):
    return jax.jit(kernel_fn, static_argnames=("get", "diagonal_spatial"))


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_shapes_and_monte_carlo(name):
    init_fn, apply_fn, kernel_fn = CATALOGUE[name]()
    x1, x2 = _inputs(name)
    out_shape, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    assert apply_fn(params, x1).shape == out_shape == (2, OUT)
    k = kernel_fn(x1, x2)
    assert k.nngp.shape == k.ntk.shape == (2, 2)
    assert k.shape1 == out_shape

    mc_nngp, mc_ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), N_SAMPLES)
    ks = [k]
    if name in DIAGONAL:  # networks ending in Flatten: the cheap path gives the same kernel
        ks.append(_jit(kernel_fn)(x1, x2, get=("nngp", "ntk"), diagonal_spatial=True))
    for k in ks:
        assert rel_err(mc_nngp, k.nngp) < tol("mc"), rel_err(mc_nngp, k.nngp)
        assert rel_err(mc_ntk, k.ntk) < tol("mc"), rel_err(mc_ntk, k.ntk)
    # the comparison is sharp enough to fail: a kernel off by 20% is rejected
    assert rel_err(mc_nngp, 1.2 * np.asarray(ks[0].nngp)) > tol("mc")
    assert rel_err(mc_ntk, 1.2 * np.asarray(ks[0].ntk)) > tol("mc")


LINEAR = {
    "Conv-same-stride": lambda: stax.Conv(1, (3, 2), strides=(2, 1), padding="SAME"),
    "Conv-circular": lambda: stax.Conv(1, (2, 3), padding="CIRCULAR", W_std=1.3),
    "Conv-valid-standard": lambda: stax.Conv(1, (2, 2), parameterization="standard"),
    "ConvTranspose-same": lambda: stax.ConvTranspose(1, (2, 3), strides=(2, 2), padding="SAME"),
    "ConvTranspose-circular": lambda: stax.ConvTranspose(1, (3, 2), strides=(2, 1),
                                                         padding="CIRCULAR"),
    "ConvLocal-circular": lambda: stax.ConvLocal(1, (3, 2), strides=(1, 2),
                                                 padding="CIRCULAR"),
}


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_linear_layer_equals_exact_expectation(name):
    """E_W[y1[p] y2[p']] of one output channel is J1 J2^T (J: Jacobian in the weights, which
    are independent with variance ``w_init**2``): the full position-pair kernel, exactly."""
    with x64():
        init_fn, apply_fn, kernel_fn = LINEAR[name]()
        x1 = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 2), jnp.float64)
        x2 = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4, 2), jnp.float64)
        W, _ = init_fn(jax.random.PRNGKey(2), x1.shape)[1]
        # 'ntk': W ~ N(0, 1), scaled in apply_fn; 'standard': W ~ N(0, W_std**2 / fan_in)
        w_var = 1 / (2 * 2 * 2) if "standard" in name else 1.0  # fan_in = channels * taps

        def jac(x):
            j = jax.jacrev(lambda w: apply_fn((w, None), x)[..., 0])(jnp.ones_like(W))
            return j.reshape(j.shape[:3] + (-1,))

        j1, j2 = jax.jit(jac)(x1), jax.jit(jac)(x2)
        exact = w_var * jnp.einsum("ahwk,bHWk->abhHwW", j1, j2)
        k = _jit(kernel_fn)(x1, x2, get="nngp")
        assert k.shape == exact.shape
        assert_close(k, exact, tol("exact", "float64"), name)
