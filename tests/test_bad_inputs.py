"""A catalogue of bad calls: each raises an error that names the argument (and says what to
do) when the layer is built or the function called, before any heavy work."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import infwidth
from infwidth import stax

X = jnp.ones((3, 4))
IMG = jnp.ones((2, 5, 5, 3))
MLP = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
KF = MLP[2]

CATALOGUE = {
    # layer construction: (call, exception, text the message must contain)
    "Dense(0)": (lambda: stax.Dense(0), ValueError, "out_dim"),
    "Dense(2.5)": (lambda: stax.Dense(2.5), ValueError, "out_dim"),
    "Dense W_std<0": (lambda: stax.Dense(3, W_std=-1.0), ValueError, "W_std"),
    "Dense W_std=inf": (lambda: stax.Dense(3, W_std=float("inf")), ValueError, "W_std"),
    "Dense W_std=nan": (lambda: stax.Dense(3, W_std=float("nan")), ValueError, "W_std"),
    "Dense W_std str": (lambda: stax.Dense(3, W_std="a"), ValueError, "W_std"),
    "Dense b_std<0": (lambda: stax.Dense(3, b_std=-1.0), ValueError, "b_std"),
    "Dense parameterization": (lambda: stax.Dense(3, parameterization="foo"), ValueError,
                               "parameterization"),
    "Conv padding": (lambda: stax.Conv(3, (2, 2), padding="SAM"), ValueError, "padding"),
    "Conv filter 0": (lambda: stax.Conv(3, (0, 2)), ValueError, "filter_shape"),
    "Conv strides 0": (lambda: stax.Conv(3, (2, 2), strides=(0, 1)), ValueError, "strides"),
    "Conv out 0": (lambda: stax.Conv(0, (2, 2)), ValueError, "out_chan"),
    "AvgPool window 0": (lambda: stax.AvgPool((0, 2)), ValueError, "window_shape"),
    "AvgPool padding": (lambda: stax.AvgPool((2, 2), padding="X"), ValueError, "padding"),
    "Erf a str": (lambda: stax.Erf(a="x"), TypeError, "a="),
    "RectifiedMonomial -1": (lambda: stax.RectifiedMonomial(-1), ValueError, "degree"),
    "RectifiedMonomial 1.5": (lambda: stax.RectifiedMonomial(1.5), ValueError, "degree"),
    "Polynomial []": (lambda: stax.Polynomial([]), ValueError, "coef"),
    "Gelu approximate": (lambda: stax.Gelu(approximate="yes"), TypeError, "approximate"),
    "Rbf gamma<0": (lambda: stax.Rbf(-1.0), ValueError, "gamma"),
    "Dropout rate 0": (lambda: stax.Dropout(0.0), ValueError, "rate"),
    "Dropout rate 1.5": (lambda: stax.Dropout(1.5), ValueError, "rate"),
    "Dropout mode": (lambda: stax.Dropout(0.5, mode="x"), ValueError, "mode"),
    "LayerNorm axis str": (lambda: stax.LayerNorm(axis="a"), TypeError, "axis"),
    "attention heads 0": (lambda: stax.GlobalSelfAttention(4, 4, 4, 0), ValueError, "n_heads"),
    "serial()": (lambda: stax.serial(), ValueError, "serial"),
    "serial(Relu)": (lambda: stax.serial(stax.Relu), TypeError, "Relu()"),
    "repeat n=-1": (lambda: stax.repeat(stax.Relu(), -1), ValueError, "n="),
    "tile_memory -1": (lambda: stax.tile_memory(-1), ValueError, "nbytes"),
    # kernel_fn calls
    "kernel_fn 1-d input": (lambda: KF(jnp.ones(3)), ValueError, "x1"),
    "kernel_fn str input": (lambda: KF("abc"), TypeError, "x1"),
    "kernel_fn None input": (lambda: KF(None), TypeError, "x1"),
    "kernel_fn complex": (lambda: KF(X * 1j), TypeError, "complex"),
    "kernel_fn no features": (lambda: KF(jnp.ones((3, 0))), ValueError, "features"),
    "kernel_fn x2 features": (lambda: KF(X, jnp.ones((3, 5))), ValueError, "x2"),
    "kernel_fn get unknown": (lambda: KF(X, None, "foo"), ValueError, "get="),
    "kernel_fn get twice": (lambda: KF(X, None, ("nngp", "nngp")), ValueError, "twice"),
    "kernel_fn get int": (lambda: KF(X, None, 3), TypeError, "get="),
    "kernel_fn get ()": (lambda: KF(X, None, ()), TypeError, "get="),
    "kernel_fn misspelt keyword": (lambda: KF(X, diagonal_spatail=True), TypeError,
                                   "diagonal_spatail"),
    "kernel_fn diagonal_batch str": (lambda: KF(X, diagonal_batch="no"), TypeError,
                                     "diagonal_batch"),
    "kernel_fn diagonal_spatial int": (lambda: KF(X, diagonal_spatial=2), TypeError,
                                       "diagonal_spatial"),
    "kernel_fn Kernel and x2": (lambda: KF(KF(X), X), ValueError, "x2"),
    "Conv on flat inputs": (lambda: stax.serial(stax.Conv(3, (2, 2)))[2](X), ValueError,
                            "(3, 4)"),
    "filter larger than image": (lambda: stax.serial(stax.Conv(3, (7, 7)))[2](IMG), ValueError,
                                 "7"),
    "Relu on raw inputs": (lambda: stax.serial(stax.Relu())[2](X), ValueError, "Gaussian"),
    "mup has no kernel": (lambda: stax.serial(stax.Dense(3, parameterization="mup"))[2](X),
                          NotImplementedError, "mup"),
    "mask_constant str": (lambda: KF(X, mask_constant="pad"), TypeError, "mask_constant"),
    "mask_constant list": (lambda: KF(X, mask_constant=[0.0]), TypeError, "mask_constant"),
    "apply_fn mask_constant bool": (lambda: stax.Dense(2).apply_fn(
        stax.Dense(2).init_fn(jax.random.PRNGKey(0), X.shape)[1], X, mask_constant=True),
        TypeError, "mask_constant"),
    # batch
    "batch batch_size -1": (lambda: infwidth.batch(KF, -1), ValueError, "batch_size"),
    "batch device_count": (lambda: infwidth.batch(KF, 2, device_count=-5), ValueError,
                           "device_count"),
    "batch 1-d input": (lambda: infwidth.batch(KF, 2)(jnp.ones(3)), ValueError, "x1"),
    "batch error has caller's shapes": (
        lambda: infwidth.batch(stax.serial(stax.Conv(3, (2, 2)))[2], 2)(jnp.ones((10, 4))),
        ValueError, "(10, 4)"),
}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_call_raises_a_clear_error(name):
    call, error, text = CATALOGUE[name]
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value), f"{name}: message does not name {text!r}: {info.value}"


def test_late_layer_error_comes_before_the_work():
    """A 'mup' readout after 30 layers used to raise only once the 30 layers were computed;
    now an abstract evaluation raises it first: no layer's kernel is ever computed (a probe
    layer that reports each evaluation through jax.debug.callback stays silent)."""
    evaluated = []

    def probe_nngp(cov12, var1, var2):
        jax.debug.callback(lambda: evaluated.append(1))
        return cov12

    probe = stax.elementwise(lambda x: x, "Probe", probe_nngp)
    kernel_fn = stax.serial(stax.Dense(64), probe, *[stax.Dense(64), stax.Erf()] * 30,
                            stax.Dense(1, parameterization="mup"))[2]
    with pytest.raises(NotImplementedError, match="mup"):
        kernel_fn(jnp.ones((4, 3)), None, "ntk")
    assert not evaluated
    stax.serial(stax.Dense(64), probe)[2](jnp.ones((4, 3)), None, "ntk")
    assert evaluated  # the probe does report evaluations


def test_too_large_a_kernel_is_refused_up_front(monkeypatch):
    """A result larger than the memory there is: a MemoryError naming sizes and fixes, before
    any XLA allocation (here the available memory is pretended to be 1 MiB)."""
    from infwidth.stax import _memory

    monkeypatch.setattr(_memory, "available_bytes", lambda: 2**20)
    kernel_fn = stax.serial(stax.Conv(8, (3, 3)), stax.Relu(), stax.Flatten(), stax.Dense(1))[2]
    with pytest.raises(MemoryError, match="GiB") as info:
        kernel_fn(jnp.ones((20, 8, 8, 3)), None, "ntk")
    assert "infwidth.batch" in str(info.value) and "diagonal_spatial" in str(info.value)
