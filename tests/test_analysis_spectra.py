"""Spectra, effective rank and learning curves (infwidth.analysis.spectra)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tol, x64

from infwidth import stax
from infwidth.analysis import (
    effective_rank,
    eigendecomposition,
    learning_curve_from_spectrum,
    measured_learning_curve,
    predicted_learning_curve,
)


def rotated(spectrum, key):
    """A symmetric matrix with the given spectrum and random eigenvectors."""
    q, _ = jnp.linalg.qr(jax.random.normal(key, (len(spectrum), len(spectrum))))
    return (q * jnp.asarray(spectrum)) @ q.T


def test_eigendecomposition_reconstructs_the_kernel():
    with x64():
        spectrum = jnp.array([5.0, 2.0, 1.0, 0.5, 0.0])
        k = rotated(spectrum, jax.random.PRNGKey(0))
        values, vectors = eigendecomposition(k)
        np.testing.assert_allclose(values, spectrum, atol=tol("exact", np.float64))
        np.testing.assert_allclose((vectors * values) @ vectors.T, k, atol=tol("exact", np.float64))
        np.testing.assert_allclose(vectors.T @ vectors, np.eye(5), atol=tol("exact", np.float64))


def test_effective_rank_of_known_spectra():
    with x64():
        exact = tol("exact", np.float64)
        k = rotated(jnp.array([2.0] * 7 + [0.0] * 5), jax.random.PRNGKey(1))
        assert float(effective_rank(k)) == pytest.approx(7.0, rel=1e-9)
        assert float(effective_rank(k, "participation")) == pytest.approx(7.0, rel=1e-9)
        # geometric spectrum rho^k, k = 0, 1, ...: entropy -log(1 - rho) - rho log(rho) / (1 - rho)
        # and participation ratio (1 + rho) / (1 - rho)
        rho = 0.9
        geometric = rho ** jnp.arange(400.0)
        h = -np.log(1 - rho) - rho * np.log(rho) / (1 - rho)
        assert float(effective_rank(geometric)) == pytest.approx(np.exp(h), rel=exact)
        assert float(effective_rank(geometric, "participation")) == pytest.approx(
            (1 + rho) / (1 - rho), rel=exact)
    # faster decay, lower effective rank: a deep ReLU NNGP vs the linear kernel's flat spectrum
    x = jax.random.normal(jax.random.PRNGKey(2), (64, 64))
    linear = x @ x.T / 64
    relu = stax.serial(*([stax.Dense(1), stax.Relu()] * 3), stax.Dense(1))[2](x, None, "nngp")
    assert float(effective_rank(relu)) < 0.5 * float(effective_rank(linear))


def test_learning_curve_closed_form_for_a_flat_spectrum():
    """M equal eigenvalues, ridgeless: E_g = (1 - p / M) * sum a^2 for p < M, 0 beyond; with
    label noise the variance term sigma^2 p / (M - p) (linear regression in M dimensions)."""
    with x64():
        m = 50
        a = jax.random.normal(jax.random.PRNGKey(3), (m,))
        p = np.array([5, 20, 40, 60])
        lc = learning_curve_from_spectrum(jnp.full(m, 1.0 / m), a, p)
        expected = np.maximum(1 - p / m, 0) * float(jnp.sum(a**2))
        np.testing.assert_allclose(lc.error, expected, rtol=1e-9, atol=1e-12)
        noisy = learning_curve_from_spectrum(jnp.full(m, 1.0 / m), a, p[:3], noise_var=0.3)
        np.testing.assert_allclose(noisy.error - lc.error[:3], 0.3 * p[:3] / (m - p[:3]),
                                   rtol=1e-9)


def pool():
    x = jax.random.normal(jax.random.PRNGKey(4), (500, 5))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True) * jnp.sqrt(5.0)
    y = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + 0.3 * jnp.sign(x[:, 3])
    return x, y


@pytest.mark.parametrize("arch", ["relu-ntk", "erf-nngp"])
def test_predicted_learning_curve_matches_kernel_regression(arch):
    """Theory vs kernel regression averaged over 40 training sets drawn from a pool of 500
    inputs (the data distribution), for two kernels, ridgeless and with ridge + label noise.
    Stated tolerance: 15% of the prediction plus 3 standard errors of the measurement (the
    theory is exact as p, N -> infinity; at p = 20..80 its finite-size error is ~5-12%)."""
    with x64():
        x, y = pool()
        if arch == "relu-ntk":
            k = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))[2](x, None, "ntk")
        else:
            k = stax.serial(*([stax.Dense(1, W_std=1.5, b_std=0.1), stax.Erf()] * 3),
                            stax.Dense(1))[2](x, None, "nngp")
        sizes = [20, 40, 80]
        for ridge, noise_var in [(0.0, 0.0), (1e-2, 0.1)]:
            theory = predicted_learning_curve(k, y, sizes, ridge=ridge, noise_var=noise_var)
            measured = measured_learning_curve(k, y, sizes, n_draws=40, ridge=ridge,
                                               noise_var=noise_var, key=jax.random.PRNGKey(5))
            gap = np.abs(np.asarray(measured.error) - np.asarray(theory.error))
            assert (gap < 0.15 * np.asarray(theory.error) + 3 * np.asarray(measured.stderr)).all()
            assert (np.diff(np.asarray(theory.error)) < 0).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        eigendecomposition(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="not symmetric"):
        effective_rank(jnp.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="kind must be"):
        effective_rank(jnp.eye(2), kind="trace")
    with pytest.raises(ValueError, match="targets"):
        predicted_learning_curve(jnp.eye(3), jnp.ones(4), [1])
    with pytest.raises(ValueError, match="between 1 and N - 1"):
        measured_learning_curve(jnp.eye(3), jnp.ones(3), [3])
    with pytest.raises(ValueError, match="non-negative"):
        learning_curve_from_spectrum([1.0], [1.0], [1], ridge=-1.0)
