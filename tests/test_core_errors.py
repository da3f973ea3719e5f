"""Bad input raises ValueError/TypeError naming the argument and the fix, before any work."""

import jax
import jax.numpy as jnp
import pytest

from infwidth import stax


@pytest.mark.parametrize("make,match", [
    (lambda: stax.Dense(0), r"Dense\(out_dim=0\): out_dim must be a positive integer"),
    (lambda: stax.Dense(-3), r"out_dim must be a positive integer"),
    (lambda: stax.Dense(2.5), r"out_dim must be a positive integer"),
    (lambda: stax.Dense(4, W_std=-1.0), r"Dense\(W_std=-1.0\): W_std must be a non-negative"),
    (lambda: stax.Dense(4, b_std=-0.1), r"b_std must be a non-negative number or None"),
    (lambda: stax.Dense(4, parameterization="ntkk"), r"parameterization must be one of 'ntk'"),
    (lambda: stax.Dense(4, channel_axis=True), r"Dense\(channel_axis=True\): expected an int axis"),
    (lambda: stax.Dense(4, s=(1, 0)), r"s must be"),
    (lambda: stax.Erf(a="x"), r"Erf\(a='x'\): a must be a number"),
])
def test_layer_arguments(make, match):
    wrong_type = "must be a number" in match or "expected an int" in match
    with pytest.raises(TypeError if wrong_type else ValueError, match=match):
        make()


def test_serial_of_uncalled_layer():
    with pytest.raises(TypeError, match=r"did you forget to call it, e.g. Relu\(\)"):
        stax.serial(stax.Dense(4), stax.Relu)
    with pytest.raises(ValueError, match="at least one layer"):
        stax.serial()


_, _, KERNEL_FN = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))


def test_feature_mismatch():
    with pytest.raises(ValueError, match=r"x1 has shape \(3, 4\) and x2 has shape \(2, 5\)"):
        KERNEL_FN(jnp.ones((3, 4)), jnp.ones((2, 5)))


def test_one_dimensional_input():
    with pytest.raises(ValueError, match=r"x\[None\] for a single input or x\[:, None\]"):
        KERNEL_FN(jnp.ones(4))


@pytest.mark.parametrize("get,err", [("nngpp", ValueError), (("nngp", "ntkk"), ValueError),
                                     ((), TypeError), (3, TypeError)])
def test_bad_get(get, err):
    with pytest.raises(err, match="get"):
        KERNEL_FN(jnp.ones((3, 4)), get=get)


def test_bad_get_raises_before_compilation():
    jitted = jax.jit(KERNEL_FN, static_argnames="get")
    with pytest.raises(ValueError, match="unknown kernel 'nngpp'"):
        jitted(jnp.ones((3, 4)), get="nngpp")


def test_nonlinearity_needs_gaussian_input():
    _, _, kernel_fn = stax.serial(stax.Dense(4), stax.Relu(), stax.Erf())
    with pytest.raises(ValueError, match="Put an affine layer such as Dense or Conv before it"):
        kernel_fn(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="not Gaussian"):
        stax.Relu().kernel_fn(jnp.ones((2, 3)))


def test_non_array_input():
    with pytest.raises(TypeError, match="expected an array"):
        KERNEL_FN(3.0)
