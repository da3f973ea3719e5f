"""from_flax on dot-product self-attention: Flax's MultiHeadDotProductAttention (linen),
nnx.MultiHeadAttention and the same layer written with jnp.einsum, alone and in a pre-LN
transformer encoder block; against the hand-written stax network (GlobalSelfAttention with
1/sqrt(d) logits, the same Monte Carlo draws) in float64, and in the standard
parameterization against the Flax models' own Monte Carlo NNGP and empirical NTK."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64

from infwidth import from_flax, stax
from infwidth.empirical import empirical_ntk_fn
from infwidth.flax_tracing import UnsupportedOperation

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
init = jax.nn.initializers
S = 256  # draws of the logits where only the mapping is tested (stax uses the same draws)


def _inputs(dtype=jnp.float64):
    x1 = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5), dtype)
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 5), dtype)
    return x1, x2


def check_equal(kernel_fn, expected_fn, x1, x2, what, get=("nngp", "ntk")):
    for b in (x2, None):
        k, e = kernel_fn(x1, b, get=get), expected_fn(x1, b, get=get)
        for g in get:
            assert_close(getattr(k, g), getattr(e, g), tol("nt", "float64"), f"{what} {g}")
    copy = kernel_fn(x1, x1 + 0, get=get)
    same = kernel_fn(x1, None, get=get)
    for g in get:
        np.testing.assert_array_equal(getattr(copy, g), getattr(same, g))


def fused_attention(params, x):
    """The same layer through jax.nn.dot_product_attention."""
    q, k, v = (jnp.einsum("ntd,dhk->nthk", x, params[n]) for n in "qkv")
    return jnp.einsum("nqhk,hko->nqo", jax.nn.dot_product_attention(q, k, v), params["o"])


def einsum_attention(params, x, power=0.5):
    """Attention with logits q.k / d**power (Flax: 0.5; muP: 1)."""
    q = jnp.einsum("ntd,dhk->nthk", x, params["q"])
    k = jnp.einsum("ntd,dhk->nthk", x, params["k"])
    v = jnp.einsum("ntd,dhk->nthk", x, params["v"])
    logits = jnp.einsum("nqhk,nthk->nhqt", q, k) / q.shape[-1] ** power
    o = jnp.einsum("nhqt,nthk->nqhk", jax.nn.softmax(logits, axis=-1), v)
    return jnp.einsum("nqhk,hko->nqo", o, params["o"])


def test_one_attention_layer_equals_stax_in_the_ntk_parameterization():
    with x64():
        x1, x2 = _inputs()
        f64 = {"param_dtype": jnp.float64}
        for use_bias in (True, False):
            expected = stax.GlobalSelfAttention(6, 4, 4, 2, linear_scaling=False,
                                                b_std=0.0 if use_bias else None, n_samples=S)
            linen = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, out_features=6,
                                                    use_bias=use_bias, **f64)
            check_equal(from_flax(linen, x1, parameterization="ntk", attention_samples=S)[2],
                        expected.kernel_fn, x1, x2, f"linen use_bias={use_bias}")
            module = nnx.MultiHeadAttention(num_heads=2, in_features=5, qkv_features=8,
                                            out_features=6, decode=False, use_bias=use_bias,
                                            rngs=nnx.Rngs(0), **f64)
            check_equal(from_flax(module, x1, parameterization="ntk", attention_samples=S)[2],
                        expected.kernel_fn, x1, x2, f"nnx use_bias={use_bias}")
        # values narrower than keys, W_std != 1: W_query_std * W_key_std = 2 * 0.5
        params = {"q": jnp.zeros((5, 2, 4)), "k": jnp.zeros((5, 2, 4)),
                  "v": jnp.zeros((5, 2, 3)), "o": jnp.zeros((2, 3, 6))}
        inits = {"q": init.normal(2 / 5**0.5), "k": init.normal(0.5 / 5**0.5),
                 "v": init.normal(1.5 / 5**0.5), "o": init.normal(1 / 6**0.5)}
        _, _, kernel_fn = from_flax(einsum_attention, x1, params=params, initializers=inits,
                                    parameterization="ntk", attention_samples=S)
        expected = stax.GlobalSelfAttention(6, 4, 3, 2, linear_scaling=False, W_query_std=2.0,
                                            W_key_std=0.5, W_value_std=1.5, n_samples=S)
        check_equal(kernel_fn, expected.kernel_fn, x1, x2, "einsum")
        fused_params = {**params, "v": jnp.zeros((5, 2, 4)), "o": jnp.zeros((2, 4, 6))}
        _, _, kernel_fn = from_flax(fused_attention, x1, params=fused_params,
                                    initializers={**inits, "o": init.normal(1 / 8**0.5)},
                                    parameterization="ntk", attention_samples=S)
        expected = stax.GlobalSelfAttention(6, 4, 4, 2, linear_scaling=False, W_query_std=2.0,
                                            W_key_std=0.5, W_value_std=1.5, n_samples=S)
        check_equal(kernel_fn, expected.kernel_fn, x1, x2, "jax.nn.dot_product_attention")
        # logits q.k / d: a temperature 1 / sqrt(d) = 0.5 at the model's head width
        _, _, kernel_fn = from_flax(functools.partial(einsum_attention, power=1.0), x1,
                                    params=params, initializers=inits, parameterization="ntk",
                                    attention_samples=S)
        expected = stax.GlobalSelfAttention(6, 4, 3, 2, linear_scaling=False, W_query_std=1.0,
                                            W_key_std=0.5, W_value_std=1.5, n_samples=S)
        check_equal(kernel_fn, expected.kernel_fn, x1, x2, "einsum, 1/d logits")


def test_dense_general_with_merged_head_axes_is_a_dense_layer():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.DenseGeneral(features=(2, 4), bias_init=init.normal(0.3))(x)
            h = nn.relu(h.reshape(h.shape[:2] + (8,)))
            return nn.Dense(1)(h.mean(1))

    def std(layer, *args, **kwargs):
        return layer(*args, parameterization="standard", **kwargs)

    _, _, expected = stax.serial(std(stax.Dense, 8, W_std=1.0, b_std=0.3), stax.Relu(),
                                 stax.GlobalAvgPool(), std(stax.Dense, 1, W_std=1.0, b_std=0.0))
    with x64():
        x1, x2 = _inputs()
        check_equal(from_flax(Net(), x1)[2], expected, x1, x2, "DenseGeneral")


class Block(nn.Module):
    """A pre-LN transformer encoder block."""
    d: int = 8
    heads: int = 2
    learned_ln: bool = True

    @nn.compact
    def __call__(self, x):
        def norm():
            return nn.LayerNorm(use_scale=self.learned_ln, use_bias=self.learned_ln)

        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(norm()(x))
        return x + nn.Dense(self.d)(nn.relu(nn.Dense(2 * self.d)(norm()(x))))


class Encoder(nn.Module):
    d: int = 8
    heads: int = 2
    out: int = 1
    learned_ln: bool = True

    @nn.compact
    def __call__(self, x):
        x = Block(self.d, self.heads, self.learned_ln)(nn.Dense(self.d)(x))
        return nn.Dense(self.out)(x.mean(axis=1))


def stax_encoder(d=8, heads=2):
    def residual(branch):
        return stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch),
                           stax.FanInSum())

    return stax.serial(
        stax.Dense(d, b_std=0.0),
        residual(stax.serial(stax.LayerNorm(eps=1e-6), stax.GlobalSelfAttention(
            d, d // heads, d // heads, heads, linear_scaling=False, b_std=0.0, n_samples=S))),
        residual(stax.serial(stax.LayerNorm(eps=1e-6), stax.Dense(2 * d, b_std=0.0),
                             stax.Relu(), stax.Dense(d, b_std=0.0))),
        stax.GlobalAvgPool(), stax.Dense(1, b_std=0.0))


def test_transformer_encoder_block_equals_stax():
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in _inputs())
        expected = stax_encoder()[2]
        _, _, kernel_fn = from_flax(Encoder(learned_ln=False), x1, parameterization="ntk",
                                    attention_samples=S)
        check_equal(kernel_fn, expected, x1, x2, "encoder (ntk)")
        # the NNGP does not depend on the parameterization, nor on LayerNorm's learned scale
        # (ones) and shift (zeros)
        _, _, kernel_fn = from_flax(Encoder(), x1, attention_samples=S)
        check_equal(kernel_fn, expected, x1, x2, "encoder (standard)", get=("nngp",))


class Attention(nn.Module):
    heads: int
    head_width: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        return nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.heads * self.head_width, out_features=16,
            use_bias=self.use_bias)(x)


def _bias_ntk_fn(apply_fn, x):
    """The empirical NTK of the bias parameters alone (the others held fixed)."""
    def ntk(params):
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        is_bias = [str(getattr(path[-1], "key", "")) == "bias" for path, _ in flat]

        def f(biases, xx):
            it = iter(biases)
            leaves = [next(it) if b else v for (_, v), b in zip(flat, is_bias)]
            return apply_fn(jax.tree_util.tree_unflatten(treedef, leaves), xx)

        biases = [v for (_, v), b in zip(flat, is_bias) if b]
        return empirical_ntk_fn(f, trace_axes=(-1,))(x, None, biases)

    return jax.jit(ntk)


@pytest.mark.float32_stream
def test_standard_ntk_of_attention_against_the_flax_models_own_gradients():
    """Each weight's share of the NTK scaled by its fan-in / W_std**2 (against the empirical NTK
    of 16 heads of width 64), and the zero-initialized biases' share (query and value biases
    through the softmax, the output bias: the difference of the kernels with and without
    biases, against the empirical NTK of the bias parameters alone)."""
    x, _ = _inputs(jnp.float32)
    kernels, errors = {}, {}
    for use_bias in (True, False):
        init_fn, apply_fn, kernel_fn = from_flax(Attention(16, 64, use_bias), x,
                                                 attention_samples=16384)
        kernels[use_bias] = kernel_fn(x, None, get="ntk")
        ntk_fn = jax.jit(functools.partial(empirical_ntk_fn(apply_fn, trace_axes=(-1,)), x, None))
        draws = [init_fn(jax.random.PRNGKey(s), x.shape)[1] for s in range(24)]
        errors[use_bias] = rel_err(np.mean([ntk_fn(p) for p in draws], 0), kernels[use_bias])
        if use_bias:
            bias_ntk_fn = _bias_ntk_fn(apply_fn, x)
            bias_mc = np.mean([bias_ntk_fn(p) for p in draws], 0)
    assert max(errors.values()) < tol("mc"), errors  # measured 0.026-0.028
    bias_share = np.asarray(kernels[True]) - np.asarray(kernels[False])
    errors["biases"] = rel_err(bias_mc, bias_share)
    assert errors["biases"] < tol("mc"), errors  # measured 0.002 (0.92 without the value bias)
    # muP-style 1/d logits (a temperature 1/8 at head width 64): measured 0.007. The value and
    # output shares dominate this NTK (the 1/sqrt(d) kernel is only 0.4 % away), so this checks
    # the shares under the temperature; the temperature itself is checked against stax above
    shapes = {"q": (5, 16, 64), "k": (5, 16, 64), "v": (5, 16, 64), "o": (16, 64, 16)}
    params = {k: jnp.zeros(s) for k, s in shapes.items()}
    inits = {k: init.lecun_normal() for k in shapes}
    inits["o"] = init.normal(1 / 32)  # variance 1 / (heads * head width)
    f = functools.partial(einsum_attention, power=1.0)
    init_fn, apply_fn, kernel_fn = from_flax(f, x, params=params, initializers=inits,
                                             attention_samples=16384)
    ntk_fn = jax.jit(functools.partial(empirical_ntk_fn(apply_fn, trace_axes=(-1,)), x, None))
    mc = np.mean([ntk_fn(init_fn(jax.random.PRNGKey(s), x.shape)[1]) for s in range(24)], 0)
    errors["1/d"] = rel_err(mc, kernel_fn(x, None, get="ntk"))
    assert errors["1/d"] < tol("mc"), errors


class Causal(nn.Module):
    heads: int = 2
    head_width: int = 4
    out: int = 16

    @nn.compact
    def __call__(self, x):
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
        return nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.heads * self.head_width,
            out_features=self.out)(x, mask=mask)


def test_causal_mask_first_position_is_exact_and_masking_matters():
    """Query position 0 of a causal layer attends to key 0 alone: its output covariance is
    W_value_std**2 W_out_std**2 x_0 . x'_0 / D exactly, whatever the logits (lecun: 1)."""
    with x64():
        x1, x2 = _inputs()
        _, _, kernel_fn = from_flax(Causal(), x1, attention_samples=S)
        k = kernel_fn(x1, x2, get="nngp")
        first = np.einsum("ac,bc->ab", np.asarray(x1[:, 0]), np.asarray(x2[:, 0])) / 5
        assert_close(k[:, :, 0, 0], first, tol("exact", "float64"), "position 0")
        unmasked = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, out_features=16)
        k_full = from_flax(unmasked, x1, attention_samples=S)[2](x1, x2, get="nngp")
        assert rel_err(k_full[:, :, 0, 0], first) > 0.1  # without the mask position 0 mixes


