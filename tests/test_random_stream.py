"""infwidth's finite networks draw neural-tangents' random numbers from the same key: init_fn
(tests/test_nt_parity_dropin.py), Dropout's apply_fn, the keys the empirical kernels give x1 and
x2, and the Monte Carlo key chain. Reference values: tests/reference/stream.npz (make_stream.py,
run under neural-tangents 0.6.5 in float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, load_reference

import infwidth
from infwidth import stax

REF = load_reference("stream")
pytestmark = pytest.mark.float32_stream  # the references are float32 draws
TOL = 1e-5  # relative Frobenius error: float32 rounding of a few hundred operations


def _network():
    return stax.serial(stax.Dense(64, b_std=0.1), stax.Relu(), stax.Dropout(0.8, mode="train"),
                       stax.Dense(3))


def _close(actual, expected, what):
    assert_close(np.asarray(actual), expected, TOL, what)


def test_default_jax_stream_differs_so_the_match_is_not_an_accident():
    """Current JAX's default key splitting gives other numbers than neural-tangents' JAX did;
    the layers must select the classic stream themselves."""
    init_fn = _network().init_fn
    _, params = init_fn(jax.random.PRNGKey(1), REF["x1"].shape)
    w_default = jax.random.normal(jax.random.split(jax.random.PRNGKey(1))[0], (4, 64))
    assert not np.allclose(np.asarray(params[0][0]), np.asarray(w_default))
    # the layers' draws do not depend on the caller's setting
    with jax.threefry_partitionable(True):
        _, again = init_fn(jax.random.PRNGKey(1), REF["x1"].shape)
    np.testing.assert_array_equal(np.asarray(again[0][0]), np.asarray(params[0][0]))


def test_dropout_apply_fn_draws_neural_tangents_mask():
    net = _network()
    x1 = jnp.asarray(REF["x1"])
    _, params = net.init_fn(jax.random.PRNGKey(1), x1.shape)
    y = net.apply_fn(params, x1, rng=jax.random.PRNGKey(2))
    _close(y, REF["dropout/apply"], "apply_fn")
    # under jit too
    y_jit = jax.jit(net.apply_fn)(params, x1, rng=jax.random.PRNGKey(2))
    _close(y_jit, REF["dropout/apply"], "jit(apply_fn)")


@pytest.mark.parametrize("tag", ["12", "copy", "none"])
def test_empirical_ntk_keys_of_x1_and_x2(tag):
    """x1 keeps the key; x2 gets the same key exactly when it equals x1 (a copy gives the x2=None
    kernel), fold_in(key, 1) otherwise."""
    net = _network()
    x1 = jnp.asarray(REF["x1"])
    x2 = {"12": jnp.asarray(REF["x2"]), "copy": x1 + 0, "none": None}[tag]
    _, params = net.init_fn(jax.random.PRNGKey(1), x1.shape)
    k = infwidth.empirical_ntk_fn(net.apply_fn, trace_axes=())(x1, x2, params,
                                                              rng=jax.random.PRNGKey(2))
    _close(k, REF[f"empirical/{tag}"], f"empirical ntk ({tag})")


def test_copy_gets_the_same_dropout_mask_as_none():
    net = _network()
    x1 = jnp.asarray(REF["x1"])
    _, params = net.init_fn(jax.random.PRNGKey(1), x1.shape)
    f = infwidth.empirical_nngp_fn(net.apply_fn)
    k_none = f(x1, None, params, rng=jax.random.PRNGKey(4))
    k_copy = f(x1, x1 + 0, params, rng=jax.random.PRNGKey(4))
    np.testing.assert_array_equal(np.asarray(k_copy), np.asarray(k_none))


@pytest.mark.parametrize("tag", ["12", "none"])
def test_monte_carlo_key_chain(tag):
    net = _network()
    x1 = jnp.asarray(REF["x1"])
    x2 = jnp.asarray(REF["x2"]) if tag == "12" else None
    mc = infwidth.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, jax.random.PRNGKey(5), [2, 6])
    for n, k in zip((2, 6), mc(x1, x2, ("nngp", "ntk"))):
        _close(k.nngp, REF[f"mc/{tag}/{n}/nngp"], f"nngp, {n} samples")
        _close(k.ntk, REF[f"mc/{tag}/{n}/ntk"], f"ntk, {n} samples")


def test_monte_carlo_of_a_function_without_rng():
    """apply_fns that take no rng keyword (plain functions) are called without one."""
    net = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))

    def apply_fn(params, x):
        return net.apply_fn(params, x)

    x1 = jnp.asarray(REF["x1"])
    mc = infwidth.monte_carlo_kernel_fn(net.init_fn, apply_fn, jax.random.PRNGKey(5), 3)
    ref = infwidth.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, jax.random.PRNGKey(5), 3)
    np.testing.assert_allclose(np.asarray(mc(x1, None, "nngp")),
                               np.asarray(ref(x1, None, "nngp")), rtol=1e-6)
