"""from_flax on LayerNorm and RMSNorm: the statistics over the features of a Gaussian
activation are deterministic in the limit. Against stax.LayerNorm (float64), and, with Flax's
learned scale and shift, against the Flax model's own Monte Carlo NTK at growing width."""

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_close, rel_err, tol, x64

from infwidth import from_flax, stax
from infwidth.flax_tracing import UnsupportedOperation

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")


class LinenLN(nn.Module):
    width: int = 64
    affine: bool = False
    out: int = 1

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width)(x)
        x = nn.LayerNorm(epsilon=1e-3, use_scale=self.affine, use_bias=self.affine)(x)
        x = jnp.tanh(x)
        return nn.Dense(self.out)(x)


class PreLN(nn.Module):
    """LayerNorm with its learned scale and shift, read by a dense layer (a pre-LN block), or
    with ``relu_next`` by a ReLU (post-LN MLPs)."""
    width: int = 64
    affine: bool = True
    relu_next: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width)(x)
        x = nn.LayerNorm(epsilon=1e-3, use_scale=self.affine, use_bias=self.affine)(x)
        if self.relu_next:
            return nn.Dense(1)(nn.relu(x))
        return nn.Dense(1)(jnp.tanh(nn.Dense(self.width)(x)))


def stax_ln(eps=1e-3):
    return stax.serial(stax.Dense(64, 1.0, 0.0, parameterization="standard"),
                       stax.LayerNorm(eps=eps), stax.Tanh(),
                       stax.Dense(1, 1.0, 0.0, parameterization="standard"))


def inputs(n1=5, n2=4, d=6):
    return (jax.random.normal(jax.random.PRNGKey(1), (n1, d)),
            jax.random.normal(jax.random.PRNGKey(2), (n2, d)))


def check_same(kernel_fn, expected_fn, x1, x2):
    for a, b in ((x1, x2), (x1, None)):
        k = kernel_fn(a, b, get=("nngp", "ntk"))
        e = expected_fn(a, b, get=("nngp", "ntk"))
        assert_close(k.nngp, e.nngp, tol("nt", "float64"), "nngp")
        assert_close(k.ntk, e.ntk, tol("nt", "float64"), "ntk")


def test_linen_layernorm_without_affine_equals_stax():
    with x64():
        x1, x2 = inputs()
        _, _, kernel_fn = from_flax(LinenLN(), x1)
        check_same(kernel_fn, stax_ln()[2], x1, x2)


def test_nnx_layernorm_without_affine_equals_stax():
    with x64():
        x1, x2 = inputs()

        class Model(nnx.Module):
            def __init__(self, rngs):
                self.dense = nnx.Linear(6, 64, rngs=rngs)
                self.norm = nnx.LayerNorm(64, epsilon=1e-3, use_scale=False, use_bias=False,
                                          rngs=rngs)
                self.out = nnx.Linear(64, 1, rngs=rngs)

            def __call__(self, x):
                return self.out(jnp.tanh(self.norm(self.dense(x))))

        _, _, kernel_fn = from_flax(Model(nnx.Rngs(0)), x1)
        check_same(kernel_fn, stax_ln()[2], x1, x2)


def test_rmsnorm_of_a_plain_function_equals_stax():
    """x * rsqrt(mean(x^2) + eps): in the limit the mean of a Gaussian layer's features is 0,
    so RMSNorm and LayerNorm have one kernel."""
    with x64():
        x1, x2 = inputs()

        def f(params, x):
            h = x @ params["w"]
            h = h * jax.lax.rsqrt(jnp.mean(h * h, -1, keepdims=True) + 1e-3)
            return jnp.tanh(h) @ params["v"]

        init = jax.nn.initializers.lecun_normal()
        params = {"w": jnp.zeros((6, 64)), "v": jnp.zeros((64, 1))}
        _, _, kernel_fn = from_flax(f, x1, params=params, initializers={"w": init, "v": init})
        expected = stax.serial(stax.Dense(64, 1.0, None, parameterization="standard"),
                               stax.LayerNorm(eps=1e-3), stax.Tanh(),
                               stax.Dense(1, 1.0, None, parameterization="standard"))[2]
        check_same(kernel_fn, expected, x1, x2)