@pytest.mark.float32_stream
def test_causal_attention_against_the_flax_models_own_kernels():
    x, _ = _inputs(jnp.float32)
    init_fn, apply_fn, kernel_fn = from_flax(Causal(16, 64, 64), x, attention_samples=16384)
    exact = kernel_fn(x, None, get=("nngp", "ntk"))
    ntk_fn = jax.jit(functools.partial(empirical_ntk_fn(apply_fn, trace_axes=(-1,)), x, None))
    draws = [init_fn(jax.random.PRNGKey(s), x.shape)[1] for s in range(64)]

    def nngp(p):
        out = apply_fn(p, x)
        return jnp.einsum("ntc,mpc->nmtp", out, out) / out.shape[-1]

    nngp = jax.jit(nngp)
    errors = (rel_err(np.mean([nngp(p) for p in draws], 0), exact.nngp),
              rel_err(np.mean([ntk_fn(p) for p in draws], 0), exact.ntk))
    assert max(errors) < tol("mc"), errors  # measured 0.048 (NNGP), 0.024 (NTK)


@pytest.mark.float32_stream
def test_transformer_encoder_monte_carlo_approaches_the_kernel():
    x1, x2 = _inputs(jnp.float32)
    errors = {}
    for d, heads in ((64, 8), (256, 16)):
        init_fn, apply_fn, kernel_fn = from_flax(Encoder(d, heads, out=64), x1,
                                                 attention_samples=16384)
        exact = kernel_fn(x1, x2, get=("nngp", "ntk"))
        nngp, _ = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(0), 128, ntk=False)
        _, ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(1), 16)
        errors[d] = (rel_err(nngp, exact.nngp), rel_err(ntk, exact.ntk))
    assert max(errors[256]) < tol("mc"), errors
    assert errors[256][1] < errors[64][1], errors  # NTK: 0.065 -> 0.017 measured


