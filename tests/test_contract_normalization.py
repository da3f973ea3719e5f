"""Contract tests for LayerNorm and Dropout: shapes, analytic vs Monte Carlo kernels of wide
finite networks, closed forms and bad input.

LayerNorm: width 512, 64 draws, tol('mc'). Dropout (train mode): width 512, 64 draws of
parameters *and* masks; the masks add noise of relative size ~ sqrt((1 - rate) / (rate * width))
per layer, well inside tol('mc') at rate >= 0.5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64

from infwidth import stax

WIDTH = 512
N_SAMPLES = 64


def _inputs():
    key = jax.random.PRNGKey(0)
    x1 = jax.random.normal(key, (4, 6))
    x2 = jnp.concatenate([x1[:1], 3 * jax.random.normal(key + 1, (2, 6))])
    return x1, x2


def test_layernorm_matches_monte_carlo():
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(WIDTH, 1.5, 0.3), stax.LayerNorm(), stax.Relu(),
        stax.Dense(WIDTH, 1.2, 0.1, parameterization="standard"), stax.LayerNorm(eps=0.1),
        stax.Erf(), stax.Dense(64, 1.0, 0.2))
    x1, x2 = _inputs()
    out_shape, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    assert apply_fn(params, x1).shape == out_shape == (4, 64)
    k = kernel_fn(x1, x2, get=("nngp", "ntk"))
    mc_nngp, mc_ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), N_SAMPLES)
    assert rel_err(mc_nngp, k.nngp) < tol("mc"), rel_err(mc_nngp, k.nngp)
    assert rel_err(mc_ntk, k.ntk) < tol("mc"), rel_err(mc_ntk, k.ntk)
    assert rel_err(mc_nngp, 1.2 * np.asarray(k.nngp)) > tol("mc")
    assert rel_err(mc_ntk, 1.2 * np.asarray(k.ntk)) > tol("mc")


def _mc_dropout(init_fn, apply_fn, x, key, n_samples):
    """Monte Carlo NNGP/NTK of x with itself, a fresh dropout mask per draw (plain jacrev)."""

    def one(k):
        k_init, k_rng = jax.random.split(k)
        _, params = init_fn(k_init, x.shape)
        f = apply_fn(params, x, rng=k_rng)
        jac = jax.jacrev(lambda p: apply_fn(p, x, rng=k_rng)[:, 0])(params)
        ntk = sum(a.reshape(a.shape[0], -1) @ a.reshape(a.shape[0], -1).T
                  for a in jax.tree_util.tree_leaves(jac))
        return f @ f.T / f.shape[-1], ntk

    nngps, ntks = jax.lax.map(jax.jit(one), jax.random.split(key, n_samples), batch_size=4)
    return np.asarray(nngps.mean(0)), np.asarray(ntks.mean(0))


def test_dropout_matches_monte_carlo():
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(WIDTH, 1.5, 0.3), stax.Relu(), stax.Dropout(0.6),
        stax.Dense(WIDTH, 1.2, 0.1), stax.Erf(), stax.Dropout(0.8), stax.Dense(64, 1.0, 0.2))
    x1, _ = _inputs()
    out_shape, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    assert apply_fn(params, x1, rng=jax.random.PRNGKey(0)).shape == out_shape == (4, 64)
    k = kernel_fn(x1, None, get=("nngp", "ntk"))
    mc_nngp, mc_ntk = _mc_dropout(init_fn, apply_fn, x1, jax.random.PRNGKey(2), N_SAMPLES)
    assert rel_err(mc_nngp, k.nngp) < tol("mc"), rel_err(mc_nngp, k.nngp)
    assert rel_err(mc_ntk, k.ntk) < tol("mc"), rel_err(mc_ntk, k.ntk)
    # the dropout correction matters: the test-mode kernel is rejected
    k_test = stax.serial(
        stax.Dense(WIDTH, 1.5, 0.3), stax.Relu(), stax.Dense(WIDTH, 1.2, 0.1), stax.Erf(),
        stax.Dense(64, 1.0, 0.2))[2](x1, None, get=("nngp", "ntk"))
    assert rel_err(mc_nngp, k_test.nngp) > tol("mc")
    assert rel_err(mc_ntk, k_test.ntk) > tol("mc")


def test_layernorm_closed_form_and_invariance():
    with x64():
        x = jnp.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])
        _, _, kernel_fn = stax.serial(stax.Dense(8, 1.7, 0.4), stax.LayerNorm(eps=0.05))
        q = 1.7**2 * x @ x.T / 3 + 0.4**2
        d = np.sqrt(np.diag(q) + 0.05)
        assert_close(kernel_fn(x, get="nngp"), q / np.outer(d, d), tol("exact", "float64"), "")
        # without eps, LayerNorm makes the kernel invariant to the input's scale per input
        _, _, kf = stax.serial(stax.Dense(8, 1.7), stax.LayerNorm(eps=0.0), stax.Relu(),
                               stax.Dense(3))
        k1 = kf(x)
        k2 = kf(x * jnp.array([[3.0], [0.2]]))
        assert_close(k1.nngp, k2.nngp, tol("exact", "float64"), "nngp")
        assert_close(k1.ntk, k2.ntk, tol("exact", "float64"), "ntk")
        # spatial: axis (1, 2) normalises by the position-averaged variance
        xs = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4)) * jnp.arange(1.0, 4.0)[:, None]
        ks = stax.serial(stax.Dense(5), stax.LayerNorm(axis=(1, 2), eps=0.0))[2](xs, get="nngp")
        v = jnp.mean(jnp.sum(xs**2, -1) / 4, 1)
        q = jnp.einsum("ahc,bgc->abhg", xs, xs) / 4
        assert_close(ks, q / jnp.sqrt(v[:, None, None, None] * v[None, :, None, None]),
                     tol("exact", "float64"), "spatial")


def test_dropout_test_mode_and_full_rate_are_identity():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    base = stax.serial(stax.Dense(8, 1.5, 0.1), stax.Relu(), stax.Dense(8))
    k0 = base[2](x, get="ntk")
    for layer in (stax.Dropout(0.3, mode="test"), stax.Dropout(1.0)):
        k = stax.serial(base, layer)[2](x, get="ntk")
        assert_close(k, k0, tol("exact"), "")
    k = stax.serial(base, stax.Dropout(0.5))[2](x, get="ntk")
    assert_close(jnp.diag(k), 2 * jnp.diag(k0), tol("exact"), "diagonal")
    off = ~np.eye(3, dtype=bool)
    assert_close(np.asarray(k)[off], np.asarray(k0)[off], tol("exact"), "off-diagonal")
    # apply: test mode is the identity, train mode keeps about `rate` of the units
    _, apply_fn, _ = stax.Dropout(0.25)
    y = apply_fn((), jnp.ones((100, 100)), rng=jax.random.PRNGKey(3))
    assert set(np.unique(np.asarray(y)).tolist()) == {0.0, 4.0}
    assert abs(float(jnp.mean(y > 0)) - 0.25) < 0.02


def test_errors():
    x = jnp.ones((2, 3))
    for rate in (0.0, 1.5, -0.1, "a"):
        with pytest.raises(ValueError, match=r"Dropout\(rate=.*must be in \(0, 1\]"):
            stax.Dropout(rate)
    with pytest.raises(ValueError, match=r"Dropout.*mode must be 'train' or 'test'"):
        stax.Dropout(0.5, mode="eval")
    with pytest.raises(ValueError, match=r"Dropout.*needs a PRNG key"):
        stax.Dropout(0.5)[1]((), x)
    with pytest.raises(ValueError, match=r"LayerNorm\(axis=\(1,\)\): the channel axis"):
        stax.serial(stax.Dense(4), stax.LayerNorm(axis=(1,)))[2](jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"LayerNorm\(axis=-1\): its input is not Gaussian"):
        stax.LayerNorm()[2](x)
    with pytest.raises(ValueError, match=r"LayerNorm\(batch_axis=1, channel_axis=1\)"):
        stax.LayerNorm(batch_axis=1, channel_axis=1)
