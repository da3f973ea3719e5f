"""Kernel-target alignment and architecture ranking (infwidth.analysis.alignment)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tol, x64

from infwidth import stax
from infwidth.analysis import kernel_alignment, kernel_target_alignment, rank_architectures

ARCHITECTURES = {
    "linear": stax.Dense(1),
    "relu-1": stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1)),
    "relu-4": stax.serial(*([stax.Dense(1), stax.Relu()] * 4), stax.Dense(1)),
    "erf-chaotic": stax.serial(*([stax.Dense(1, W_std=3.0, b_std=0.1), stax.Erf()] * 3),
                               stax.Dense(1)),
}
N_TRAIN = 200


def sphere(key, n, d):
    x = jax.random.normal(key, (n, d))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True) * jnp.sqrt(d)


def regression_error(kernel, y):
    """Relative test error of near-ridgeless kernel regression, first N_TRAIN points train."""
    k_tr = kernel[:N_TRAIN, :N_TRAIN]
    ridge = 1e-6 * jnp.trace(k_tr) / N_TRAIN
    alpha = jnp.linalg.solve(k_tr + ridge * jnp.eye(N_TRAIN), y[:N_TRAIN])
    pred = kernel[N_TRAIN:, :N_TRAIN] @ alpha
    return float(jnp.mean((pred - y[N_TRAIN:]) ** 2) / jnp.mean(y[N_TRAIN:] ** 2))


def test_alignment_values():
    k = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    y = jnp.array([1.0, -1.0])
    # <K, y y^T> = 2, ||K|| = sqrt(10), ||y y^T|| = 2
    assert float(kernel_target_alignment(k, y)) == pytest.approx(1 / np.sqrt(10),
                                                                 rel=tol("exact"))
    assert float(kernel_alignment(k, 5 * k)) == pytest.approx(1.0, rel=tol("exact"))
    # centring: a constant offset of the kernel or of the targets does not count
    with x64():
        x = jax.random.normal(jax.random.PRNGKey(0), (30, 3))
        k = x @ x.T + (x**2) @ (x**2).T
        y = x[:, 0] + x[:, 1] ** 2
        base = float(kernel_target_alignment(k, y, centered=True))
        assert float(kernel_target_alignment(k + 7.0, y + 3.0, centered=True)) == pytest.approx(
            base, rel=tol("exact", np.float64))
        assert float(kernel_target_alignment(k + 7.0, y + 3.0)) != pytest.approx(base, rel=0.01)
        # multi-output targets: Y Y^T is the sum over outputs
        two = jnp.stack([y, x[:, 2]], 1)
        expected = jnp.vdot(k, two @ two.T) / (jnp.linalg.norm(k) * jnp.linalg.norm(two @ two.T))
        assert float(kernel_target_alignment(k, two)) == pytest.approx(float(expected),
                                                                       rel=tol("exact", np.float64))


def test_ranking_agrees_with_kernel_regression_on_a_linear_task():
    """A linear target: alignment ranks linear > shallow ReLU > deep ReLU > chaotic erf, and the
    test error of kernel regression with each NTK increases in the same order."""
    with x64():
        x = sphere(jax.random.PRNGKey(1), 2 * N_TRAIN, 8)
        y = x[:, 0]
        ranking = rank_architectures(ARCHITECTURES, x[:N_TRAIN], y[:N_TRAIN], get="ntk")
        errors = {name: regression_error(arch[2](x, None, "ntk"), y)
                  for name, arch in ARCHITECTURES.items()}
    assert ranking[0].name == "linear"
    assert [r.name for r in ranking] == sorted(errors, key=errors.get)
    assert all(a.alignment > b.alignment for a, b in zip(ranking, ranking[1:]))


@pytest.mark.parametrize("source", ["relu-1", "relu-4", "erf-chaotic"])
def test_ranking_picks_the_kernel_the_targets_were_drawn_from(source):
    """Targets drawn from the Gaussian process of one architecture's NTK: alignment picks that
    architecture, and its kernel regression has the smallest test error (the claim holds for
    the best architecture; the order of the others need not agree, see below)."""
    with x64():
        x = sphere(jax.random.PRNGKey(2), 2 * N_TRAIN, 8)
        k = ARCHITECTURES[source][2](x, None, "ntk")
        chol = jnp.linalg.cholesky(k + 1e-8 * jnp.trace(k) / len(k) * jnp.eye(len(k)))
        y = chol @ jax.random.normal(jax.random.PRNGKey(3), (len(k), 4))
        ranking = rank_architectures(ARCHITECTURES, x[:N_TRAIN], y[:N_TRAIN])
        errors = {name: regression_error(arch[2](x, None, "ntk"), y)
                  for name, arch in ARCHITECTURES.items()}
    assert ranking[0].name == source
    assert min(errors, key=errors.get) == source


def test_where_the_ranking_fails():
    """Two measured failures (seed claim 7 holds only as stated above). (a) Beyond the top:
    targets from relu-4's GP: alignment ranks erf-chaotic second, but its test error is more
    than twice relu-1's. (b) A quadratic target x0 x1 (no GP draw): alignment puts relu-4 first,
    while relu-1's kernel regression has a >10x smaller test error."""
    with x64():
        x = sphere(jax.random.PRNGKey(2), 2 * N_TRAIN, 8)
        k = ARCHITECTURES["relu-4"][2](x, None, "ntk")
        chol = jnp.linalg.cholesky(k + 1e-8 * jnp.trace(k) / len(k) * jnp.eye(len(k)))
        y = chol @ jax.random.normal(jax.random.PRNGKey(3), (len(k), 4))
        kernels = {name: arch[2](x, None, "ntk") for name, arch in ARCHITECTURES.items()}
        ranking = [r.name for r in rank_architectures(ARCHITECTURES, x[:N_TRAIN], y[:N_TRAIN])]
        errors = {name: regression_error(kk, y) for name, kk in kernels.items()}
        assert ranking[:2] == ["relu-4", "erf-chaotic"]
        assert errors["erf-chaotic"] > 2 * errors["relu-1"]
        xq = sphere(jax.random.PRNGKey(1), 2 * N_TRAIN, 8)
        yq = xq[:, 0] * xq[:, 1]
        ranking = rank_architectures(ARCHITECTURES, xq[:N_TRAIN], yq[:N_TRAIN])
        errors = {name: regression_error(arch[2](xq, None, "ntk"), yq)
                  for name, arch in ARCHITECTURES.items()}
    assert ranking[0].name == "relu-4"
    assert errors["relu-1"] < errors["relu-4"] / 10, errors


def test_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        kernel_target_alignment(jnp.ones((3, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="targets must have shape"):
        kernel_target_alignment(jnp.eye(3), jnp.ones(4))
    with pytest.raises(ValueError, match="same inputs"):
        kernel_alignment(jnp.eye(3), jnp.eye(2))
    with pytest.raises(ValueError, match="get must be 'ntk' or 'nngp'"):
        rank_architectures(ARCHITECTURES, jnp.ones((3, 2)), jnp.ones(3), get="cov1")
    with pytest.raises(TypeError, match="not a layer"):
        rank_architectures({"bad": 3}, jnp.ones((3, 2)), jnp.ones(3))
