"""Masked inputs (``mask_constant``): kernels against neural-tangents 0.6.5 (masking.npz, made
by tests/reference/make_masking.py), against a closed form of the truncated sequences (no
neural-tangents), and the finite masked network (``apply_fn``) against the kernel by Monte
Carlo."""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, mc_kernels, rel_err, tol, x64

import infwidth
from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from catalogue_masking import CATALOGUE, MASK  # noqa: E402

REF = load_reference("masking")


def _kwargs(name, which, symmetric):
    kw = {"mask_constant": np.nan if which == "nan" else MASK}
    if name == "aggregate":
        kw["pattern"] = (jnp.asarray(REF["pattern/1"]),
                         None if symmetric else jnp.asarray(REF["pattern/2"]))
    return kw


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_masked_kernels_match_neural_tangents(name):
    with x64():
        layer, which = CATALOGUE[name](stax)
        x1, x2 = (jnp.asarray(REF[f"x/{which}/{i}"]) for i in (1, 2))
        get = ("nngp", "ntk")
        kw12, kw11 = _kwargs(name, which, False), _kwargs(name, which, True)
        # both calls in one program: one compilation per network
        k12, k11 = jax.jit(lambda a, b: (layer.kernel_fn(a, b, get, **kw12),
                                         layer.kernel_fn(a, None, get, **kw11)))(x1, x2)
        for tag, k in (("12", k12), ("11", k11)):
            for f in get:
                expected = REF[f"{name}/{f}{tag}"]
                assert getattr(k, f).shape == expected.shape
                assert_close(getattr(k, f), expected, tol("nt", "float64"), f"{f}{tag}")
    # the comparison can fail: neural-tangents' kernel of the inputs padded with zeros (no
    # mask) is far from the masked one
    assert rel_err(REF[f"{name}/zero_padded_nngp12"], REF[f"{name}/nngp12"]) > 1e-3


# ----------------------------------------------------------------------------------------------
# closed form: a padded sequence is the shorter sequence


def _relu_maps(cov12, var1, var2):
    """The ReLU's NNGP map and derivative map (arc-cosine kernels of degree 1 and 0, Cho & Saul
    2009), in numpy."""
    norm = np.sqrt(var1 * var2)
    c = np.clip(cov12 / norm, -1.0, 1.0)
    theta = np.arccos(c)
    return (norm * (np.sin(theta) + (np.pi - theta) * c) / (2 * np.pi),
            (np.pi - theta) / (2 * np.pi))


def _closed_form(a, b, Wc, bc, Wd, bd):
    """NNGP and NTK of Conv(filter 2, 'SAME') -> Relu -> GlobalAvgPool -> Dense for two
    sequences of their own lengths (T, C) and (T', C), written out position by position."""
    def conv_cov(u, v):  # 'SAME' with a filter of 2 pads one zero at the end
        up, vp = np.vstack([u, np.zeros_like(u[:1])]), np.vstack([v, np.zeros_like(v[:1])])
        taps = up[:-1] @ vp[:-1].T + up[1:] @ vp[1:].T  # (T, T')
        return Wc**2 * taps / (2 * u.shape[1]) + bc**2

    k12, kaa, kbb = conv_cov(a, b), conv_cov(a, a), conv_cov(b, b)
    relu, dot = _relu_maps(k12, np.diag(kaa)[:, None], np.diag(kbb)[None, :])
    nngp = Wd**2 * relu.mean() + bd**2
    ntk = Wd**2 * (relu.mean() + (k12 * dot).mean()) + bd**2  # the NTK of Conv is its NNGP
    return nngp, ntk


