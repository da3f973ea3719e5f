"""Every nonlinearity of issue 3: bad arguments raise errors naming the layer and the argument,
a non-Gaussian input raises the 'put an affine layer' error, and values and gradients (w.r.t.
the inputs, W_std and the activation's own hyperparameter) are finite at identical, collinear
and zero inputs, in float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import x64

from infwidth import stax

# name: (factory taking the hyperparameter h, value of h); h=None when there is none.
LAYERS = {
    "Sign": (lambda h: stax.Sign(), None),
    "Sigmoid_like": (lambda h: stax.Sigmoid_like(), None),
    "Gelu": (lambda h: stax.Gelu(), None),
    "RectifiedMonomial0": (lambda h: stax.RectifiedMonomial(0), None),
    "RectifiedMonomial2": (lambda h: stax.RectifiedMonomial(2), None),
    "Monomial3": (lambda h: stax.Monomial(3), None),
    "Polynomial": (lambda h: stax.Polynomial([0.5, h, 0.3]), -1.0),
    "Hermite2": (lambda h: stax.Hermite(2), None),
    "Sin": (lambda h: stax.Sin(1.0, h, 0.3), 0.8),
    "Cos": (lambda h: stax.Cos(h, 1.0, 0.0), 1.2),
    "Rbf": (lambda h: stax.Rbf(h), 0.5),
    "Gabor": (lambda h: stax.Gabor(), None),
    "Gaussian": (lambda h: stax.Gaussian(1.0, h), -0.7),
    "Exp": (lambda h: stax.Exp(1.0, h), 0.4),
    "ExpNormalized": (lambda h: stax.ExpNormalized(h, -1.0), 0.8),
    "Erf": (lambda h: stax.Erf(h, 1.0, 0.1), 1.1),
    "Elementwise": (lambda h: stax.Elementwise(
        jax.scipy.special.erf,
        lambda c, v1, v2: 2 / jnp.pi * jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * v1) * (1 + 2 * v2))),
        lambda c, v1, v2: 4 / jnp.pi / jnp.sqrt((1 + 2 * v1) * (1 + 2 * v2) - 4 * c**2)), None),
    "ElementwiseNumerical": (lambda h: stax.ElementwiseNumerical(jnp.tanh, deg=8), None),
    "Tanh": (lambda h: stax.Tanh(deg=8), None),
    "Sigmoid": (lambda h: stax.Sigmoid(deg=8), None),
    "Silu": (lambda h: stax.Silu(deg=8), None),
    "Softplus": (lambda h: stax.Softplus(deg=8), None),
    "Elu": (lambda h: stax.Elu(h, deg=8), 0.7),
    "Selu": (lambda h: stax.Selu(deg=8), None),
    "Mish": (lambda h: stax.Mish(deg=8), None),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_needs_gaussian_input(name):
    make, h = LAYERS[name]
    _, _, kernel_fn = stax.serial(stax.Dense(4), stax.Relu(), make(h))
    with pytest.raises(ValueError, match="Put an affine layer such as Dense or Conv before it"):
        kernel_fn(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="not Gaussian"):
        make(h).kernel_fn(jnp.ones((2, 3)))


# Sigmoid, Silu, Softplus and Mish run the same quadrature code as Tanh and Elu; leaving them out
# of the (compile-heavy) gradient test keeps its runtime down.
GRAD_LAYERS = sorted(set(LAYERS) - {"Sigmoid", "Silu", "Softplus", "Mish"})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", GRAD_LAYERS)
def test_finite_values_and_gradients_at_degenerate_inputs(name, dtype):
    """Rows: x, x again (identical), -2x (collinear) and 0 (zero input; bias 0 keeps its
    variance at exactly 0 in the first layer)."""
    make, h0 = LAYERS[name]
    x = np.array([[1.0, 2.0, -1.0], [1.0, 2.0, -1.0], [-2.0, -4.0, 2.0], [0.0, 0.0, 0.0]]) / 2

    def total(x, w_std, h):
        net = stax.serial(stax.Dense(4, w_std, 0.0), make(h), stax.Dense(1, w_std, 0.1))
        k = net.kernel_fn(x, None, get=("nngp", "ntk"))
        return jnp.sum(k.nngp) + jnp.sum(k.ntk)

    with x64() if dtype == "float64" else _Null():
        xj = jnp.asarray(x, dtype)
        w = jnp.asarray(0.9, dtype)
        h = jnp.asarray(0.0 if h0 is None else h0, dtype)
        make_h = (lambda h: h) if h0 is not None else (lambda h: None)
        f = jax.jit(jax.value_and_grad(lambda x, w, h: total(x, w, make_h(h)), argnums=(0, 1, 2)))
        value, (gx, gw, gh) = f(xj, w, h)
        assert value.dtype == jnp.dtype(dtype)
        assert np.isfinite(value) and np.all(np.isfinite(gx)) and np.isfinite(gw)
        assert np.isfinite(gh)
        if h0 is not None and dtype == "float64":  # the hyperparameter gradient is right
            eps = 1e-5
            fd = (f(xj, w, h + eps)[0] - f(xj, w, h - eps)[0]) / (2 * eps)
            assert abs(float(gh) - float(fd)) < 1e-5 * max(1.0, abs(float(fd)))


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("make,err,match", [
    (lambda: stax.Monomial(-1), ValueError, r"Monomial\(degree=-1\): degree must be a non-neg"),
    (lambda: stax.Monomial(2.5), ValueError, r"Monomial\(degree=2.5\)"),
    (lambda: stax.RectifiedMonomial(-2), ValueError, r"RectifiedMonomial\(degree=-2\)"),
    (lambda: stax.Hermite("3"), ValueError, r"Hermite\(degree='3'\)"),
    (lambda: stax.Polynomial(3.0), TypeError, r"Polynomial\(coef=3.0\): coef must be a seq"),
    (lambda: stax.Polynomial(["a"]), TypeError, r"Polynomial\(coef='a'\): coef must be a num"),
    (lambda: stax.Gelu(approximate="yes"), TypeError, r"Gelu\(approximate='yes'\)"),
    (lambda: stax.Sin(a="x"), TypeError, r"Sin\(a='x'\): a must be a number"),
    (lambda: stax.Rbf(gamma=None), TypeError, r"Rbf\(gamma=None\)"),
    (lambda: stax.ExpNormalized(do_clip=1), TypeError, r"ExpNormalized\(do_clip=1\)"),
    (lambda: stax.ElementwiseNumerical(jnp.tanh, deg=0), ValueError,
     r"ElementwiseNumerical\(deg=0\): deg must be a positive integer"),
    (lambda: stax.ElementwiseNumerical(3.0), TypeError, r"fn must be a function"),
    (lambda: stax.Elementwise(), ValueError, r"give the activation fn, its dual kernel"),
    (lambda: stax.Elementwise(jnp.tanh, nngp_fn=1.0), TypeError, r"nngp_fn must be a function"),
    (lambda: stax.Tanh(deg=-3), ValueError, r"Tanh\(deg=-3\)"),
    (lambda: stax.Elu(alpha="a"), TypeError, r"Elu\(alpha='a'\)"),
])
def test_bad_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_elementwise_without_fn_or_nngp_fn():
    x = jnp.ones((2, 3))
    only_kernel = stax.Elementwise(nngp_fn=lambda c, v1, v2: c)
    with pytest.raises(NotImplementedError, match=r"no fn was given"):
        only_kernel.apply_fn((), x)
    assert only_kernel.kernel_fn(stax.Dense(2).kernel_fn(x), get="nngp").shape == (2, 2)
    only_fn = stax.Elementwise(fn=jnp.tanh)
    assert only_fn.apply_fn((), x).shape == (2, 3)
    with pytest.raises(NotImplementedError, match=r"no nngp_fn was given"):
        stax.serial(stax.Dense(2), only_fn).kernel_fn(x)