def test_under_neural_tangents_test_settings():
    """x64 and jax_numpy_rank_promotion='raise' (neural-tangents' tests run that way): LayerNorm
    statistics, attention, dropout and position slices of sequences all keep explicit ranks."""
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(8)(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x))
            h = nn.Dropout(0.2)(nn.relu(nn.Dense(16)(x)), deterministic=False)
            return nn.Dense(1)(h[:, ::2].mean(1))

    with x64(), jax.numpy_rank_promotion("raise"):
        x1, x2 = _inputs()
        _, _, kernel_fn = from_flax(Net(), x1, rngs={"dropout": jax.random.PRNGKey(0)},
                                    attention_samples=64)
        k = kernel_fn(x1, x2, get=("nngp", "ntk"))
        assert k.nngp.dtype == jnp.float64 and k.ntk.shape == (3, 2)
        assert np.isfinite(np.asarray(k.ntk)).all() and float(np.min(np.diag(
            np.asarray(kernel_fn(x1, None, get="nngp"))))) > 0


def test_attention_without_a_rule_raises_naming_the_reason():
    x = jnp.ones((2, 4, 5))

    class Cross(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.Dense(5)(x)
            return nn.MultiHeadDotProductAttention(num_heads=1)(x, y)

    class PaddingMask(nn.Module):  # a mask that differs between the inputs of the batch
        @nn.compact
        def __call__(self, x):
            tokens = jnp.ones(x.shape[:2]).at[0, -1].set(0)
            mask = nn.make_attention_mask(tokens, tokens)
            return nn.MultiHeadDotProductAttention(num_heads=1)(x, mask=mask)

    class RandomQueryBias(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.MultiHeadDotProductAttention(num_heads=1,
                                                   bias_init=init.normal(1.0))(x)

    for model, match in ((Cross(), "different activations"), (PaddingMask(), "not a softmax"),
                         (RandomQueryBias(), "random query bias")):
        with pytest.raises(UnsupportedOperation, match=match):
            from_flax(model, x)
    with pytest.raises(ValueError, match="attention_samples"):
        from_flax(Cross(), x, attention_samples=10)
