"""Closed-form activations of issue 3 checked in float64 against things computed independently:
two-dimensional Gauss-Hermite quadrature of the same function (`ElementwiseNumerical`, deg=25,
relative error < 1e-3), the arc-cosine formulas of Cho & Saul 2009 in numpy for the
non-smooth ones, and known values of the quadrature activations (SELU's fixed point)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, x64
from jax.scipy.special import erf

from infwidth import stax


def _erf_nngp(cov12, var1, var2):
    return 2 / jnp.pi * jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2)))


# name: (closed-form layer, the same function for quadrature)
SMOOTH = {
    "erf": (lambda: stax.Erf(1.2, 0.7, 0.3), lambda x: 1.2 * erf(0.7 * x) + 0.3),
    "sigmoid_like": (stax.Sigmoid_like, lambda x: 0.5 * erf(x / 2.4020563531719796) + 0.5),
    "gelu": (stax.Gelu, lambda x: jax.nn.gelu(x, approximate=False)),
    "gaussian": (lambda: stax.Gaussian(1.2, -0.6), lambda x: 1.2 * jnp.exp(-0.6 * x**2)),
    "exp": (lambda: stax.Exp(0.8, 0.4), lambda x: 0.8 * jnp.exp(0.4 * x)),
    "rbf": (lambda: stax.Rbf(0.7), lambda x: 2**0.5 * jnp.sin(1.4**0.5 * x + np.pi / 4)),
    "sin": (lambda: stax.Sin(1.3, 0.8, 0.4), lambda x: 1.3 * jnp.sin(0.8 * x + 0.4)),
    "cos": (lambda: stax.Cos(0.9, 1.1, -0.2), lambda x: 0.9 * jnp.cos(1.1 * x - 0.2)),
    "gabor": (stax.Gabor, lambda x: jnp.exp(-(x**2)) * jnp.sin(x)),
    "polynomial": (lambda: stax.Polynomial([0.3, -1.0, 0.5, 0.2]),
                   lambda x: 0.3 - x + 0.5 * x**2 + 0.2 * x**3),
    "hermite4": (lambda: stax.Hermite(4), lambda x: (x**4 - 6 * x**2 + 3) / 24**0.5),
    "rectified3": (lambda: stax.RectifiedMonomial(3), lambda x: jnp.where(x >= 0, x**3, 0.0)),
    "rectified4": (lambda: stax.RectifiedMonomial(4), lambda x: jnp.where(x >= 0, x**4, 0.0)),
    "elementwise_erf": (lambda: stax.Elementwise(erf, _erf_nngp), erf),
}
for _d in range(6):
    SMOOTH[f"monomial{_d}"] = (lambda d=_d: stax.Monomial(d), lambda x, d=_d: x**d)


def _data(unit=False):
    rng = np.random.RandomState(0)
    x1 = rng.randn(4, 5)
    x2 = np.concatenate([x1[:1], -0.5 * x1[1:2], rng.randn(2, 5)])
    if unit:  # unit mean square, so Dense(W_std=1) gives unit variances (Hermite's convention)
        x1, x2 = (x / np.sqrt((x**2).mean(1, keepdims=True)) for x in (x1, x2))
    return x1, x2


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_closed_form_matches_quadrature(name):
    layer, fn = SMOOTH[name]
    hermite = name.startswith("hermite")
    W_std, b_std = (1.0, None) if hermite else (0.8, 0.2)  # variances <= 0.7
    x1, x2 = _data(unit=True)
    with x64():
        def net(act):
            return stax.serial(stax.Dense(16, W_std, b_std), act, stax.Dense(16, W_std, b_std),
                               act, stax.Dense(1, 1.1, 0.1)).kernel_fn

        exact, quad = net(layer()), net(stax.ElementwiseNumerical(fn, deg=25))
        for second in (x2, None):
            k, q = exact(x1, second), quad(x1, second)
            assert_close(k.nngp, q.nngp, 1e-3, "nngp")
            assert_close(k.ntk, q.ntk, 1e-3, "ntk")
            assert_close(k.cov1, q.cov1, 1e-3, "cov1")


def _arccos_kernel(n):
    """E[Theta(u) u^n Theta(v) v^n] for unit-variance inputs, from J_n of Cho & Saul 2009."""
    J = {0: lambda t: np.pi - t,
         1: lambda t: np.sin(t) + (np.pi - t) * np.cos(t),
         2: lambda t: 3 * np.sin(t) * np.cos(t) + (np.pi - t) * (1 + 2 * np.cos(t) ** 2)}[n]
    return lambda corr: J(np.arccos(np.clip(corr, -1, 1))) / (2 * np.pi)


@pytest.mark.parametrize("layer,nngp,dnngp", [
    (stax.Sign, lambda c: 2 / np.pi * np.arcsin(np.clip(c, -1, 1)), lambda c: 0 * c),
    (lambda: stax.RectifiedMonomial(0), _arccos_kernel(0), lambda c: 0 * c),
    (lambda: stax.RectifiedMonomial(1), _arccos_kernel(1), _arccos_kernel(0)),
    (lambda: stax.RectifiedMonomial(2), _arccos_kernel(2), lambda c: 4 * _arccos_kernel(1)(c)),
], ids=["sign", "rectified0", "rectified1", "rectified2"])
def test_non_smooth_match_arc_cosine_formulas(layer, nngp, dnngp):
    """One layer on unit-variance inputs: nngp = k(corr), ntk = k'(corr) * corr (the input NTK
    of Dense is its NNGP), with k from numpy's arccos / arcsin."""
    x1, x2 = _data(unit=True)
    corr = x1 @ x2.T / x1.shape[1]
    with x64():
        k = stax.serial(stax.Dense(1), layer()).kernel_fn(jnp.asarray(x1), jnp.asarray(x2))
    assert_close(k.nngp, nngp(corr), 1e-9, "nngp")
    expected_ntk = dnngp(corr) * corr
    if np.abs(expected_ntk).max() == 0:
        assert np.abs(np.asarray(k.ntk)).max() == 0
    else:
        assert_close(k.ntk, expected_ntk, 1e-9, "ntk")