def test_padded_sequences_are_the_shorter_sequences():
    rng = np.random.RandomState(0)
    lengths1, lengths2 = (6, 3, 5), (2, 6)
    x1, x2 = rng.randn(3, 6, 2), rng.randn(2, 6, 2)
    for x, lengths in ((x1, lengths1), (x2, lengths2)):
        for i, n in enumerate(lengths):
            x[i, n:] = MASK
    Wc, bc, Wd, bd = 1.4, 0.3, 1.1, 0.2
    net = stax.serial(stax.Conv(16, (2,), padding="SAME", W_std=Wc, b_std=bc), stax.Relu(),
                      stax.GlobalAvgPool(), stax.Dense(1, W_std=Wd, b_std=bd))
    expected = np.array([[_closed_form(x1[i, :m], x2[j, :n], Wc, bc, Wd, bd)
                          for j, n in enumerate(lengths2)] for i, m in enumerate(lengths1)])
    z1, z2 = (np.where(x == MASK, 0, x) for x in (x1, x2))
    with x64():
        k, zero = jax.jit(lambda a, b, c, d: (net.kernel_fn(a, b, mask_constant=MASK),
                                              net.kernel_fn(c, d, "nngp")))(x1, x2, z1, z2)
        assert_close(k.nngp, expected[..., 0], tol("exact", "float64"), "nngp")
        assert_close(k.ntk, expected[..., 1], tol("exact", "float64"), "ntk")
    # masks: one entry per input after pooling
    assert k.mask1.shape == (3, 1) and k.mask2.shape == (2, 1) and not k.mask1.any()
    # padded with zeros instead, the pooling averages over the padding too
    assert rel_err(zero, expected[..., 0]) > 1e-2


def test_mask_propagation_of_strided_valid_convolution():
    """An output of a window sweep is absent when its window's centre is (neural-tangents)."""
    x = np.ones((1, 7, 1))
    x[0, 4:] = MASK  # present positions 0..3
    conv = stax.Conv(2, (3,), strides=(2,), padding="VALID")  # outputs centred on 1, 3, 5
    k = conv.kernel_fn(jnp.asarray(x), None, mask_constant=MASK)
    assert k.mask1[0, :, 0].tolist() == [False, False, True]
    assert float(jnp.abs(k.nngp[0, 0, 2]).max()) == 0.0  # absent: no covariance
    assert float(k.nngp[0, 0, 1, 1]) > 0


# ----------------------------------------------------------------------------------------------
# the finite masked network


def _masked_x(seed=3):
    rng = np.random.RandomState(seed)
    x1, x2 = rng.randn(3, 5, 2), rng.randn(2, 5, 2)
    x1[0, 3:], x1[2, 4:], x2[1, 2:] = MASK, MASK, MASK
    return jnp.asarray(x1, jnp.float32), jnp.asarray(x2, jnp.float32)


@pytest.mark.float32_stream
@pytest.mark.parametrize("arch", ["conv_pool", "attention"])
def test_masked_apply_fn_matches_the_kernel_by_monte_carlo(arch):
    """16 wide networks: the relative errors measured are 2-4% (0.6% at 32 samples, so noise,
    not bias), under tol('mc') = 6%; the masks change the kernel by 45% and 67%."""
    width = 512
    if arch == "conv_pool":
        net = stax.serial(stax.Conv(width, (2,), padding="SAME", b_std=0.3), stax.Relu(),
                          stax.GlobalAvgPool(), stax.Dense(256, b_std=0.1))
    else:
        net = stax.serial(stax.Dense(width, b_std=0.2),
                          stax.GlobalSelfAttention(width, width, width, 1, b_std=0.1),
                          stax.Relu(), stax.GlobalAvgPool(), stax.Dense(256))
    x1, x2 = _masked_x()
    apply_fn = stax.unmask_fn(net.apply_fn)
    nngp_mc, ntk_mc = mc_kernels(net.init_fn, apply_fn, x1, x2, jax.random.PRNGKey(0), 16,
                                 apply_kwargs={"mask_constant": MASK})
    k = net.kernel_fn(x1, x2, ("nngp", "ntk"), mask_constant=MASK)
    assert_close(nngp_mc, k.nngp, tol("mc"), "nngp")
    assert_close(ntk_mc, k.ntk, 1.5 * tol("mc"), "ntk")  # one output channel
    unmasked = net.kernel_fn(jnp.where(x1 == MASK, 0, x1), jnp.where(x2 == MASK, 0, x2), "nngp")
    # the masking is seen: the estimate is far from the kernel of the zero-padded inputs
    assert rel_err(nngp_mc, unmasked) > 3 * tol("mc")