def _affine_ntk(model, x1, x2, key, n_seeds):
    """The part of the finite model's NTK (output 0) that the LayerNorm's scale and shift
    contribute, sum_p df(x1)/dp df(x2)/dp over those parameters, averaged over seeds."""
    total = 0.0
    for i in range(n_seeds):
        params = model.init(jax.random.fold_in(key, i), x1)
        ln = params["params"]["LayerNorm_0"]

        def f(ln_params, x, params=params):
            p = {"params": {**params["params"], "LayerNorm_0": ln_params}}
            return model.apply(p, x)[:, 0]

        j1, j2 = jax.jacrev(f)(ln, x1), jax.jacrev(f)(ln, x2)
        total = total + sum(jnp.einsum("a...,b...->ab", a.reshape(a.shape[0], -1),
                                       b.reshape(b.shape[0], -1))
                            for a, b in zip(jax.tree_util.tree_leaves(j1),
                                            jax.tree_util.tree_leaves(j2)))
    return total / n_seeds


@pytest.mark.float32_stream
def test_layernorm_scale_and_shift_against_the_flax_models_own_gradients():
    """Flax's learned scale (ones) and shift (zeros) leave the NNGP unchanged and add their
    gradients to the NTK: that addition, from_flax's NTK with them minus without them, against
    the finite model's NTK restricted to those parameters, at growing width."""
    x1, x2 = inputs(4, 3)
    errors = {}
    for width in (32, 2048):
        with_affine = from_flax(PreLN(width), x1)[2]
        without = from_flax(PreLN(width, affine=False), x1)[2]
        assert_close(with_affine(x1, x2, get="nngp"), without(x1, x2, get="nngp"), 1e-6,
                     "nngp")
        predicted = with_affine(x1, x2, get="ntk") - without(x1, x2, get="ntk")
        measured = _affine_ntk(PreLN(width), x1, x2, jax.random.PRNGKey(3), 8)
        errors[width] = rel_err(measured, predicted)
    assert errors[2048] < tol("mc") and errors[2048] < errors[32] / 2, errors


@pytest.mark.float32_stream
def test_learned_scale_read_by_a_relu_against_the_flax_models_own_gradients():
    """The scale's gradient is the normalised feature itself, so through a ReLU its share is
    E[relu'(u) relu'(v) u v] = E[relu(u) relu(v)], not x^ x^' E[relu' relu'] (which is 34 %
    off the finite model at width 2048): the share, from_flax's NTK with the affine
    parameters minus without, against the finite model's NTK in those parameters."""
    x1, x2 = inputs(4, 3)
    errors = {}
    for width in (32, 2048):
        with_affine = from_flax(PreLN(width, relu_next=True), x1)[2]
        without = from_flax(PreLN(width, affine=False, relu_next=True), x1)[2]
        predicted = with_affine(x1, x2, get="ntk") - without(x1, x2, get="ntk")
        measured = _affine_ntk(PreLN(width, relu_next=True), x1, x2, jax.random.PRNGKey(3), 8)
        errors[width] = rel_err(measured, predicted)
    assert errors[2048] < tol("mc") and errors[2048] < errors[32] / 2, errors  # 0.17, 0.024


def test_layernorm_after_a_nonlinearity_is_refused():
    x1, _ = inputs()

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.LayerNorm()(jax.nn.relu(nn.Dense(16)(x))))

    with pytest.raises(UnsupportedOperation, match="not Gaussian in the limit"):
        from_flax(Model(), x1)[2](x1, None, "nngp")
    # a learned scale read by a nonlinearity outside the ReLU family: its gradient correlates
    # with the feature, and only phi'(u) u = phi(u) makes that share a known kernel
    with pytest.raises(UnsupportedOperation, match="outside the ReLU family .* learned scale"):
        from_flax(LinenLN(affine=True), x1)[2](x1, None, "ntk")
