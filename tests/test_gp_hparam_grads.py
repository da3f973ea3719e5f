"""Issue 22 item 1: every layer's hyperparameters may be JAX arrays, and ``jax.grad`` of the
kernels with respect to them, under ``jit`` and ``vmap``, matches central finite differences
in float64 for every layer family (W_std / b_std of Dense and the convolutions, activation
parameters, Scale / OutputScale, LayerNorm's eps, Dropout's rate, BatchNorm's gamma/beta,
SimpleRNN's W_std/U_std/b_std, attention scales).

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


# name: (layers as a function of the hyperparameter vector p, a value of p, inputs)
FAMILIES = {
    "Dense": (lambda p: [stax.Dense(3, p[0], p[1]), stax.Relu(), stax.Dense(1, p[0], p[1])],
              [1.3, 0.3], FC),
    "Dense.standard": (lambda p: [
        stax.Dense(3, p[0], 0.2, parameterization="standard"), stax.Relu(),
        stax.Dense(1, 1., p[1], parameterization="standard")], [1.3, 0.3], FC),
    "Conv": (lambda p: [stax.Conv(3, (2, 2), padding="CIRCULAR", W_std=p[0], b_std=p[1]),
                        stax.Relu(), stax.Conv(1, (2, 2), W_std=p[0], b_std=p[1])],
             [1.2, 0.3], IMG),
    "ConvTranspose": (lambda p: [stax.ConvTranspose(3, (2, 2), (2, 1), "SAME", W_std=p[0],
                                                    b_std=0.1), stax.Relu(),
                                 stax.ConvTranspose(1, (2, 2), W_std=1.0, b_std=p[1])],
                      [1.1, 0.3], IMG),
    "ConvLocal": (lambda p: [stax.ConvLocal(3, (2, 2), W_std=p[0], b_std=0.1), stax.Relu(),
                             stax.ConvLocal(1, (2, 2), W_std=1.0, b_std=p[1])], [1.1, 0.3], IMG),
    "ABRelu": (lambda p: [D(), stax.ABRelu(p[0], p[1]), D()], [-0.3, 0.7], FC),
    "LeakyRelu": (lambda p: [D(), stax.LeakyRelu(p[0]), D()], [0.2], FC),
    "Erf": (lambda p: [D(), stax.Erf(p[0], p[1], p[2]), D()], [1.1, 0.9, 0.2], FC),
    "Gelu": (lambda p: [stax.Dense(3, p[0], 0.1), stax.Gelu(), D()], [1.1], FC),
    "Gabor": (lambda p: [stax.Dense(3, p[0], 0.1), stax.Gabor(), D()], [1.1], FC),
    "Polynomial": (lambda p: [D(), stax.Polynomial([0.5, p[0], p[1]]), D()], [-1.0, 0.3], FC),
    "Sin": (lambda p: [D(), stax.Sin(p[0], p[1], p[2]), D()], [1.2, 0.8, 0.3], FC),
    "Cos": (lambda p: [D(), stax.Cos(p[0], p[1], p[2]), D()], [1.2, 0.9, 0.1], FC),
    "Rbf": (lambda p: [D(), stax.Rbf(p[0]), D()], [0.5], FC),
    "Gaussian": (lambda p: [D(), stax.Gaussian(p[0], p[1]), D()], [1.1, -0.7], FC),
    "Exp": (lambda p: [D(), stax.Exp(p[0], p[1]), D()], [1.1, 0.4], FC),
    "ExpNormalized": (lambda p: [D(), stax.ExpNormalized(p[0], p[1]), D()], [0.8, -1.0], FC),
    "Elu": (lambda p: [D(), stax.Elu(p[0], deg=8), D()], [0.7], FC),
    "Scale": (lambda p: [D(), stax.Relu(), stax.Scale(p[0]), D(), stax.OutputScale(p[1])],
              [0.7, 1.3], FC),
    "LayerNorm.eps": (lambda p: [D(), stax.LayerNorm(eps=p[0]), D()], [0.3], FC),
    # Dropout only changes the variances of an input with itself: x2=None
    "Dropout.rate": (lambda p: [D(), stax.Relu(), stax.Dropout(p[0]), D()], [0.7], (FC[0], None)),
    "SimpleRNN": (lambda p: [stax.SimpleRNN(3, p[0], p[1], p[2]), stax.Flatten(), D()],
                  [1.1, 0.8, 0.3], SEQ),
    # BatchNorm's kernel is over one batch: x2=None
    "BatchNorm.gamma_beta": (lambda p: [D(), stax.BatchNorm(gamma_std=p[0], beta_std=p[1]),
                                        D()], [1.2, 0.4], (np.concatenate(FC), None)),
    "Attention": (lambda p: [D(), stax.GlobalSelfAttention(
        3, 3, 3, 2, W_key_std=p[0], W_value_std=p[1], W_out_std=0.8, b_std=p[2]), D()],
        [1.1, 0.9, 0.3], SEQ),
    "Attention.query_pos_emb": (lambda p: [D(), stax.GlobalSelfAttention(
        3, 3, 3, 2, linear_scaling=False, attention_mechanism="IDENTITY", W_query_std=p[0],
        pos_emb_type="SUM", W_pos_emb_std=p[1]), D()], [1.1, 0.6], SEQ),
}


def _check_against_differences(loss, p0, eps=1e-6):
    """In one compilation: vmapped gradients at p0 and 0.9 p0, and the loss at each point
    shifted by +-eps along each coordinate; each gradient against its central differences."""
    p0 = jnp.asarray(p0, jnp.float64)
    points = jnp.stack([p0, 0.9 * p0])
    shifts = eps * jnp.eye(p0.size)
    steps = jnp.concatenate([points[:, None] + shifts, points[:, None] - shifts], 1)
    g, f = jax.jit(lambda a, b: (jax.vmap(jax.grad(loss))(a), jax.vmap(jax.vmap(loss))(b)))(
        points, steps)
    g, f = np.asarray(g), np.asarray(f)
    fd = (f[:, :p0.size] - f[:, p0.size:]) / (2 * eps)
    assert g.dtype == np.float64 and np.all(np.isfinite(g))
    err = np.abs(g - fd) / np.maximum(1.0, np.abs(fd))
    assert np.all(err < tol("fd")), (g, fd)
    assert not np.allclose(g[0], g[1])  # the vmapped points give their own gradients


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_hyperparameter_gradient_matches_finite_differences(name):
    make, p0, (x1, x2) = FAMILIES[name]
    with x64():
        x1, x2 = jnp.asarray(x1), None if x2 is None else jnp.asarray(x2)

        def loss(p):
            k = stax.serial(*make(p)).kernel_fn(x1, x2, get=("nngp", "ntk"))
            return jnp.sum(k.nngp ** 2) + jnp.sum(jnp.sin(k.ntk))

        _check_against_differences(loss, p0)


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
        _check_against_differences(loss, [1.4, 0.3])


def test_dropout_rate_may_be_traced_and_is_still_checked():
    with pytest.raises(ValueError, match=r"Dropout\(rate=1.5.*keep probability"):
        stax.Dropout(1.5)
    f = jax.jit(lambda r: stax.Dropout(r).kernel_fn(jnp.ones((2, 3)), None, get="nngp")[0, 0])
    assert abs(float(f(0.5)) - 2.0) < 1e-6  # the variance grows by 1 / rate