def test_selu_fixed_point():
    """SELU's constants make mean 0 and variance 1 a fixed point (Klambauer et al. 2017)."""
    with x64():
        x = jnp.ones((1, 3))
        k = stax.serial(stax.Dense(1), stax.Selu()).kernel_fn(x, get="cov1")
    assert abs(float(k[0]) - 1.0) < 3e-3  # the quadrature error stated in Selu's docstring


@pytest.mark.parametrize("layer,fn", [(stax.Tanh, jnp.tanh), (stax.Softplus, jax.nn.softplus),
                                      (stax.Mish, lambda x: x * jnp.tanh(jax.nn.softplus(x)))])
def test_quadrature_activations_converge(layer, fn):
    """deg=25 agrees with deg=200 to the accuracy stated in the docstrings (variances <= 1)."""
    x1, x2 = _data(unit=True)
    with x64():
        def net(act):
            return stax.serial(stax.Dense(8, 0.9, 0.1), act, stax.Dense(1)).kernel_fn

        k, ref = net(layer())(x1, x2), net(stax.ElementwiseNumerical(fn, deg=200))(x1, x2)
    assert_close(k.nngp, ref.nngp, 1e-4, "nngp")
    assert_close(k.ntk, ref.ntk, 1e-3, "ntk")


def test_elementwise_autodiff_derivative_and_given_derivative():
    """With d_nngp_fn omitted, the NTK map is autodiff of nngp_fn; a given d_nngp_fn is used:
    with d_nngp_fn = 2 the NTK is the output NNGP plus 2 times the NTK (= NNGP) after Dense."""
    x1, x2 = _data()
    with x64():
        def ntk(act):
            return stax.serial(stax.Dense(4, 1.3), act, stax.Dense(1)).kernel_fn(x1, x2, "ntk")

        exact = ntk(stax.Erf())
        assert_close(ntk(stax.Elementwise(erf, _erf_nngp)), exact, 1e-10, "autodiff")
        doubled = ntk(stax.Elementwise(erf, _erf_nngp, lambda c, v1, v2: 0.0 * c + 2.0))
        nngp_in = 1.3**2 * x1 @ x2.T / x1.shape[1]
        assert_close(doubled, stax.serial(stax.Dense(4, 1.3), stax.Erf(), stax.Dense(1)).kernel_fn(
            x1, x2, "nngp") + 2.0 * nngp_in, 1e-10, "given d_nngp_fn")
