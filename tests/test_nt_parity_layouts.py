"""Layers on inputs in any layout (neural-tangents' ``dimension_numbers``, ``batch_axis`` and
``channel_axis``): kernels against neural-tangents 0.6.5 in float64
(tests/reference/make_layouts.py), and the finite networks against convolutions written in
plain ``jax.lax`` with the same dimension numbers, Monte Carlo over draws."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from catalogue_layouts import (  # noqa: E402
    CATALOGUE,
    MASKED,
    _conv_pool_flatten,
    inputs,
    kernel_kwargs,
    masked_inputs,
)

REF = load_reference("layouts")


def _assert_matches_reference(k, name, tag):
    assert_close(k.nngp, REF[f"{name}/nngp{tag}"], tol("nt", "float64"), f"nngp{tag}")
    assert_close(k.ntk, REF[f"{name}/ntk{tag}"], tol("nt", "float64"), f"ntk{tag}")


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_kernels_match_neural_tangents(name):
    spec, filter_spec, build = CATALOGUE[name]
    x1, x2 = (jnp.asarray(a) for a in inputs(spec))
    with x64():
        kernel_fn = build(stax, spec, filter_spec).kernel_fn
        kw = kernel_kwargs(name)
        for tag, b in (("12", x2), ("11", None)):
            if tag == "11" and "pattern" in kw:
                kw = {"pattern": (kw["pattern"][0], kw["pattern"][0])}
            _assert_matches_reference(kernel_fn(x1, b, ("nngp", "ntk"), **kw), name, tag)


@pytest.mark.parametrize("name", sorted(MASKED))
def test_masked_inputs_in_other_layouts_match_neural_tangents(name):
    """Masks move with the activations: padded inputs in NCHW, masked."""
    spec, filter_spec, build = MASKED[name]
    x1, x2 = (jnp.asarray(a) for a in masked_inputs(spec))
    with x64():
        kernel_fn = build(stax, spec, filter_spec).kernel_fn
        for tag, b in (("12", x2), ("11", None)):
            k = kernel_fn(x1, b, ("nngp", "ntk"), mask_constant=-1e9)
            _assert_matches_reference(k, name, tag)
            unmasked = kernel_fn(jnp.where(x1 == -1e9, 0.0, x1),
                                 None if b is None else jnp.where(b == -1e9, 0.0, b), "nngp")
            assert float(jnp.max(jnp.abs(unmasked - k.nngp))) > 1e-3  # the mask matters


def test_masks_with_the_batch_axis_last_are_the_moved_masks():
    """neural-tangents fails on masked inputs whose batch axis is not first; infwidth gives
    the kernel of the same inputs in NCHW (checked against neural-tangents above)."""
    with x64():
        ref_spec, spec = "NCHW", "HWCN"
        x1, x2 = masked_inputs(spec)
        perm = [spec.index(c) for c in ref_spec]
        k = _conv_pool_flatten(stax, spec, "IWHO").kernel_fn(
            jnp.asarray(x1), jnp.asarray(x2), "ntk", mask_constant=-1e9)
        k_ref = _conv_pool_flatten(stax, ref_spec, "IWHO").kernel_fn(
            jnp.asarray(np.transpose(x1, perm)), jnp.asarray(np.transpose(x2, perm)), "ntk",
            mask_constant=-1e9)
        # the output of the batch-last network is (features, N): the same kernel
        assert_close(k, k_ref, 1e-12, "ntk")


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_finite_network_shapes_follow_the_layout(name):
    spec, filter_spec, build = CATALOGUE[name]
    x1, _ = inputs(spec)
    net = build(stax, spec, filter_spec)
    out_shape, params = net.init_fn(jax.random.PRNGKey(0), x1.shape)
    kw = kernel_kwargs(name)
    kw = {"pattern": jnp.asarray(kw["pattern"][0], jnp.float32)} if kw else {}
    y = net.apply_fn(params, jnp.asarray(x1, jnp.float32), **kw)
    assert y.shape == out_shape
    b, c = spec.index("N"), spec.index("C")
    assert y.shape[int(b > c)] == x1.shape[b]  # the batch axis keeps its order with channels


@pytest.mark.float32_stream
def test_nchw_convolution_against_plain_lax_monte_carlo():
    """Conv(('NCHW', 'OIHW', 'NCHW')) -> Relu -> GlobalAvgPool(channel_axis=1): the kernel
    against the covariance of a plain jax.lax network (weights N(0, W_std^2 / fan_in), drawn
    in OIHW) over 400 draws, within 5 Monte Carlo standard errors."""
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(3, 2, 5, 4), jnp.float32)  # N, C, H, W
    dn = ("NCHW", "OIHW", "NCHW")
    W_std, b_std, width = 1.4, 0.3, 64
    net = stax.serial(stax.Conv(width, (3, 2), padding="SAME", W_std=W_std, b_std=b_std,
                                dimension_numbers=dn), stax.Relu(),
                      stax.GlobalAvgPool(channel_axis=1))
    k = np.asarray(net.kernel_fn(x, None, "nngp"))

    @jax.jit
    def sample(key):
        kw, kb = jax.random.split(key)
        w = jax.random.normal(kw, (width, 2, 3, 2)) * W_std / np.sqrt(2 * 3 * 2)
        bias = jax.random.normal(kb, (1, width, 1, 1)) * b_std
        h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) + bias
        f = jnp.mean(jax.nn.relu(h), axis=(2, 3))  # (N, width)
        return f @ f.T / width

    draws = np.asarray(jax.lax.map(sample, jax.random.split(jax.random.PRNGKey(1), 400)))
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - k) < 5 * se + 1e-6), np.abs(mean - k) / se
    assert se.max() < 0.02 * np.abs(k).max()  # resolves a few percent


def test_bad_dimension_numbers_and_axes_raise():
    with pytest.raises(ValueError, match="dimension_numbers"):
        stax.Conv(2, (2, 2), dimension_numbers=("NCHW", "OIHW"))
    with pytest.raises(ValueError, match="each appear once"):
        stax.Conv(2, (2, 2), dimension_numbers=("NCHW", "OIHX", "NCHW"))
    with pytest.raises(ValueError, match="must differ"):
        stax.AvgPool((2,), batch_axis=1, channel_axis=1)
    with pytest.raises(TypeError, match="batch_axis"):
        stax.GlobalAvgPool(batch_axis="0")
    with pytest.raises(ValueError, match="batch_axis_out"):
        stax.Flatten(batch_axis_out=2)
    x = jnp.ones((2, 3, 4, 5))
    net = stax.serial(stax.Conv(2, (2, 2), dimension_numbers=("NCHW", "OIHW", "NCHW")),
                      stax.AvgPool((2, 2)))  # pooling told the default layout
    with pytest.raises(ValueError, match="channel"):
        net.kernel_fn(x, None, "nngp")
