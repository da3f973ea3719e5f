"""Contract tests for GlobalSelfAttention: shapes, analytic vs Monte Carlo kernels of wide finite
networks, and bad input.

Monte Carlo: sequences of length 4, Dense(256) -> attention -> Relu -> Dense(64), tolerance
tol('mc'). Linear scaling: 8 heads of key width 256 and value width 64; the logits fluctuate
around their limit by O(1/sqrt(n_chan_key)) per head. 1/sqrt scaling: the attention weights stay
random (Gaussian) in the limit and the outputs are heavy-tailed, so 32 narrower heads (key 64,
value 16; the same total widths) average that out; with 8 heads the NTK estimate was off by
0.08 at 64 draws and 0.035 at 192. 64 draws per case. (A RELU / CONCAT / val_pos_emb case
passed too, at 128 draws with NTK error 0.037, but is left to the nt parity test for time.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mc_kernels, rel_err, tol

from infwidth import stax

N_SAMPLES = 64


def decay(d):
    return jnp.exp(-0.5 * d)


CASES = {
    "softmax": {"b_std": 0.2, "W_key_std": 1.5},
    "sqrt-identity-sum-decay": {"linear_scaling": False, "attention_mechanism": "IDENTITY",
                                "pos_emb_type": "SUM", "pos_emb_decay_fn": decay,
                                "W_key_std": 0.7},
}


def _net(kw):
    # with 1/sqrt(width) logits the attention weights stay random (Gaussian) in the limit and
    # the outputs are heavy-tailed; more, narrower heads (same total widths) average that out
    heads = (64, 16, 32) if not kw.get("linear_scaling", True) else (256, 64, 8)
    return stax.serial(stax.Dense(256, 1.3, 0.1),
                       stax.GlobalSelfAttention(256, *heads, **kw),
                       stax.Relu(), stax.Dense(64, 1.0, 0.1))


@pytest.mark.parametrize("name", sorted(CASES))
def test_attention_matches_monte_carlo(name):
    init_fn, apply_fn, kernel_fn = _net(CASES[name])
    key = jax.random.PRNGKey(0)
    x1 = jax.random.normal(key, (3, 4, 5))
    x2 = jnp.concatenate([x1[:1], jax.random.normal(key + 1, (1, 4, 5))])
    out_shape, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    assert apply_fn(params, x1).shape == out_shape == (3, 4, 64)
    k = kernel_fn(x1, x2, get=("nngp", "ntk"))
    assert k.nngp.shape == (3, 2, 4, 4)
    # mc_kernels flattens (N, T, C): its NNGP averages the diagonal positions, its NTK is the
    # Jacobian contraction of output (position 0, channel 0)
    # the 1/sqrt(width) logits of the 'sqrt' case are heavy-tailed: more samples
    n = 3 * N_SAMPLES if name.startswith("sqrt") else N_SAMPLES
    mc_nngp, mc_ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), n)
    nngp = jnp.einsum("abtt->ab", k.nngp) / 4
    ntk = k.ntk[:, :, 0, 0]
    assert rel_err(mc_nngp, nngp) < tol("mc"), rel_err(mc_nngp, nngp)
    assert rel_err(mc_ntk, ntk) < tol("mc"), rel_err(mc_ntk, ntk)
    assert rel_err(mc_nngp, 1.2 * np.asarray(nngp)) > tol("mc")
    assert rel_err(mc_ntk, 1.2 * np.asarray(ntk)) > tol("mc")


def test_attention_errors():
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match=r"GlobalSelfAttention: the input has shape \(2, 5\), "
                                         r"but attention needs sequences"):
        stax.GlobalSelfAttention(4, 4, 4, 1)[2](x)
    with pytest.raises(ValueError, match="GlobalSelfAttention: the input has shape"):
        stax.GlobalSelfAttention(4, 4, 4, 1)[0](jax.random.PRNGKey(0), (2, 5))
    with pytest.raises(ValueError, match=r"GlobalSelfAttention\(attention_mechanism='TANH'\)"):
        stax.GlobalSelfAttention(4, 4, 4, 1, attention_mechanism="TANH")
    with pytest.raises(ValueError, match=r"GlobalSelfAttention\(pos_emb_type='ADD'\)"):
        stax.GlobalSelfAttention(4, 4, 4, 1, pos_emb_type="ADD")
    with pytest.raises(ValueError, match=r"GlobalSelfAttention\(n_heads=0\)"):
        stax.GlobalSelfAttention(4, 4, 4, 0)
    with pytest.raises(ValueError, match=r"n_samples=10\): .* multiple of 4, e.g. n_samples=12"):
        stax.GlobalSelfAttention(4, 4, 4, 1, linear_scaling=False, n_samples=10)
    with pytest.raises(ValueError, match=r"GlobalSelfAttention\(n_samples=0\)"):
        stax.GlobalSelfAttention(4, 4, 4, 1, linear_scaling=False, n_samples=0)
    with pytest.raises(TypeError, match=r"seed='a'"):
        stax.GlobalSelfAttention(4, 4, 4, 1, linear_scaling=False, seed="a")
    with pytest.raises(ValueError, match="diagonal_spatial=False"):
        stax.GlobalSelfAttention(4, 4, 4, 1)[2](jnp.ones((2, 3, 4)), diagonal_spatial=True)
    with pytest.raises(ValueError, match=r"pos_emb_type='SUM', n_chan_pos_emb=3"):
        stax.GlobalSelfAttention(4, 4, 4, 1, pos_emb_type="SUM",
                                 n_chan_pos_emb=3)[2](jnp.ones((2, 3, 4)))
