"""Issue 22 item 1: every layer's hyperparameters may be JAX arrays, and ``jax.grad`` of the
kernels with respect to them, under ``jit`` and ``vmap``, matches central finite differences
in float64 for every layer family (W_std / b_std of Dense and the convolutions, activation
parameters, Scale / OutputScale, LayerNorm's eps, Dropout's rate, attention scales).

Finite differences are taken on ``kernel_fn(x1, x2)`` with distinct ``x1`` and ``x2``: the
diagonal of ``kernel_fn(x1, None)`` carries correlations of exactly 1, where the arc-cosine
formulas are correct but not smooth to the last bit, and a difference quotient with a step of
1e-6 would amplify that rounding (the autodiff gradient there is right)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tol, x64

from infwidth import stax

_rng = np.random.RandomState(0)
FC = (_rng.randn(3, 3), _rng.randn(2, 3))
SEQ = (_rng.randn(2, 4, 2), _rng.randn(3, 4, 2))
IMG = (_rng.randn(2, 4, 3, 2), _rng.randn(1, 4, 3, 2))


def D():
    return stax.Dense(3, 1.3, 0.2)


# name: (layers as a function of the hyperparameter h, a value of h, inputs)
FAMILIES = {
    "Dense.W_std": (lambda h: [stax.Dense(3, h, 0.2), stax.Relu(), stax.Dense(1, h, 0.1)], 1.3, FC),
    "Dense.b_std": (lambda h: [stax.Dense(3, 1.2, h), stax.Relu(), stax.Dense(1, 1., h)], 0.3, FC),
    "Dense.standard": (lambda h: [stax.Dense(3, h, 0.2, parameterization="standard"),
                                  stax.Relu(), stax.Dense(1, 1., h, parameterization="standard")],
                       1.3, FC),
    "Conv.W_std": (lambda h: [stax.Conv(3, (2, 2), padding="SAME", W_std=h, b_std=0.1),
                              stax.Relu(), stax.Conv(1, (2, 2), W_std=h, b_std=0.2)], 1.2, IMG),
    "Conv.b_std": (lambda h: [stax.Conv(3, (2, 2), padding="CIRCULAR", W_std=1.1, b_std=h),
                              stax.Relu(), stax.Conv(1, (2, 2), W_std=1., b_std=h)], 0.3, IMG),
    "ConvTranspose": (lambda h: [stax.ConvTranspose(3, (2, 2), (2, 1), "SAME", W_std=h,
                                                    b_std=0.1), stax.Relu(),
                                 stax.ConvTranspose(1, (2, 2), W_std=1.0, b_std=h)], 1.1, IMG),
    "ConvLocal": (lambda h: [stax.ConvLocal(3, (2, 2), W_std=h, b_std=0.1), stax.Relu(),
                             stax.ConvLocal(1, (2, 2), W_std=1.0, b_std=h)], 1.1, IMG),
    "ABRelu.a": (lambda h: [D(), stax.ABRelu(h, 0.5), D()], -0.3, FC),
    "ABRelu.b": (lambda h: [D(), stax.ABRelu(-0.2, h), D()], 0.7, FC),
    "LeakyRelu": (lambda h: [D(), stax.LeakyRelu(h), D()], 0.2, FC),
    "Erf.a": (lambda h: [D(), stax.Erf(h, 1., 0.1), D()], 1.1, FC),
    "Erf.b": (lambda h: [D(), stax.Erf(1., h, 0.1), D()], 0.9, FC),
    "Erf.c": (lambda h: [D(), stax.Erf(1., 1., h), D()], 0.2, FC),
    "Gelu": (lambda h: [stax.Dense(3, h, 0.1), stax.Gelu(), D()], 1.1, FC),
    "Gabor": (lambda h: [stax.Dense(3, h, 0.1), stax.Gabor(), D()], 1.1, FC),
    "Polynomial": (lambda h: [D(), stax.Polynomial([0.5, h, 0.3]), D()], -1.0, FC),
    "Sin.a": (lambda h: [D(), stax.Sin(h, 0.8, 0.3), D()], 1.2, FC),
    "Sin.b": (lambda h: [D(), stax.Sin(1.0, h, 0.3), D()], 0.8, FC),
    "Sin.c": (lambda h: [D(), stax.Sin(1.0, 0.8, h), D()], 0.3, FC),
    "Cos.a": (lambda h: [D(), stax.Cos(h, 1.0, 0.0), D()], 1.2, FC),
    "Rbf": (lambda h: [D(), stax.Rbf(h), D()], 0.5, FC),
    "Gaussian.a": (lambda h: [D(), stax.Gaussian(h, -0.7), D()], 1.1, FC),
    "Gaussian.b": (lambda h: [D(), stax.Gaussian(1.0, h), D()], -0.7, FC),
    "Exp.a": (lambda h: [D(), stax.Exp(h, 0.4), D()], 1.1, FC),
    "Exp.b": (lambda h: [D(), stax.Exp(1.0, h), D()], 0.4, FC),
    "ExpNormalized.gamma": (lambda h: [D(), stax.ExpNormalized(h, -1.0), D()], 0.8, FC),
    "ExpNormalized.shift": (lambda h: [D(), stax.ExpNormalized(0.8, h), D()], -1.0, FC),
    "Elu": (lambda h: [D(), stax.Elu(h, deg=8), D()], 0.7, FC),
    "Scale": (lambda h: [D(), stax.Relu(), stax.Scale(h), D()], 0.7, FC),
    "OutputScale": (lambda h: [D(), stax.Relu(), D(), stax.OutputScale(h)], 0.7, FC),
    "LayerNorm.eps": (lambda h: [D(), stax.LayerNorm(eps=h), D()], 0.3, FC),
    "Dropout.rate": (lambda h: [D(), stax.Relu(), stax.Dropout(h), D()], 0.7, FC),
    "Attention.W_key_std": (lambda h: [D(), stax.GlobalSelfAttention(3, 3, 3, 2, W_key_std=h),
                                       D()], 1.1, SEQ),
    "Attention.W_query_std": (lambda h: [D(), stax.GlobalSelfAttention(
        3, 3, 3, 2, linear_scaling=False, attention_mechanism="IDENTITY", W_query_std=h), D()],
        1.1, SEQ),
    "Attention.W_value_std": (lambda h: [D(), stax.GlobalSelfAttention(
        3, 3, 3, 2, W_value_std=h, W_out_std=0.8), D()], 1.1, SEQ),
    "Attention.b_std": (lambda h: [D(), stax.GlobalSelfAttention(3, 3, 3, 2, b_std=h), D()],
                        0.3, SEQ),
    "Attention.W_pos_emb_std": (lambda h: [D(), stax.GlobalSelfAttention(
        3, 3, 3, 2, pos_emb_type="SUM", W_pos_emb_std=h), D()], 0.6, SEQ),
}


def _grads_and_differences(loss, h0, eps=1e-6):
    """One compilation: vmapped gradients at (h0, 1.1 h0) and the loss at h0 +- eps."""
    hs = jnp.array([h0, 1.1 * h0])
    steps = jnp.array([h0 + eps, h0 - eps])
    g, f = jax.jit(lambda a, b: (jax.vmap(jax.grad(loss))(a), jax.vmap(loss)(b)))(hs, steps)
    return np.asarray(g), float((f[0] - f[1]) / (2 * eps))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_hyperparameter_gradient_matches_finite_differences(name):
    make, h0, (x1, x2) = FAMILIES[name]
    with x64():
        x1, x2 = jnp.asarray(x1), jnp.asarray(x2)

        def loss(h):
            k = stax.serial(*make(h)).kernel_fn(x1, x2, get=("nngp", "ntk"))
            return jnp.sum(k.nngp ** 2) + jnp.sum(jnp.sin(k.ntk))

        g, fd = _grads_and_differences(loss, h0)
        assert g.dtype == np.float64 and np.all(np.isfinite(g))
        assert abs(g[0] - fd) < tol("fd") * max(1.0, abs(fd)), (g[0], fd)
        # the second vmapped point is a different gradient, not a copy of the first
        g1 = float(jax.grad(loss)(1.1 * h0))
        assert abs(g[1] - g1) < 1e-10 * max(1.0, abs(g1))


def test_gradient_through_deep_cnn_in_W_std_and_b_std():
    """A depth-4 CNN (SAME convolutions, ReLU, average pooling, Flatten, Dense): the gradient of
    its NNGP and NTK in (W_std, b_std), shared by every layer, against finite differences."""
    x1, x2 = (jnp.asarray(_rng.randn(2, 5, 5, 2)), jnp.asarray(_rng.randn(2, 5, 5, 2)))

    def loss(p):
        w, b = p[0], p[1]
        layers = []
        for _ in range(3):
            layers += [stax.Conv(4, (3, 3), padding="SAME", W_std=w, b_std=b), stax.Relu()]
        net = stax.serial(*layers, stax.AvgPool((2, 2)), stax.Flatten(), stax.Dense(1, w, b))
        k = net.kernel_fn(x1, x2, get=("nngp", "ntk"))
        return jnp.sum(jnp.log(k.nngp ** 2 + 1.0)) + jnp.sum(k.ntk)

    with x64():
        x1, x2 = x1.astype(jnp.float64), x2.astype(jnp.float64)
        p0 = jnp.array([1.4, 0.3])
        ps = jnp.stack([p0, p0 * 0.9])
        g = jax.jit(jax.vmap(jax.grad(loss)))(ps)
        f = jax.jit(loss)
        eps = 1e-6
        for i in range(2):
            e = jnp.zeros(2).at[i].set(eps)
            fd = float((f(p0 + e) - f(p0 - e)) / (2 * eps))
            assert abs(float(g[0, i]) - fd) < tol("fd") * max(1.0, abs(fd)), (i, g[0], fd)
        assert not np.allclose(g[0], g[1])  # the two vmapped points differ


def test_dropout_rate_may_be_traced_and_is_still_checked():
    with pytest.raises(ValueError, match=r"Dropout\(rate=1.5.*keep probability"):
        stax.Dropout(1.5)
    f = jax.jit(lambda r: stax.Dropout(r).kernel_fn(jnp.ones((2, 3)), None, get="nngp")[0, 0])
    assert abs(float(f(0.5)) - 2.0) < 1e-6  # the variance grows by 1 / rate
