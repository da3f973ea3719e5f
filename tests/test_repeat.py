"""`repeat(layer, n)` equals `serial(*[layer] * n)` in float64 (kernels, parameters, outputs)
and explains when a layer cannot be looped. Compile times are in benchmarks/repeat_compile.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, tol, x64

from infwidth import stax


def _block():
    return stax.serial(stax.FanOut(2),
                       stax.parallel(stax.Identity(),
                                     stax.serial(stax.Relu(), stax.Dense(16, 1.3, 0.1),
                                                 stax.Scale(0.3))),
                       stax.FanInSum())


@pytest.mark.parametrize("n", [1, 7])
def test_repeat_equals_serial_float64(n):
    with x64():
        x1 = jax.random.normal(jax.random.PRNGKey(0), (3, 16))
        x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 16))
        first = stax.Dense(16, 1.1, 0.2)
        looped = stax.serial(first, stax.repeat(_block(), n))
        unrolled = stax.serial(first, stax.serial(*[_block()] * n))
        for kw in ({}, {"diagonal_batch": False}):
            k_l = looped[2](x1, x2, **kw)
            k_u = unrolled[2](x1, x2, **kw)
            for f in ("nngp", "ntk", "cov1", "cov2"):
                assert_close(getattr(k_l, f), getattr(k_u, f), tol("exact", "float64"), f)
        # the same key gives the same parameters (stacked) and the same outputs
        s_l, p_l = looped[0](jax.random.PRNGKey(2), x1.shape)
        s_u, p_u = unrolled[0](jax.random.PRNGKey(2), x1.shape)
        assert s_l == s_u == (3, 16)
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *p_u[1])
        for a, b in zip(jax.tree_util.tree_leaves(p_l[1]), jax.tree_util.tree_leaves(stacked)):
            np.testing.assert_array_equal(a, b)
        assert_close(looped[1](p_l, x1), unrolled[1](p_u, x1), tol("exact", "float64"), "apply")
        assert not np.allclose(looped[1](p_l, x1), x1)  # the loop does something


def test_repeat_kernel_is_one_scan():
    layer = stax.serial(stax.Dense(8, 1.5, 0.1), stax.Relu())
    kernel_fn = stax.serial(stax.Dense(8), stax.repeat(layer, 50))[2]
    jaxpr = jax.make_jaxpr(lambda x: kernel_fn(x, get="ntk"))(jnp.ones((2, 3)))
    text = str(jaxpr)
    assert text.count("scan[") == 1
    assert "length=49" in text


def test_repeat_errors():
    grow = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(4), stax.Dense(4)),
                       stax.FanInConcat(axis=1))
    with pytest.raises(ValueError, match=r"repeat\(layer, n=3\): the layer's kernel_fn changes "
                                         r"the Kernel's structure"):
        stax.repeat(grow, 3)[2](jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"repeat\(layer, n=3\): the layer changes the "
                                         r"activation shape from \(2, 3, 4\) to \(2, 6, 4\)"):
        stax.repeat(grow, 3)[0](jax.random.PRNGKey(0), (2, 3, 4))
    with pytest.raises(ValueError, match=r"repeat\(n=-1\): n must be a non-negative integer"):
        stax.repeat(stax.Relu(), -1)


def test_repeat_zero_times_is_the_identity():
    """As in neural-tangents: no layer at all (the input kernel, the input itself)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    init_fn, apply_fn, kernel_fn = stax.repeat(stax.Dense(4), 0)
    shape, params = init_fn(jax.random.PRNGKey(0), x.shape)
    assert shape == x.shape
    np.testing.assert_array_equal(apply_fn(params, x), x)
    np.testing.assert_allclose(kernel_fn(x, None, "nngp"), x @ x.T / 4, rtol=1e-6)
    with pytest.raises(TypeError, match="repeat"):
        stax.repeat(stax.Relu, 2)