def test_masked_layer_norm_and_pooling_of_the_finite_network_ignore_the_padding():
    """apply_fn on a padded sequence equals apply_fn on the sequence cut to its length."""
    rng = np.random.RandomState(2)
    x = rng.randn(1, 6, 3)
    x[0, 4:] = MASK
    net = stax.serial(stax.Dense(4, b_std=0.5), stax.LayerNorm(axis=(1, 2)),
                      stax.GlobalSelfAttention(4, 3, 3, 2, pos_emb_type="SUM"), stax.Relu(),
                      stax.GlobalAvgPool())
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    padded = jax.jit(lambda p, v: stax.unmask_fn(net.apply_fn)(p, v, mask_constant=MASK))(
        params, jnp.asarray(x))
    # the embeddings are per position: the first 4 are those the cut sequence sees
    cut_params = list(params)
    W_q, W_k, W_v, W_o, b, pe = params[2]
    cut_params[2] = (W_q, W_k, W_v, W_o, b, pe[:, :4])
    cut = net.apply_fn(cut_params, jnp.asarray(x[:, :4]))
    np.testing.assert_allclose(np.asarray(padded), np.asarray(cut), rtol=1e-5, atol=1e-6)
    zero = net.apply_fn(params, jnp.asarray(np.where(x == MASK, 0, x)))
    assert rel_err(zero, cut) > 1e-2


def test_apply_fn_returns_masked_arrays():
    net = stax.serial(stax.Conv(3, (3,), strides=(2,)), stax.Relu(), stax.Flatten())
    x = np.random.RandomState(0).randn(2, 7, 2)
    x[1, 4:] = np.nan
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    out = net.apply_fn(params, jnp.asarray(x), mask_constant=float("nan"))
    assert isinstance(out, stax.MaskedArray)
    assert out.masked_value.shape == (2, 9) and out.mask.shape == (2, 9)
    assert out.mask[1].reshape(3, 3)[:, 0].tolist() == [False, False, True]
    assert not np.isnan(np.asarray(out.masked_value)).any()
    plain = net.apply_fn(params, jnp.asarray(np.nan_to_num(x)))
    assert not isinstance(plain, stax.MaskedArray)


# ----------------------------------------------------------------------------------------------
# machinery: batch, jit, repeat, bad input


def test_batch_and_jit_pass_mask_constant_through():
    with x64():
        layer, which = CATALOGUE["conv_pool_dense"](stax)
        x1, x2 = (jnp.asarray(REF[f"x/{which}/{i}"]) for i in (1, 2))
        batched = infwidth.batch(layer.kernel_fn, 2)(x1, x2, "ntk", mask_constant=MASK)
        assert_close(batched, REF["conv_pool_dense/ntk12"], tol("nt", "float64"), "batch")
        jitted = jax.jit(lambda a, b: layer.kernel_fn(a, b, "ntk", mask_constant=MASK))(x1, x2)
        assert_close(jitted, REF["conv_pool_dense/ntk12"], tol("nt", "float64"), "jit")


def test_mask_constant_of_a_wrong_type_names_the_argument():
    x = jnp.ones((2, 3, 1))
    net = stax.serial(stax.Dense(2), stax.GlobalAvgPool())
    for bad in ("pad", [0.0], True, 1j):
        with pytest.raises(TypeError, match="mask_constant"):
            net.kernel_fn(x, None, "nngp", mask_constant=bad)
    _, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    with pytest.raises(TypeError, match="mask_constant"):
        net.apply_fn(params, x, mask_constant="pad")


