"""from_flax on MLPs written in flax.linen, flax.nnx and as a plain function: kernels equal the
hand-written stax network in float64 (1e-6 relative), and the Monte Carlo kernels of the Flax
model itself converge to them as the width grows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64

from infwidth import from_flax, stax

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
init = jax.nn.initializers

# activation in the model, the hand-written stax layer of the same function
ACTIVATIONS = {
    "relu": (jax.nn.relu, stax.Relu),
    "gelu_tanh": (jax.nn.gelu, lambda: stax.ElementwiseNumerical(jax.nn.gelu)),
    "tanh": (jnp.tanh, stax.Tanh),
}


class LinenMLP(nn.Module):
    width: int
    act: object
    out: int = 3

    @nn.compact
    def __call__(self, x):
        x = self.act(nn.Dense(self.width, kernel_init=init.he_normal())(x))
        x = self.act(nn.Dense(self.width, bias_init=init.normal(0.1))(x))
        return nn.Dense(self.out, use_bias=False)(x)


def stax_mlp(width, act, parameterization="standard", out=3):
    p = parameterization
    return stax.serial(stax.Dense(width, W_std=2**0.5, b_std=0.0, parameterization=p), act(),
                       stax.Dense(width, W_std=1.0, b_std=0.1, parameterization=p), act(),
                       stax.Dense(out, W_std=1.0, b_std=None, parameterization=p))


def inputs(n1=5, n2=4, d=6):
    x1 = jax.random.normal(jax.random.PRNGKey(1), (n1, d))
    x2 = jax.random.normal(jax.random.PRNGKey(2), (n2, d))
    return x1, x2


def check_same_kernels(kernel_fn, expected_fn, x1, x2):
    for a, b in ((x1, x2), (x1, None)):
        k = kernel_fn(a, b, get=("nngp", "ntk"))
        e = expected_fn(a, b, get=("nngp", "ntk"))
        assert k.nngp.dtype == jnp.float64
        assert_close(k.nngp, e.nngp, tol("nt", "float64"), "nngp")
        assert_close(k.ntk, e.ntk, tol("nt", "float64"), "ntk")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_linen_mlp_equals_stax(name):
    act, layer = ACTIVATIONS[name]
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in inputs())
        _, _, kernel_fn = from_flax(LinenMLP(64, act), x1)
        check_same_kernels(jax.jit(kernel_fn, static_argnames="get"),
                           stax_mlp(64, layer)[2], x1, x2)


class MixedMLP(nn.Module):
    """One activation per layer: the other closed forms and quadratures."""

    @nn.compact
    def __call__(self, x):
        x = jax.scipy.special.erf(nn.Dense(32)(x))
        x = jax.nn.leaky_relu(nn.Dense(32)(x), 0.2)
        x = jax.nn.gelu(nn.Dense(32)(x), approximate=False)
        x = 2 * jnp.sin(nn.Dense(32)(x))
        x = jax.nn.silu(nn.Dense(32)(x))
        x = jnp.abs(nn.Dense(32)(x))
        x = jax.nn.softplus(nn.Dense(32)(x))
        return nn.Dense(1)(x)


def test_linen_mixed_activations_equal_stax():
    def dense(n):
        return stax.Dense(n, 1.0, 0.0, parameterization="standard")

    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in inputs())
        _, _, kernel_fn = from_flax(MixedMLP(), x1)
        _, _, expected = stax.serial(
            dense(32), stax.Erf(), dense(32), stax.LeakyRelu(0.2), dense(32), stax.Gelu(),
            dense(32), stax.Sin(a=2.0), dense(32), stax.Silu(), dense(32), stax.Abs(),
            dense(32), stax.Softplus(), dense(1))
        check_same_kernels(jax.jit(kernel_fn, static_argnames="get"), expected, x1, x2)


def test_linen_mlp_ntk_parameterization():
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in inputs())
        _, _, kernel_fn = from_flax(LinenMLP(64, jax.nn.relu), x1, parameterization="ntk")
        check_same_kernels(kernel_fn, stax_mlp(64, stax.Relu, "ntk")[2], x1, x2)
        # the standard NTK grows with the width, the 'ntk' one does not
        std = from_flax(LinenMLP(64, jax.nn.relu), x1)[2](x1, get="ntk")
        wide = from_flax(LinenMLP(256, jax.nn.relu), x1)[2](x1, get="ntk")
        assert float(jnp.mean(wide / std)) > 3.0


class NnxMLP(nnx.Module):
    def __init__(self, d, width, act, *, rngs, kernel_init=None):
        kw = {} if kernel_init is None else {"kernel_init": kernel_init}
        self.l1 = nnx.Linear(d, width, rngs=rngs, **kw)
        self.l2 = nnx.Linear(width, 2, rngs=rngs)
        self.act = act

    def __call__(self, x):
        return self.l2(self.act(self.l1(x)))


def test_nnx_mlp_equals_stax():
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in inputs())
        model = NnxMLP(6, 128, jnp.tanh, rngs=nnx.Rngs(0))
        _, _, kernel_fn = from_flax(model, x1)
        _, _, expected = stax.serial(
            stax.Dense(128, 1.0, 0.0, parameterization="standard"), stax.Tanh(),
            stax.Dense(2, 1.0, 0.0, parameterization="standard"))
        check_same_kernels(kernel_fn, expected, x1, x2)


def test_nnx_custom_initializer_must_be_named():
    """nnx does not keep kernel_init: a model built with he_normal is caught by its weights'
    statistics, and initializers= says how it was built."""
    x1, x2 = inputs()
    model = NnxMLP(6, 512, jax.nn.relu, rngs=nnx.Rngs(0), kernel_init=init.he_normal())
    with pytest.raises(ValueError, match="l1/kernel.*initializers="):
        from_flax(model, x1)
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in inputs())
        _, _, kernel_fn = from_flax(model, x1, initializers={"l1/kernel": init.he_normal()})
        _, _, expected = stax.serial(
            stax.Dense(512, 2**0.5, 0.0, parameterization="standard"), stax.Relu(),
            stax.Dense(2, 1.0, 0.0, parameterization="standard"))
        check_same_kernels(kernel_fn, expected, x1, x2)


def plain_mlp(params, x):
    h = jax.nn.gelu(x @ params["w1"] + params["b1"][None], approximate=False)
    h = jax.lax.erf(h @ params["w2"])
    return h @ params["w3"] + params["b3"][None]


PLAIN_PARAMS = {"w1": jax.ShapeDtypeStruct((6, 96), jnp.float32),
                "b1": jax.ShapeDtypeStruct((96,), jnp.float32),
                "w2": jax.ShapeDtypeStruct((96, 96), jnp.float32),
                "w3": jax.ShapeDtypeStruct((96, 16), jnp.float32),
                "b3": jax.ShapeDtypeStruct((16,), jnp.float32)}
PLAIN_INITS = {"w1": init.glorot_uniform(), "b1": init.normal(0.2), "w2": init.he_uniform(),
               "w3": init.truncated_normal(0.05), "b3": init.zeros}


def test_plain_function_equals_stax():
    # glorot: var = 2 / (6 + 96), so W_std**2 = 6 * 2 / 102; truncated normal: 0.05**2 times the
    # variance of a standard normal truncated to [-2, 2]
    trunc_var = 0.7737413035499232
    with x64():
        x1, x2 = (x.astype(jnp.float64) for x in inputs())
        _, _, kernel_fn = from_flax(plain_mlp, x1, params=PLAIN_PARAMS, initializers=PLAIN_INITS)
        _, _, expected = stax.serial(
            stax.Dense(96, (12 / 102) ** 0.5, 0.2, parameterization="standard"), stax.Gelu(),
            stax.Dense(96, 2**0.5, None, parameterization="standard"), stax.Erf(),
            stax.Dense(16, (96 * 0.05**2 * trunc_var) ** 0.5, 0.0, parameterization="standard"))
        check_same_kernels(kernel_fn, expected, x1, x2)


@pytest.mark.float32_stream
def test_linen_monte_carlo_converges():
    """The Flax model's own Monte Carlo NNGP/NTK approach from_flax's kernels as it widens."""
    x1, x2 = inputs(4, 3, 5)
    ntk_errs = {}
    for width in (32, 512):
        model = LinenMLP(width, jax.nn.gelu, out=64)
        init_fn, apply_fn, kernel_fn = from_flax(model, x1)
        exact = kernel_fn(x1, x2, get=("nngp", "ntk"))
        _, ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(width), 16)
        ntk_errs[width] = rel_err(ntk, exact.ntk)
    nngp, _ = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(1), 64, ntk=False)
    assert rel_err(nngp, exact.nngp) < tol("mc")
    assert ntk_errs[512] < tol("mc"), ntk_errs
    assert ntk_errs[512] < ntk_errs[32] / 2, ntk_errs


@pytest.mark.float32_stream
def test_plain_function_monte_carlo():
    x1, x2 = inputs(4, 3, 6)
    init_fn, apply_fn, kernel_fn = from_flax(plain_mlp, x1, params=PLAIN_PARAMS,
                                             initializers=PLAIN_INITS)
    exact = kernel_fn(x1, x2, get=("nngp", "ntk"))
    nngp, ntk = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(0), 128)
    assert rel_err(nngp, exact.nngp) < tol("mc")
    assert rel_err(ntk, exact.ntk) < tol("mc")
    assert np.all(np.isfinite(ntk))
