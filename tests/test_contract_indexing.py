"""Contract tests for Index: shapes of init_fn/apply_fn/kernel_fn, Monte Carlo of a sequence
network read out at its last token (width 512, 64 draws, tol('mc')), indexing identities and
errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol

from infwidth import stax


def test_index_readout_matches_monte_carlo():
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, 1.4, 0.1), stax.Relu(), stax.Index(stax.Slice[:, -1]),
        stax.Dense(64, 1.2, 0.1))
    x1 = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5))
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 5))
    out_shape, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    assert apply_fn(params, x1).shape == out_shape == (3, 64)
    k = kernel_fn(x1, x2, get=("nngp", "ntk"))
    mc_nngp, mc_ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), 64)
    assert rel_err(mc_nngp, k.nngp) < tol("mc"), rel_err(mc_nngp, k.nngp)
    assert rel_err(mc_ntk, k.ntk) < tol("mc"), rel_err(mc_ntk, k.ntk)
    assert rel_err(mc_nngp, 1.2 * np.asarray(k.nngp)) > tol("mc")


_ALL = slice(None)
INDEX_CASES = [  # activation index, the matching index of the (N1, N2, H, H', W, W') kernel
    (stax.Slice[:, 1:3], (_ALL, _ALL, slice(1, 3), slice(1, 3))),
    (stax.Slice[..., 2, :], (_ALL,) * 4 + (2, 2)),
    (stax.Slice[1:, ::-2], (slice(1, None),) * 2 + (slice(None, None, -2),) * 2),
    (stax.Slice[:, 0, 1:], (_ALL, _ALL, 0, 0, slice(1, None), slice(1, None))),
]


@pytest.mark.parametrize("idx,entries", INDEX_CASES)
def test_index_commutes_with_the_kernel(idx, entries):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 3, 2))
    base = stax.serial(stax.Conv(8, (1, 1), W_std=1.3, b_std=0.1), stax.Relu(),
                       stax.Conv(8, (1, 1)))
    init_fn, apply_fn, kernel_fn = stax.serial(base, stax.Index(idx))
    shape, params = init_fn(jax.random.PRNGKey(0), x.shape)
    assert apply_fn(params, x).shape == shape == np.empty(x.shape[:-1] + (8,))[idx].shape
    k = kernel_fn(x)
    k0 = base[2](x)
    assert_close(k.nngp, k0.nngp[entries], tol("exact"), "nngp")
    assert_close(k.ntk, k0.ntk[entries], tol("exact"), "ntk")
    assert k.shape1 == shape


def test_index_errors():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(NotImplementedError, match=r"Index.*cannot index the channel axis"):
        stax.Index(stax.Slice[..., 0])[2](x)
    with pytest.raises(NotImplementedError, match=r"Index.*index it with a slice"):
        stax.Index(0)[2](x)
    with pytest.raises(ValueError, match=r"Index.*too many indices"):
        stax.Index(stax.Slice[:, :, :, 1])[0](jax.random.PRNGKey(0), x.shape)
    with pytest.raises(TypeError, match=r"Index.*must be ints, slices or Ellipsis"):
        stax.Index(stax.Slice[:, [0, 1]])[2](x)
