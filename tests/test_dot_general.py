"""DotGeneral with general constant factors: contracted, batch and free axes of the constant,
the batch and channel axes anywhere (neural-tangents' `stax.DotGeneral` conventions).

Checks are independent of the kernel code:
* on raw inputs a parameter-free linear layer's kernel is exactly the channel mean of the
  outer product of its finite outputs (float64, computed here with numpy from ``apply_fn``);
* in a network (Conv, DotGeneral, Dense on the moved axes, ReLU, pooling) the analytic kernel
  agrees with the Monte Carlo kernel of the finite network.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infwidth as iw
from infwidth import stax


def _empirical(f1, f2, out_b, out_c, diagonal_spatial, diagonal_batch_cov, batch_contracted):
    """Channel-mean outer product of outputs, laid out as infwidth's kernels:
    (N1, N2, S1, S1', S2, S2', ...) or with single positions when diagonal."""
    f1, f2 = np.asarray(f1), np.asarray(f2)
    n_out = f1.ndim
    if batch_contracted:
        f1, f2 = f1[None], f2[None]   # a unit batch axis, dropped at the end
        out_c = out_c + 1
        out_b = 0
        n_out += 1
    spatial = [a for a in range(n_out) if a not in (out_b, out_c)]
    g1 = np.transpose(f1, [out_b, *spatial, out_c])
    g2 = np.transpose(f2, [out_b, *spatial, out_c])
    s = len(spatial)
    letters = "abcdefghijklm"
    left = "x" + letters[:s] + "z"
    right = "y" + letters[s:2 * s] + "z"
    if diagonal_spatial:
        right = "y" + letters[:s] + "z"
        out = "xy" + letters[:s]
    else:
        out = "xy" + "".join(a + b for a, b in zip(letters[:s], letters[s:2 * s]))
    if diagonal_batch_cov:
        right = "x" + right[1:]
        out = out.replace("y", "")
    k = np.einsum(f"{left},{right}->{out}", g1, g2) / g1.shape[-1]
    if batch_contracted:
        k = k[0] if diagonal_batch_cov else k[0, 0]
    return k


# (input shape, batch_axis, channel_axis, constant shape, dimension_numbers, is_lhs)
CASES = [
    # a spatial axis contracted, a free axis of the constant, channels first
    ((3, 5, 4, 2), 0, 1, (2, 6), (((3,), (0,)), ((), ())), False),
    # the batch axis paired with a batch dimension of the constant (one slice per input)
    ((4, 2, 3), 0, 2, (4, 2, 5), (((1,), (1,)), ((0,), (0,))), False),
    # a spatial batch dimension and a contracted spatial axis, the constant on the left
    ((4, 3, 2, 5), 0, 3, (2, 3, 7), (((0,), (2,)), ((1,), (1,))), True),
    # the batch axis last, channels in the middle, an outer product (nothing contracted)
    ((3, 4, 2), 2, 1, (2, 3), (((), ()), ((), ())), False),
    # neural-tangents' mask test layout: the output's batch axis moves to position 1
    ((4, 2, 3, 1), 0, 3, (4, 2, 3), (((1,), (1,)), ((2,), (2,))), False),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("diagonal_spatial", [False, True])
def test_raw_inputs_kernel_is_the_outer_product_of_outputs(case, diagonal_spatial):
    jax.config.update("jax_enable_x64", True)
    try:
        shape, b, c, other_shape, dn, is_lhs = case
        rng = np.random.default_rng(0)
        other = jnp.asarray(rng.normal(size=other_shape))
        (lc, rc), (lb, rb) = dn
        in_c = rc if is_lhs else lc
        if diagonal_spatial and any(a != b for a in in_c):
            pytest.skip("contractions over positions need diagonal_spatial=False (tested below)")
        kw = {"lhs": other} if is_lhs else {"rhs": other}
        layer = stax.DotGeneral(dimension_numbers=dn, batch_axis=b, channel_axis=c, **kw)
        x1 = jnp.asarray(rng.normal(size=shape))
        shape2 = list(shape)
        in_b = rb if is_lhs else lb
        if b not in in_b:
            shape2[b] += 1
        x2 = jnp.asarray(rng.normal(size=shape2))
        k = layer.kernel_fn(x1, x2, diagonal_spatial=diagonal_spatial)
        f1, f2 = layer.apply_fn((), x1), layer.apply_fn((), x2)
        out_b, out_c = k.batch_axis % f1.ndim, k.channel_axis % f1.ndim
        assert k.shape1 == f1.shape and k.shape2 == f2.shape
        assert f1.shape[out_c] == shape[c]  # the channel axis is tracked
        np.testing.assert_allclose(
            k.nngp, _empirical(f1, f2, out_b, out_c, diagonal_spatial, False, False),
            rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(k.ntk, 0.0)  # no parameters before or in the layer
        np.testing.assert_allclose(
            k.cov1, _empirical(f1, f1, out_b, out_c, diagonal_spatial, True, False),
            rtol=1e-10, atol=1e-14)
        # x2 = a copy of x1 gives exactly what x2 = None gives
        same = layer.kernel_fn(x1, None, diagonal_spatial=diagonal_spatial)
        copy = layer.kernel_fn(x1, x1 + 0, diagonal_spatial=diagonal_spatial)
        np.testing.assert_array_equal(same.nngp, copy.nngp)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_contraction_over_the_batch_axis_mixes_inputs():
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(1)
        x1, x2 = jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=(3, 4)))
        w = jnp.asarray(rng.normal(size=(3, 2)))
        layer = stax.DotGeneral(rhs=w, dimension_numbers=(((0,), (0,)), ((), ())))
        k = layer.kernel_fn(x1, x2, diagonal_batch=False)
        f1, f2 = np.asarray(layer.apply_fn((), x1)), np.asarray(layer.apply_fn((), x2))
        assert f1.shape == (4, 2)   # channels, then the constant's free axis
        np.testing.assert_allclose(k.nngp, f1.T @ f2 / 4, rtol=1e-12)
        np.testing.assert_allclose(k.cov1, f1.T @ f1 / 4, rtol=1e-12)
        with pytest.raises(ValueError, match="sum over the batch axis 0.*diagonal_batch=False"):
            layer.kernel_fn(x1, x2)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("is_rhs", [True, False])
def test_network_around_moved_axes_matches_monte_carlo(is_rhs):
    """Conv, a DotGeneral whose output has its batch axis moved (a batch dimension on a
    spatial axis and a free axis of the constant), Dense and pooling on the new axes."""
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(3), 3)
    x1 = jnp.cos(jax.random.normal(key1, (3, 4, 5, 1)))
    x2 = jnp.cos(jax.random.normal(key2, (2, 4, 5, 1)))
    # input axes: (N, H, W, C); contract H (1) with the constant's axis 1 (size 4) and batch W
    # (2) with its axis 0 (size 5); the constant's axis 2 (size 2) is free
    other = jax.random.normal(key3, (5, 4, 2))
    dn_rhs = (((1,), (1,)), ((2,), (0,)))
    dn = dn_rhs if is_rhs else ((dn_rhs[0][1], dn_rhs[0][0]), (dn_rhs[1][1], dn_rhs[1][0]))
    kw = {"rhs": other} if is_rhs else {"lhs": other}
    # outputs: rhs (W, N, C, 2) / lhs (W, 2, N, C)
    out_b, out_c = (1, 2) if is_rhs else (2, 3)
    width = 256
    net = stax.serial(
        stax.Conv(width, (3, 3), padding="SAME"),
        stax.DotGeneral(dimension_numbers=dn, **kw),
        stax.Dense(width, batch_axis=out_b, channel_axis=out_c), stax.Relu(),
        stax.GlobalAvgPool(batch_axis=out_b, channel_axis=out_c),
        stax.Dense(1, 0.9, 0.1))
    exact = net.kernel_fn(x1, x2, "ntk")
    mc = iw.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, key1, 64)(x1, x2, "ntk")
    rel = float(jnp.linalg.norm(mc - exact) / jnp.linalg.norm(exact))
    assert exact.shape == (3, 2)
    assert rel < 0.05, rel
    # the layer changes the kernel: without it the NTK differs by far more than that error
    plain = stax.serial(stax.Conv(width, (3, 3), padding="SAME"), stax.Dense(width),
                        stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, 0.9, 0.1))
    other_k = plain.kernel_fn(x1, x2, "ntk")
    assert float(jnp.linalg.norm(other_k - exact) / jnp.linalg.norm(exact)) > 4 * rel


@pytest.mark.parametrize("build, call, match", [
    (lambda: stax.DotGeneral(rhs=jnp.ones(3), dimension_numbers=(((1,), (0,)), ((), ()))),
     lambda l: l.kernel_fn(jnp.ones((2, 3))), r"channel axis 1 .*must stay free"),
    (lambda: stax.DotGeneral(rhs=jnp.ones(4), dimension_numbers=(((1,), (0,)), ((), ()))),
     lambda l: l.kernel_fn(jnp.ones((2, 4, 3)), diagonal_spatial=True),
     r"sum over spatial positions.*diagonal_spatial=False"),
    (lambda: stax.DotGeneral(rhs=jnp.ones((2, 3)), dimension_numbers=(((), ()), ((0,), (0,)))),
     lambda l: l.kernel_fn(jnp.ones((2, 4)), jnp.ones((3, 4))),
     r"x1 and x2 need the same batch size; got 2 and 3"),
    (lambda: stax.DotGeneral(rhs=jnp.ones(5), dimension_numbers=(((1,), (0,)), ((), ()))),
     lambda l: l.kernel_fn(jnp.ones((2, 4, 3))), r"inputs of shape \(2, 4, 3\) do not match"),
    (lambda: stax.DotGeneral(rhs=jnp.ones(2), dimension_numbers=(((7,), (0,)), ((), ()))),
     lambda l: l.kernel_fn(jnp.ones((2, 2, 3))),
     r"DotGeneral\(dimension_numbers=7\): must be an int axis of the 3-axis inputs"),
    (lambda: stax.DotGeneral(rhs=jnp.ones(1, bool)), None,
     r"DotGeneral\(rhs=...\): expected a real array or number, got dtype bool"),
])
def test_bad_factors_raise_naming_the_fix(build, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        layer = build()
        call(layer)


def test_mask_of_a_batch_dimension_product():
    """neural-tangents' own masking case: inputs fully masked give zero kernels, present
    ones the sum over the contracted axis (2 ones) squared."""
    x = jnp.ones((4, 2, 3, 1))
    layer = stax.DotGeneral(rhs=jnp.ones((4, 2, 3)),
                            dimension_numbers=(((1,), (1,)), ((2,), (2,))))
    masked = jnp.concatenate([jnp.full((2, 2, 3, 1), 10.0), x[2:]])
    k = layer.kernel_fn(masked, x, "nngp", mask_constant=10.0)
    np.testing.assert_array_equal(k[:2], 0.0)
    np.testing.assert_allclose(k[2:], 4.0)


def test_supported_layouts_are_exhaustive_for_two_axes():
    """Every placement of the batch and channel axes of 2-axis inputs with every batch /
    contracting use of the batch axis builds and evaluates (or raises the named error)."""
    x = jnp.arange(6.0).reshape(2, 3) / 6
    for b, dims in itertools.product([0, 1], [((), ()), ((0,), ()), ((), (0,))]):
        c = 1 - b
        xs = x if b == 0 else x.T
        cs, bs = ((b,) if dims[0] else ()), ((b,) if dims[1] else ())
        other = jnp.ones((2, 3)) if (cs or bs) else jnp.ones((1, 3))
        dn = ((cs, (0,) if cs else ()), (bs, (0,) if bs else ()))
        layer = stax.DotGeneral(rhs=other, dimension_numbers=dn, batch_axis=b, channel_axis=c)
        k = layer.kernel_fn(xs, None, "nngp", diagonal_batch=False)
        f = np.asarray(layer.apply_fn((), xs))
        assert np.all(np.isfinite(np.asarray(k))), (b, dims)
        assert k.size == (f.size // xs.shape[c]) ** 2, (b, dims, k.shape, f.shape)
