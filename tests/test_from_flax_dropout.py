"""Stochastic dropout through `from_flax` (linen with a 'dropout' rng, nnx.Dropout, a plain
function with jax.random.bernoulli): the kernel is the expectation over masks, as
`stax.Dropout` in train mode; checked against the hand-written stax network in float64 and
against the Monte Carlo kernels of the finite Flax model, masks drawn afresh per sample.
Also `stax.Dropout(broadcast_dims=...)` (spatial dropout) against its own finite network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, rel_err, tol, x64

from infwidth import from_flax, stax
from infwidth.flax_tracing import UnsupportedOperation

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
KEY = {"dropout": jax.random.PRNGKey(5)}


def std(layer, *args, **kwargs):
    return layer(*args, parameterization="standard", **kwargs)


class LinenDropoutMLP(nn.Module):
    width: int = 16
    rate: float = 0.25
    out: int = 1

    @nn.compact
    def __call__(self, x, deterministic=False):
        h = nn.relu(nn.Dense(self.width, kernel_init=jax.nn.initializers.he_normal())(x))
        h = nn.Dropout(self.rate)(h, deterministic=deterministic)
        h = jax.lax.erf(nn.Dense(self.width)(h))
        h = nn.Dropout(0.5)(h, deterministic=deterministic)
        return nn.Dense(self.out)(h)


def stax_mlp(dropout=True, b_std=0.0):
    """The stax network of LinenDropoutMLP (train mode), or without its dropout layers."""
    drop = (lambda rate: [stax.Dropout(rate)]) if dropout else (lambda rate: [])
    return stax.serial(
        std(stax.Dense, 16, W_std=2**0.5, b_std=b_std), stax.Relu(), *drop(0.75),
        std(stax.Dense, 16, W_std=1.0, b_std=b_std), stax.Erf(), *drop(0.5),
        std(stax.Dense, 1, W_std=1.0, b_std=b_std))


class NnxDropoutMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(3, 16, kernel_init=jax.nn.initializers.he_normal(), rngs=rngs)
        self.d1 = nnx.Dropout(0.25, rngs=rngs)
        self.l2 = nnx.Linear(16, 16, rngs=rngs)
        self.d2 = nnx.Dropout(0.5, rngs=rngs)
        self.l3 = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
        return self.l3(self.d2(jax.lax.erf(self.l2(self.d1(nnx.relu(self.l1(x)))))))


def plain_dropout_mlp(params, x, key):
    """``x * mask / keep`` written by hand (a float mask, multiplied in)."""
    h = jax.nn.relu(x @ params["w1"])
    keep = jax.random.bernoulli(key, 0.75, h.shape).astype(h.dtype)
    h = jax.lax.erf((h * keep / 0.75) @ params["w2"])
    h = jnp.where(jax.random.uniform(jax.random.fold_in(key, 1), h.shape) >= 0.5, 0.0, h / 0.5)
    return h @ params["w3"]


def _inputs():
    x1 = jax.random.normal(jax.random.PRNGKey(0), (4, 3), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 3), jnp.float64)
    return x1, x2


def check_equal(kernel_fn, expected_fn, x1, x2, what):
    for b in (x2, None, x1 + 0):
        k = kernel_fn(x1, b, get=("nngp", "ntk"))
        e = expected_fn(x1, b, get=("nngp", "ntk"))
        assert_close(k.nngp, e.nngp, tol("nt", "float64"), what + " nngp")
        assert_close(k.ntk, e.ntk, tol("nt", "float64"), what + " ntk")


def test_linen_nnx_and_plain_dropout_equal_stax_train_mode():
    with x64():
        x1, x2 = _inputs()
        expected = stax_mlp()[2]
        check_equal(from_flax(LinenDropoutMLP(), x1, rngs=KEY)[2], expected, x1, x2, "linen")
        he, lecun = jax.nn.initializers.he_normal(), jax.nn.initializers.lecun_normal()
        _, _, kernel_fn = from_flax(NnxDropoutMLP(nnx.Rngs(0)), x1,
                                    initializers={"l1/kernel": he})
        check_equal(kernel_fn, expected, x1, x2, "nnx")
        params = {"w1": jnp.zeros((3, 16)), "w2": jnp.zeros((16, 16)), "w3": jnp.zeros((16, 1))}
        _, _, kernel_fn = from_flax(plain_dropout_mlp, x1, params=params,
                                    initializers={"w1": he, "w2": lecun, "w3": lecun},
                                    key=jax.random.PRNGKey(3))
        check_equal(kernel_fn, stax_mlp(b_std=None)[2], x1, x2, "plain")
        # the diagonal grows by 1 / keep: the masks matter
        k = from_flax(LinenDropoutMLP(), x1, rngs=KEY)[2](x1, None, get="nngp")
        assert rel_err(k, stax_mlp(dropout=False)[2](x1, None, get="nngp")) > 0.1


def test_deterministic_flag_turns_dropout_off():
    with x64():
        x1, x2 = _inputs()
        _, _, kernel_fn = from_flax(LinenDropoutMLP(), x1, deterministic=True)
        check_equal(kernel_fn, stax_mlp(dropout=False)[2], x1, x2, "deterministic")


def _mc_own(init_fn, apply_fn, x, n_samples, key, ntk):
    """Monte Carlo NNGP (and NTK of output 0) of x with itself, masks drawn afresh per sample
    (and shared by the NTK's Jacobian, as one training step sees one mask)."""
    def one(k):
        k_p, k_d = jax.random.split(k)
        _, p = init_fn(k_p, x.shape)

        def f(pp):
            return apply_fn(pp, x, rngs={"dropout": k_d})

        out = f(p)
        nngp = out @ out.T / out.shape[-1]
        if not ntk:
            return nngp, jnp.zeros_like(nngp)
        jac = jax.jacrev(lambda pp: f(pp)[:, 0])(p)
        t = sum(a.reshape(a.shape[0], -1) @ a.reshape(a.shape[0], -1).T
                for a in jax.tree_util.tree_leaves(jac))
        return nngp, t

    nngps, ntks = jax.lax.map(jax.jit(one), jax.random.split(key, n_samples), batch_size=4)
    return np.asarray(nngps.mean(0)), np.asarray(ntks.mean(0))


@pytest.mark.float32_stream
def test_finite_dropout_network_approaches_the_kernel():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    errors = {}
    for width in (64, 1024):
        init_fn, apply_fn, kernel_fn = from_flax(LinenDropoutMLP(width=width, out=32), x,
                                                 rngs=KEY)
        exact = kernel_fn(x, None, get=("nngp", "ntk"))
        nngp, _ = _mc_own(init_fn, apply_fn, x, 64, jax.random.PRNGKey(1), ntk=False)
        _, ntk = _mc_own(init_fn, apply_fn, x, 16, jax.random.PRNGKey(2), ntk=True)
        errors[width] = (rel_err(nngp, exact.nngp), rel_err(ntk, exact.ntk))
    assert max(errors[1024]) < tol("mc"), errors
    assert errors[1024][1] < errors[64][1] / 2, errors  # the NTK: 0.069 -> 0.010 at 64 draws


@pytest.mark.float32_stream
def test_spatial_dropout_stax_against_its_finite_network():
    """Dropout(broadcast_dims=(1,)): one mask per (input, channel) shared over positions."""
    net = stax.serial(stax.Conv(512, (3,), padding="SAME"), stax.Relu(),
                      stax.Dropout(0.6, broadcast_dims=(1,)),
                      stax.Conv(64, (2,), padding="SAME"))
    init_fn, apply_fn, kernel_fn = net
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 2))
    exact = kernel_fn(x, None, get="nngp")

    def one(k):
        k_p, k_d = jax.random.split(k)
        _, p = init_fn(k_p, x.shape)
        out = apply_fn(p, x, rng=k_d)  # (N, T, C)
        return jnp.einsum("asc,btc->abst", out, out) / out.shape[-1]

    mc = np.asarray(jax.lax.map(jax.jit(one), jax.random.split(jax.random.PRNGKey(1), 64),
                                batch_size=8).mean(0))
    assert rel_err(mc, exact) < tol("mc")
    unshared = stax.serial(stax.Conv(512, (3,), padding="SAME"), stax.Relu(),
                           stax.Dropout(0.6), stax.Conv(64, (2,), padding="SAME"))[2]
    assert rel_err(mc, unshared(x, None, get="nngp")) > 3 * rel_err(mc, exact)