def test_fully_masked_input_has_zero_kernel_not_nan():
    x = np.random.RandomState(1).randn(2, 4, 2)
    x[1] = MASK
    net = stax.serial(stax.Dense(3, b_std=0.5), stax.Relu(), stax.GlobalAvgPool(),
                      stax.Dense(1))
    k = jax.jit(lambda a: net.kernel_fn(a, None, mask_constant=MASK))(jnp.asarray(x))
    assert np.isfinite(np.asarray(k.nngp)).all() and math.isclose(float(k.nngp[1, 1]), 0.0)
    assert bool(k.mask1[1].all())


def test_diagonal_layouts_agree_under_masks():
    """diagonal_spatial=True (per-position covariances) and diagonal_batch=False (full cov1)
    give the kernel of the default layout on masked inputs."""
    with x64():
        layer, which = CATALOGUE["conv_valid_strided_flatten"](stax)
        x1, x2 = (jnp.asarray(REF[f"x/{which}/{i}"]) for i in (1, 2))
        flat = stax.serial(stax.Dense(3, b_std=0.2), stax.Relu(), stax.Flatten(), stax.Dense(1))
        diag, full_batch, default = jax.jit(lambda a, b: (
            flat.kernel_fn(a, b, "ntk", diagonal_spatial=True, mask_constant=MASK),
            layer.kernel_fn(a, None, "ntk", diagonal_batch=False, mask_constant=MASK),
            flat.kernel_fn(a, b, "ntk", mask_constant=MASK)))(x1, x2)
        assert_close(diag, default, tol("exact", "float64"), "diagonal_spatial")
        assert_close(full_batch, REF["conv_valid_strided_flatten/ntk11"], tol("nt", "float64"),
                      "diagonal_batch")


def test_custom_layer_mask_fn_is_used():
    """A `stax.layer` returning a fourth element, neural-tangents' mask_fn: reversing the
    positions must reverse the mask, or the padding would be counted after it."""

    @stax.layer
    def Reverse():
        def kernel_fn(k, **kwargs):
            flip = lambda c: None if c is None else c[..., ::-1, ::-1]  # noqa: E731
            return k.replace(nngp=flip(k.nngp), ntk=flip(k.ntk), cov1=flip(k.cov1),
                             cov2=flip(k.cov2))

        return (lambda key, s: (s, ()), lambda p, x, **kw: x[:, ::-1], kernel_fn,
                lambda mask, shape: mask[:, ::-1])

    with x64():
        x1, x2 = (jnp.asarray(REF[f"x/seq/{i}"]) for i in (1, 2))
        head = stax.serial(stax.Dense(3, b_std=0.5), stax.Relu(), stax.Dense(2, b_std=0.5))
        plain = stax.serial(head, stax.GlobalAvgPool())
        reversed_ = stax.serial(head, Reverse(), stax.GlobalAvgPool())
        got, expected = jax.jit(lambda a, b: (
            reversed_.kernel_fn(a, b, "ntk", mask_constant=MASK),
            plain.kernel_fn(a, b, "ntk", mask_constant=MASK)))(x1, x2)
        assert_close(got, expected, tol("exact", "float64"), "ntk")


def test_tiled_masked_call_is_the_untiled_one():
    with x64():
        layer, which = CATALOGUE["conv_pool_dense"](stax)
        x1, x2 = (jnp.asarray(REF[f"x/{which}/{i}"]) for i in (1, 2))
        old = stax.tile_memory()
        try:
            stax.tile_memory(64)  # bytes: tiles of 2 x 2 inputs
            k12 = layer.kernel_fn(x1, x2, mask_constant=MASK)
            k11 = layer.kernel_fn(x1, None, mask_constant=MASK)
        finally:
            stax.tile_memory(old)
        for tag, k in (("12", k12), ("11", k11)):
            assert_close(k.ntk, REF[f"conv_pool_dense/ntk{tag}"], tol("nt", "float64"), tag)
        assert k12.mask1.shape == (3, 1) and k12.mask2.shape == (2, 1) and k11.mask2 is None
