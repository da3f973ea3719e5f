"""Conventions of neural-tangents that its users' code (and its own test suite) relies on:
layer functions named after their layer, ``x2`` given as a list of ``None`` for multi-input
networks, and masks through nested ``parallel`` branches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infwidth
from infwidth import stax


@pytest.mark.parametrize("layer,name", [
    (stax.Relu(), "Relu"), (stax.Identity(), "Identity"), (stax.Conv(2, (2,)), "Conv"),
    (stax.serial(stax.Dense(2)), "serial"), (stax.GlobalAvgPool(), "GlobalAvgPool"),
    (stax.Flatten(), "Flatten"), (stax.LeakyRelu(0.1), "LeakyRelu")])
def test_layer_functions_are_named_after_the_layer(layer, name):
    assert [f.__name__ for f in layer] == [name] * 3


def _two_input_net():
    return stax.serial(stax.parallel(stax.Dense(64), stax.Dense(64)), stax.FanInSum(),
                       stax.Relu(), stax.Dense(1))


def test_x2_of_nones_is_x2_none():
    rng = np.random.RandomState(0)
    x1 = (jnp.asarray(rng.randn(3, 2)), jnp.asarray(rng.randn(3, 4)))
    net = _two_input_net()
    k_none = net.kernel_fn(x1, None, "ntk")
    np.testing.assert_array_equal(net.kernel_fn(x1, (None, None), "ntk"), k_none)
    np.testing.assert_allclose(infwidth.batch(net.kernel_fn, 3)(x1, [None, None], "ntk"),
                               k_none, rtol=1e-6)  # batch compiles: rounding may differ
    _, params = net.init_fn(jax.random.PRNGKey(0), [a.shape for a in x1])
    emp = infwidth.empirical_ntk_fn(net.apply_fn)
    np.testing.assert_array_equal(emp(x1, (None, None), params), emp(x1, None, params))
    mc = infwidth.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, jax.random.PRNGKey(1), 2)
    np.testing.assert_array_equal(mc(x1, (None, None), "nngp"), mc(x1, None, "nngp"))


def test_masks_reach_every_branch_of_nested_parallels():
    """apply_fn(..., mask_constant=c) of parallel(parallel(A, B), C) returns each branch's
    outputs with the mask that branch alone gives (the finite network and its kernel agree)."""
    rng = np.random.RandomState(1)
    xa = rng.randn(4, 3)
    xa[1] = -1.0  # a whole input absent
    xb = rng.randn(4, 5, 2)
    xb[0, 3:] = -1.0  # a padded sequence
    xc = rng.randn(4, 3, 2)
    xc[2, :, :] = -1.0
    branches = [stax.Dense(8), stax.serial(stax.Conv(8, (2,)), stax.GlobalAvgPool()),
                stax.Conv(8, (2,))]
    net = stax.parallel(stax.parallel(branches[0], branches[1]), branches[2])
    x = ((jnp.asarray(xa), jnp.asarray(xb)), jnp.asarray(xc))
    _, params = net.init_fn(jax.random.PRNGKey(0), jax.tree_util.tree_map(jnp.shape, x))
    out = net.apply_fn(params, x, mask_constant=-1.0)
    flat_params = [params[0][0], params[0][1], params[1]]
    flat_x, flat_out = [x[0][0], x[0][1], x[1]], [out[0][0], out[0][1], out[1]]
    for i, (layer, p, xi, oi) in enumerate(zip(branches, flat_params, flat_x, flat_out)):
        alone = layer.apply_fn(p, xi, mask_constant=-1.0)
        assert isinstance(oi, stax.MaskedArray)
        np.testing.assert_array_equal(oi.mask, alone.mask)
        np.testing.assert_allclose(oi.masked_value, alone.masked_value, rtol=1e-6)
        # absent entries survive (pooling a partly padded sequence leaves it present)
        assert bool(jnp.any(oi.mask)) == (i != 1)
    k = net.kernel_fn(x, None, "nngp", mask_constant=-1.0)
    for layer, xi, ki in zip(branches, flat_x, [k[0][0], k[0][1], k[1]]):
        np.testing.assert_allclose(ki, layer.kernel_fn(xi, None, "nngp", mask_constant=-1.0),
                                   rtol=1e-6)


def test_vmap_axes_pytrees_as_neural_tangents_reads_them():
    """vmap_axes that is not a triple is the axes of both inputs and outputs; tuples match the
    lists stax returns; axes counted from the end. Each gives the vmap_axes=None kernel (the
    axes only tell the implementation how to batch) for every implementation."""
    rng = np.random.RandomState(2)
    net = stax.serial(stax.parallel(stax.Dense(6, b_std=0.1), stax.Dense(6)),
                      stax.parallel(stax.Relu(), stax.Erf()),
                      stax.parallel(stax.Dense(3), stax.Dense(2)))
    x1 = [jnp.asarray(rng.randn(3, 4)), jnp.asarray(rng.randn(3, 2))]
    x2 = [jnp.asarray(rng.randn(2, 4)), jnp.asarray(rng.randn(2, 2))]
    _, params = net.init_fn(jax.random.PRNGKey(0), [a.shape for a in x1])
    for impl in infwidth.NtkImplementation:
        ref = infwidth.empirical_ntk_fn(net.apply_fn, implementation=impl)(x1, x2, params)
        for vmap_axes in [(0, 0), [0, 0], ((0, 0), (-2, -2), {}), 0]:
            got = infwidth.empirical_ntk_fn(net.apply_fn, implementation=impl,
                                            vmap_axes=vmap_axes)(x1, x2, params)
            for g, r in zip(got, ref):
                np.testing.assert_allclose(g, r, rtol=2e-5, atol=1e-6,
                                           err_msg=f"{impl} vmap_axes={vmap_axes}")
        k_none = infwidth.empirical_ntk_fn(net.apply_fn, implementation=impl)(x1, None, params)
        k_dict = infwidth.empirical_ntk_fn(net.apply_fn, implementation=impl)(
            x1, [None, None], params)
        for a, b in zip(k_none, k_dict):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="vmap_axes"):
        infwidth.empirical_ntk_fn(net.apply_fn, vmap_axes=(0, "a"))
