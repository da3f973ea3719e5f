"""muP / abc-parameterizations of Dense and the output multiplier OutputScale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, tol, x64

from infwidth import stax
from infwidth.parameterization import ABC


def _x(n=5, d=3, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, d))


@pytest.mark.parametrize("alpha", [0.1, 2.5])
def test_output_scale_multiplies_kernels_by_alpha_squared(alpha):
    with x64():
        x1, x2 = _x(4, 3, 1).astype(jnp.float64), _x(3, 3, 2).astype(jnp.float64)
        net = stax.serial(stax.Dense(8, 1.3, 0.2), stax.Erf(), stax.Dense(1, 0.9, 0.1))
        scaled = stax.serial(net, stax.OutputScale(alpha))
        k0, k1 = net.kernel_fn(x1, x2), scaled.kernel_fn(x1, x2)
        for f in ("nngp", "ntk", "cov1", "cov2"):
            assert_close(getattr(k1, f), alpha**2 * getattr(k0, f), tol("exact", jnp.float64), f)
        # and the finite network is alpha times the unscaled one with the same parameters
        _, params = scaled.init_fn(jax.random.PRNGKey(0), x1.shape)
        assert_close(scaled.apply_fn(params, x1), alpha * net.apply_fn(params[0], x1),
                     tol("exact", jnp.float64), "apply")


def test_output_scale_matches_monte_carlo():
    x = _x(4, 3, 3)
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512, 1.2, 0.1), stax.Relu(),
                                               stax.Dense(32, 1.0, 0.1), stax.OutputScale(3.0))
    nngp, ntk = mc_kernels(init_fn, apply_fn, x, None, jax.random.PRNGKey(1), n_samples=128)
    k = kernel_fn(x, get=("nngp", "ntk"))
    assert_close(nngp, k.nngp, tol("mc"), "nngp")
    assert_close(ntk, k.ntk, tol("mc"), "ntk")


def test_abc_ntk_form_is_ntk():
    """ABC(0.5, 0) with n = fan-in is 'ntk': same outputs for the same draw, same kernels."""
    x = _x()
    ntk_net = stax.serial(stax.Dense(16, 1.4, 0.3), stax.Relu(), stax.Dense(2, 0.8, 0.2))
    abc = ABC(0.5, 0.0)
    abc_net = stax.serial(stax.Dense(16, 1.4, 0.3, parameterization=abc), stax.Relu(),
                          stax.Dense(2, 0.8, 0.2, parameterization=abc))
    _, p1 = ntk_net.init_fn(jax.random.PRNGKey(0), x.shape)
    _, p2 = abc_net.init_fn(jax.random.PRNGKey(0), x.shape)
    assert_close(abc_net.apply_fn(p2, x), ntk_net.apply_fn(p1, x), tol("exact"), "apply")
    assert_close(abc_net.kernel_fn(x, get="ntk"), ntk_net.kernel_fn(x, get="ntk"), tol("exact"))


def _layer_stats(layer, fan_in, key):
    (_, (W, _)) = layer.init_fn(key, (1, fan_in))
    x = jax.random.normal(jax.random.PRNGKey(7), (64, fan_in))
    y = layer.apply_fn((W, None), x)
    return float(jnp.var(W)), float(jnp.mean(y**2) / jnp.mean(x**2))


@pytest.mark.parametrize("fan_in,fan_out,expected_var", [
    (8, 1024, 1 / 8),              # input layer: 1 / fan_in
    (1024, 1024, 1 / 1024),        # hidden layer: 1 / fan_in
    (1024, 4, 4 / 1024**2),        # readout: fan_out / fan_in**2, the muP 1 / n**2
])
def test_mup_init_variances(fan_in, fan_out, expected_var):
    var, _ = _layer_stats(stax.Dense(fan_out, parameterization="mup"), fan_in,
                          jax.random.PRNGKey(fan_in + fan_out))
    assert abs(var / expected_var - 1) < 0.1, (var, expected_var)


@pytest.mark.parametrize("abc,fan_in,fan_out,expected_gain", [
    (ABC(1.0, 0.0, -1.0), 256, 2, 1 / 256),            # n**-2a * n**-2b with n = fan_in
    (ABC(0.0, 0.5, 0.0), 256, 16, 1.0),
    (ABC(-0.5, 0.5, -1.0, n="fan_out"), 8, 512, 8.0),   # TP4 muP input layer: W ~ N(0, 1)
])
def test_abc_forward_scale(abc, fan_in, fan_out, expected_gain):
    """E[y**2] / E[x**2] = fan_in * n**-2(a+b): checks the multiplier and the init variance."""
    gains = [_layer_stats(stax.Dense(fan_out, parameterization=abc), fan_in,
                          jax.random.PRNGKey(s))[1] for s in range(4)]
    assert abs(np.mean(gains) / expected_gain - 1) < 0.15, (np.mean(gains), expected_gain)


def test_ntk_and_standard_unchanged_by_new_code_paths():
    """'ntk'/'standard' apply_fn equals its formula written out by hand (float64)."""
    with x64():
        x = _x(3, 5).astype(jnp.float64)
        for p, mult in (("ntk", 1.5 / 5**0.5), ("standard", 1.0)):
            layer = stax.Dense(4, 1.5, 0.2, parameterization=p)
            _, (W, b) = layer.init_fn(jax.random.PRNGKey(0), x.shape)
            bmult = 0.2 if p == "ntk" else 1.0
            assert_close(layer.apply_fn((W, b), x), mult * x @ W + bmult * b,
                         tol("exact", jnp.float64), p)


@pytest.mark.parametrize("make,err,match", [
    (lambda: stax.Dense(4, parameterization="mupp"), ValueError,
     r"Dense\(parameterization='mupp'\): parameterization must be one of 'ntk', 'standard', 'mup'"),
    (lambda: stax.Dense(4, parameterization=ABC(0.5, 0.0, n="width")), ValueError,
     r"ABC.n must be 'fan_in' or 'fan_out'"),
    (lambda: stax.Dense(4, parameterization=ABC("x", 0.0)), ValueError, r"ABC.a must be"),
    (lambda: stax.OutputScale(0.0), ValueError, r"OutputScale\(alpha=0.0\): alpha must be "
                                                r"a positive number"),
    (lambda: stax.OutputScale(-2), ValueError, r"alpha must be a positive number"),
    (lambda: stax.OutputScale("big"), ValueError, r"alpha must be a positive number"),
])
def test_bad_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()


@pytest.mark.parametrize("parameterization", ["mup", ABC(1.0, 0.0, -1.0)])
def test_mup_has_no_analytic_kernel(parameterization):
    _, _, kernel_fn = stax.serial(stax.Dense(8, parameterization=parameterization), stax.Relu(),
                                  stax.Dense(1, parameterization=parameterization))
    with pytest.raises(NotImplementedError, match=r"not a kernel|only in its 'ntk' form") as e:
        kernel_fn(jnp.ones((2, 3)))
    assert "infwidth.mup" in str(e.value) and "infwidth.analysis" in str(e.value)


def test_conv_follows_dense():
    """Conv takes the same parameterizations: ABC(0.5, 0) is 'ntk' (bias included), 'mup' draws
    filters with variance 1 / (C_in * taps) for a hidden layer, and has no analytic kernel."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
    k_ntk = stax.Conv(4, (3, 3), W_std=1.3, b_std=0.4, padding="SAME").kernel_fn(x, get="ntk")
    k_abc = stax.Conv(4, (3, 3), W_std=1.3, b_std=0.4, padding="SAME",
                      parameterization=ABC(0.5, 0.0)).kernel_fn(x, get="ntk")
    assert_close(k_abc, k_ntk, tol("exact"), "ntk")
    conv = stax.Conv(256, (3, 3), padding="SAME", parameterization="mup")
    _, (W, _) = conv.init_fn(jax.random.PRNGKey(1), (1, 5, 5, 64))
    assert abs(float(jnp.var(W)) * 64 * 9 - 1) < 0.05
    with pytest.raises(NotImplementedError, match=r"Conv\(parameterization='mup'\)"):
        conv.kernel_fn(x)


def test_mup_learning_rates_with_a_base_width():
    """Relative to a base network the rates are 1 at the base width and scale like muP's
    SGD/Adam rules (input ~ width, hidden 1, readout 1/width for SGD) at 4x the width."""
    from infwidth import mup

    def shapes(n):
        net = stax.serial(stax.Dense(n, parameterization="mup", b_std=0.1), stax.Relu(),
                          stax.Dense(n, parameterization="mup"), stax.Relu(),
                          stax.Dense(1, parameterization="mup"))
        return net.init_fn(jax.random.PRNGKey(0), (1, 3))[1]

    base, wide = shapes(64), shapes(256)
    same = mup.mup_learning_rates(base, "sgd", base_params=base)
    assert all(r == 1.0 for r in jax.tree_util.tree_leaves(same))
    sgd = mup.mup_learning_rates(wide, "sgd", base_params=base)
    assert [sgd[0][0], sgd[0][1], sgd[2][0], sgd[4][0]] == [4.0, 4.0, 1.0, 0.25]
    adam = mup.mup_learning_rates(wide, "adam", base_params=base)
    assert [adam[0][0], adam[0][1], adam[2][0], adam[4][0]] == [1.0, 1.0, 0.25, 0.25]