def test_spatial_dropout_through_from_flax_equals_stax():
    class SpatialDropoutCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(8, (3, 3))(x))
            h = nn.Dropout(0.4, broadcast_dims=(1, 2))(h, deterministic=False)
            return nn.Dense(2)(h.mean(axis=(1, 2)))

    with x64():
        x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2), jnp.float64)
        _, _, kernel_fn = from_flax(SpatialDropoutCNN(), x, rngs=KEY)
        _, _, expected = stax.serial(
            std(stax.Conv, 8, (3, 3), padding="SAME", W_std=1.0, b_std=0.0), stax.Relu(),
            stax.Dropout(0.6, broadcast_dims=(1, 2)), stax.GlobalAvgPool(),
            std(stax.Dense, 2, W_std=1.0, b_std=0.0))
        for b in (None, x[:2] * 1.5):
            k, e = kernel_fn(x, b, get=("nngp", "ntk")), expected(x, b, get=("nngp", "ntk"))
            assert_close(k.nngp, e.nngp, tol("nt", "float64"), "nngp")
            assert_close(k.ntk, e.ntk, tol("nt", "float64"), "ntk")


def test_random_numbers_without_a_limit_raise_naming_the_reason():
    x = jnp.ones((2, 3))

    class OnInput(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.Dropout(0.5)(x, deterministic=False))

    class FeatureShared(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(8)(x))
            return nn.Dense(1)(nn.Dropout(0.5, broadcast_dims=(1,))(h, deterministic=False))

    class BatchShared(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(8)(x))
            return nn.Dense(1)(nn.Dropout(0.5, broadcast_dims=(0,))(h, deterministic=False))

    class BeforeNonlinearity(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dropout(0.5)(nn.Dense(8)(x), deterministic=False)
            return nn.Dense(1)(nn.relu(h))

    class Noise(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(8)(x))
            h = h + jax.random.normal(self.make_rng("dropout"), h.shape)
            return nn.Dense(1)(h)

    for model, match in ((OnInput(), "dropout mask to the model's input"),
                         (FeatureShared(), "shared by all features"),
                         (BatchShared(), "shared by all inputs"),
                         (BeforeNonlinearity(), "not Gaussian"),
                         (Noise(), "random numbers other than")):
        with pytest.raises(UnsupportedOperation, match=match):
            from_flax(model, x, rngs=KEY)
    with pytest.raises(ValueError, match="broadcast_dims"):
        stax.Dropout(0.5, broadcast_dims=(0,))
    with pytest.raises(TypeError, match="broadcast_dims"):
        stax.Dropout(0.5, broadcast_dims=(1.5,))
    with pytest.raises(ValueError, match="channel axis"):
        stax.serial(stax.Dense(4), stax.Dropout(0.5, broadcast_dims=(1,)))[2](x)
