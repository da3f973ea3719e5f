"""from_flax on convolutional networks: a CNN (conv + pooling + dense) and a pre-activation
ResNet without BatchNorm, in flax.linen and flax.nnx, against the hand-written stax networks in
float64 and against the Flax model's own Monte Carlo kernels."""

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64

from infwidth import from_flax, stax

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
init = jax.nn.initializers


def images(n1=3, n2=2, size=6, chans=2):
    x1 = jax.random.normal(jax.random.PRNGKey(3), (n1, size, size, chans))
    x2 = jax.random.normal(jax.random.PRNGKey(4), (n2, size, size, chans))
    return x1, x2


def check_same_kernels(kernel_fn, expected_fn, x1, x2):
    for a, b in ((x1, x2), (x1, None)):
        k = kernel_fn(a, b, get=("nngp", "ntk"))
        e = expected_fn(a, b, get=("nngp", "ntk"))
        assert k.nngp.dtype == jnp.float64 and k.nngp.shape == e.nngp.shape
        assert_close(k.nngp, e.nngp, tol("nt", "float64"), "nngp")
        assert_close(k.ntk, e.ntk, tol("nt", "float64"), "ntk")


def std(layer, *args, **kwargs):
    return layer(*args, parameterization="standard", **kwargs)


class LinenCNN(nn.Module):
    width: int = 16
    out: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3), kernel_init=init.he_normal())(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(self.width, (2, 2), strides=(1, 1), padding="VALID")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.out)(x)


def stax_cnn(width=16, out=2):
    return stax.serial(
        std(stax.Conv, width, (3, 3), padding="SAME", W_std=2**0.5, b_std=0.0), stax.Relu(),
        stax.AvgPool((2, 2), (2, 2)),
        std(stax.Conv, width, (2, 2), padding="VALID", W_std=1.0, b_std=0.0), stax.Relu(),
        stax.GlobalAvgPool(), std(stax.Dense, out, W_std=1.0, b_std=0.0))


def test_linen_cnn_equals_stax():
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in images())
        _, _, kernel_fn = from_flax(LinenCNN(), x1)
        check_same_kernels(kernel_fn, stax_cnn()[2], x1, x2)


class NnxFlattenCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 8, (3, 3), strides=(2, 2), padding="VALID", rngs=rngs)
        self.dense = nnx.Linear(2 * 2 * 8, 1, rngs=rngs)

    def __call__(self, x):
        h = jax.lax.erf(self.conv(x))
        return self.dense(h.reshape(h.shape[0], -1))


def test_nnx_strided_cnn_with_flatten_equals_stax():
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in images())
        _, _, kernel_fn = from_flax(NnxFlattenCNN(nnx.Rngs(0)), x1)
        _, _, expected = stax.serial(
            std(stax.Conv, 8, (3, 3), (2, 2), "VALID", W_std=1.0, b_std=0.0), stax.Erf(),
            stax.Flatten(), std(stax.Dense, 1, W_std=1.0, b_std=0.0))
        check_same_kernels(kernel_fn, expected, x1, x2)


class PreActBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.width, (3, 3), kernel_init=init.he_normal())(nn.relu(x))
        h = nn.Conv(self.width, (3, 3), kernel_init=init.he_normal(), use_bias=False)(nn.relu(h))
        return x + h


class LinenResNet(nn.Module):
    width: int = 16

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (3, 3))(x)
        x = PreActBlock(self.width)(x)
        x = PreActBlock(self.width)(x)
        return nn.Dense(1)(nn.relu(x).mean(axis=(1, 2)))


def test_linen_preact_resnet_equals_stax():
    def conv(b_std):
        return std(stax.Conv, 16, (3, 3), padding="SAME", W_std=2**0.5, b_std=b_std)

    block = stax.serial(
        stax.FanOut(2),
        stax.parallel(stax.Identity(), stax.serial(stax.Relu(), conv(0.0), stax.Relu(),
                                                   conv(None))),
        stax.FanInSum())
    _, _, expected = stax.serial(
        std(stax.Conv, 16, (3, 3), padding="SAME", W_std=1.0, b_std=0.0), block, block,
        stax.Relu(), stax.GlobalAvgPool(), std(stax.Dense, 1, W_std=1.0, b_std=0.0))
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in images(2, 2, 5))
        _, _, kernel_fn = from_flax(LinenResNet(), x1)
        check_same_kernels(kernel_fn, expected, x1, x2)


@pytest.mark.float32_stream
def test_linen_cnn_monte_carlo():
    x1, x2 = images(2, 2, 5)
    init_fn, apply_fn, kernel_fn = from_flax(LinenCNN(width=256, out=32), x1)
    exact = kernel_fn(x1, x2, get=("nngp", "ntk"))
    nngp, _ = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(0), 48, ntk=False)
    _, ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(1), 8)
    assert rel_err(nngp, exact.nngp) < tol("mc")
    assert rel_err(ntk, exact.ntk) < tol("mc")
