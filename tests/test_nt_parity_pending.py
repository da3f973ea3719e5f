"""neural-tangents behaviours: those still waiting on the core kernel machinery are strict
expected failures that name what they need (they fail as XPASS once it is delivered).
Reference values: tests/reference/dropin.npz (make_dropin.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, load_reference, tol, x64

import infwidth
from infwidth import stax

REF = load_reference("dropin")


def pending(reason):
    return pytest.mark.xfail(reason=reason, strict=True)


def test_masked_inputs_through_conv_pool_dense():
    with x64():
        net = stax.serial(stax.Conv(3, (2,), padding="SAME"), stax.Relu(), stax.GlobalAvgPool(),
                          stax.Dense(1))
        x1, x2 = jnp.asarray(REF["mask/x1"]), jnp.asarray(REF["mask/x2"])
        k = net.kernel_fn(x1, x2, ("nngp", "ntk"), mask_constant=-1e9)
        assert_close(k.nngp, REF["mask/nngp12"], tol("nt", "float64"), "nngp")
        assert_close(k.ntk, REF["mask/ntk12"], tol("nt", "float64"), "ntk")


def test_channel_axis_one():
    with x64():
        net = stax.serial(stax.Dense(3, b_std=0.1, channel_axis=1), stax.Relu(),
                          stax.Dense(1, channel_axis=1))
        x1, x2 = jnp.asarray(REF["channel_axis/x1"]), jnp.asarray(REF["channel_axis/x2"])
        k = net.kernel_fn(x1, x2, ("nngp", "ntk"), channel_axis=1)
        assert_close(k.nngp, REF["channel_axis/nngp12"], tol("nt", "float64"), "nngp")
        assert_close(k.ntk, REF["channel_axis/ntk12"], tol("nt", "float64"), "ntk")


def test_channel_axis_one_finite_network_is_the_moved_default_one():
    """Dense(channel_axis=1) on (N, C, T) inputs is the default Dense on (N, T, C) inputs with
    the same weights; its kernel needs no kernel_fn keyword (the first layer declares it)."""
    x = jnp.asarray(np.random.RandomState(1).randn(3, 4, 5))  # (N, C, T)
    moved = stax.serial(stax.Dense(6, b_std=0.1), stax.Erf(), stax.Dense(2))
    net = stax.serial(stax.Dense(6, b_std=0.1, channel_axis=1), stax.Erf(),
                      stax.Dense(2, channel_axis=1))
    shape, params = net.init_fn(jax.random.PRNGKey(0), x.shape)
    assert shape == (3, 2, 5)
    y = net.apply_fn(params, x)
    params_moved = [(W, None if b is None else jnp.moveaxis(b, 1, -1)) if p else p
                    for p in params for W, b in ([p] if p else [(None, None)])]
    y_moved = moved.apply_fn(params_moved, jnp.moveaxis(x, 1, -1))
    np.testing.assert_allclose(np.asarray(y), np.moveaxis(np.asarray(y_moved), -1, 1), rtol=1e-5)
    k = net.kernel_fn(x, None, ("nngp", "ntk"))
    k_moved = moved.kernel_fn(jnp.moveaxis(x, 1, -1), None, ("nngp", "ntk"))
    np.testing.assert_allclose(k.ntk, k_moved.ntk, rtol=1e-6)
    full = net.kernel_fn(x, None)
    assert (full.batch_axis, full.channel_axis, full.shape1) == (0, 1, (3, 2, 5))


def test_channel_axis_mismatch_and_unsupported_layers_raise():
    x = jnp.ones((3, 4, 5))
    with pytest.raises(ValueError, match="channel_axis=1"):
        stax.serial(stax.Dense(6, channel_axis=1), stax.Dense(2)).kernel_fn(x, None, "nngp")
    with pytest.raises(ValueError, match="Conv.*channels last"):
        stax.serial(stax.Dense(6, channel_axis=1), stax.Conv(2, (2,))).kernel_fn(x, None, "nngp")
    with pytest.raises(ValueError, match="must differ"):
        stax.Dense(2).kernel_fn(x, None, "nngp", batch_axis=0, channel_axis=0)


def test_kernel_fields_users_touch():
    k = stax.Dense(2).kernel_fn(jnp.ones((2, 3)))
    assert k.is_reversed is False and k.batch_axis == 0 and k.channel_axis == 1
    assert k.mask1 is None and k.mask2 is None and k.is_input is False


def test_repeat_zero_is_the_identity():
    x = jnp.asarray(REF["x/flat/1"])
    net = stax.serial(stax.Dense(3), stax.repeat(stax.serial(stax.Relu(), stax.Dense(3)), 0))
    assert_close(net.kernel_fn(x, None, "ntk"), stax.Dense(3).kernel_fn(x, None, "ntk"),
                 tol("exact"), "ntk")


def test_batch_results_block_until_ready():
    kernel_fn = infwidth.batch(stax.serial(stax.Dense(4), stax.Relu()).kernel_fn, 2)
    k = kernel_fn(jnp.ones((4, 3)), None, "nngp")
    assert k.block_until_ready() is not None


def test_batch_on_a_kernel():
    x = jnp.asarray(np.random.RandomState(0).randn(4, 3))
    first = stax.Dense(4)
    rest = stax.serial(stax.Relu(), stax.Dense(1))
    k0 = first.kernel_fn(x, None)
    out = infwidth.batch(rest.kernel_fn, 2)(k0, None, "nngp")
    assert_close(out, stax.serial(first, rest).kernel_fn(x, None, "nngp"), tol("exact"), "nngp")


def test_batch_under_jit():
    x = jnp.asarray(np.random.RandomState(0).randn(4, 3))
    net = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(1))
    batched = jax.jit(infwidth.batch(net.kernel_fn, 2), static_argnums=(2,))
    assert_close(batched(x, None, "nngp"), net.kernel_fn(x, None, "nngp"), tol("exact"), "nngp")


def _wide(width):
    return [stax.Dense(width, W_std=1.5, b_std=0.1), stax.Relu()]


@pytest.mark.float32_stream
def test_monte_carlo_several_outputs():
    x1 = jnp.asarray(REF["x/flat/1"], jnp.float32)
    # wide readouts: the NNGP estimate averages over output channels (one channel alone would
    # have a relative Monte Carlo error of about sqrt(2 / 16) = 35% at 16 samples)
    net = stax.serial(*_wide(512), stax.FanOut(2),
                      stax.parallel(stax.Dense(256), stax.Dense(128)))
    mc = infwidth.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, jax.random.PRNGKey(0), 16)
    estimates = mc(x1, None, "nngp")
    exact = net.kernel_fn(x1, None, "nngp")
    assert len(estimates) == 2
    for e, k in zip(estimates, exact):
        assert_close(e, k, tol("mc"), "nngp")


@pytest.mark.float32_stream
def test_monte_carlo_several_inputs():
    x = jnp.asarray(REF["x/flat/1"], jnp.float32)
    xs = [x, x[:, :2]]
    net = stax.serial(stax.parallel(stax.Dense(512), stax.Dense(512)), stax.FanInSum(),
                      stax.Relu(), stax.Dense(256))
    mc = infwidth.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, jax.random.PRNGKey(0), 16)
    assert_close(mc(xs, None, "nngp"), net.kernel_fn(xs, None, "nngp"), tol("mc"), "nngp")


def test_vmap_axes_one_int_for_several_inputs():
    x = jnp.asarray(REF["x/flat/1"])
    xs = [x, x[:, :2]]
    net = stax.serial(stax.parallel(stax.Dense(8), stax.Dense(8)), stax.FanInSum(),
                      stax.Relu(), stax.Dense(1))
    _, params = net.init_fn(jax.random.PRNGKey(0), [x.shape, (x.shape[0], 2)])
    per_input = infwidth.empirical_ntk_fn(net.apply_fn, vmap_axes=([0, 0], 0, {}))
    shorthand = infwidth.empirical_ntk_fn(net.apply_fn, vmap_axes=(0, 0, {}))
    assert_close(shorthand(xs, None, params), per_input(xs, None, params), tol("exact"), "ntk")
