"""Any nonlinearity directly after train-mode BatchNorm (`infwidth.stax._batch_norm_mc`):
against the exact ReLU rule, a numpy brute force written with explicit Jacobians, finite
networks, and the identities (copies, dtypes, jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf
from test_batch_norm import _gaussian_draws, _normalised, _rel

from infwidth import stax
from infwidth.empirical import monte_carlo_kernel_fn
from infwidth.stax import _batch_norm_mc as mc


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _inputs(m, seed=0, d=16):
    # d >= m: the centred covariance has full rank m - 1 (the NTK's samples have a finite
    # variance from rank 5 on)
    return np.random.default_rng(seed).standard_normal((m, d))


def _pre(x):
    return stax.Dense(8, W_std=1.3, b_std=0.2).kernel_fn(x, None, ("nngp", "ntk"))


def test_monte_carlo_rule_converges_to_the_exact_relu_rule():
    x = _inputs(12)
    pre = _pre(x)
    errors = {}
    for gamma, beta in ((None, None), (0.8, 0.3)):
        exact = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2),
                            stax.BatchNorm(gamma_std=gamma, beta_std=beta), stax.Relu()
                            ).kernel_fn(x, None, ("nngp", "ntk"))
        for n in (4096, 262_144):
            nngp, ntk = mc.one_batch(pre.nngp, pre.ntk, 1e-12, gamma, beta, jax.nn.relu, n, 0)
            errors[gamma, n] = (_rel(nngp, exact.nngp), _rel(ntk, exact.ntk))
        assert max(errors[gamma, 262_144]) < 0.01, errors
        assert all(a < b for a, b in zip(errors[gamma, 262_144], errors[gamma, 4096])), errors


def _brute_force(c, theta, fn, dfn, g, beta, m1, n=400_000, seed=1):
    """numpy: samples of phi(y) phi(y)^T and of the NTK's integrand (chain rule through an
    explicit Jacobian of the normalisation, gamma's and beta's gradients), for the groups
    [:m1] and [m1:] of h ~ N(0, c), each normalised over itself."""
    h = _gaussian_draws(c, n, seed)
    groups = [_normalised(h[:, :m1]), _normalised(h[:, m1:])] if m1 < len(c) else [
        _normalised(h)] * 2
    (u1, j1), (u2, j2) = groups
    t12 = theta[:m1, m1:] if m1 < len(c) else theta
    p1, p2 = fn(g * u1), fn(g * u2)
    d1, d2 = dfn(g * u1), dfn(g * u2)
    chain = np.einsum("ni,nij,jk,nlk,nl->nil", g * d1, j1, t12, j2, g * d2)
    gamma_term = np.einsum("ni,nj->nij", g * d1 * u1, g * d2 * u2)
    beta_term = beta**2 * np.einsum("ni,nj->nij", d1, d2)
    return np.einsum("ni,nj->nij", p1, p2), chain + gamma_term + beta_term


def _assert_matches(value, samples, n_ours):
    """Within 5 standard errors entrywise, the rule's own error counted as that of
    ``n_ours`` brute-force samples."""
    mean, se = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
    z = np.abs(np.asarray(value) - mean) / (se * np.sqrt(1 + len(samples) / n_ours))
    assert z.max() < 5, z.max()


ACTIVATIONS = {
    "Erf": (stax.Erf(), erf, lambda t: 2 / np.sqrt(np.pi) * np.exp(-t * t)),
    "Tanh": (stax.Tanh(), np.tanh, lambda t: 1 / np.cosh(t) ** 2),
    "Gelu": (stax.Gelu(approximate=False),
             lambda t: 0.5 * t * (1 + erf(t / np.sqrt(2))),
             lambda t: 0.5 * (1 + erf(t / np.sqrt(2))) + t * np.exp(-t * t / 2)
             / np.sqrt(2 * np.pi)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_one_batch_vs_brute_force(name):
    layer, fn, dfn = ACTIVATIONS[name]
    x = _inputs(7, seed=2)
    pre = _pre(x)
    kernel_fn = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2),
                            stax.BatchNorm(gamma_std=0.9, beta_std=0.4, n_samples=131_072),
                            layer).kernel_fn
    k = kernel_fn(x, None, ("nngp", "ntk"))
    nngp_s, ntk_s = _brute_force(np.asarray(pre.nngp), np.asarray(pre.ntk), fn, dfn, 0.9, 0.4,
                                 7, n=200_000)
    _assert_matches(k.nngp, nngp_s, 131_072)
    _assert_matches(k.ntk, ntk_s, 131_072)
    assert _rel(k.nngp, nngp_s.mean(0)) < 0.02 and _rel(k.ntk, ntk_s.mean(0)) < 0.03


def test_two_batches_vs_brute_force_and_copies():
    layer, fn, dfn = ACTIVATIONS["Erf"]
    x1, x2 = _inputs(6, seed=3), _inputs(5, seed=4)
    kernel_fn = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2),
                            stax.BatchNorm(gamma_std=0.9, beta_std=0.4, n_samples=131_072),
                            layer).kernel_fn
    k = kernel_fn(x1, x2, ("nngp", "ntk"), diagonal_batch=False)
    both = np.concatenate([x1, x2])
    pre = _pre(both)
    nngp_s, ntk_s = _brute_force(np.asarray(pre.nngp), np.asarray(pre.ntk), fn, dfn, 0.9, 0.4,
                                 6, n=200_000)
    _assert_matches(k.nngp, nngp_s, 131_072)
    _assert_matches(k.ntk, ntk_s, 131_072)
    # each batch's own kernel is the one-batch rule's; a copy of x1 is x2=None
    alone = kernel_fn(x1, None, ("nngp", "ntk"), diagonal_batch=False)
    cov1 = kernel_fn(x1, x2, "cov1", diagonal_batch=False)
    np.testing.assert_allclose(np.asarray(cov1), np.asarray(alone.nngp), rtol=1e-12, atol=1e-14)
    copy = jax.jit(lambda a, b: kernel_fn(a, b, ("nngp", "ntk"), diagonal_batch=False))(
        x1, x1 + 0)
    none = jax.jit(lambda a: kernel_fn(a, None, ("nngp", "ntk"), diagonal_batch=False))(x1)
    for f in (0, 1):
        np.testing.assert_array_equal(np.asarray(copy[f]), np.asarray(none[f]))


def _net(width, readout=0):
    return stax.serial(stax.Dense(width, W_std=1.5, b_std=0.1),
                       stax.BatchNorm(gamma_std=1.1, beta_std=0.4), stax.Erf(),
                       *([stax.Dense(readout, W_std=1.2, b_std=0.1)] if readout else []))


def test_finite_networks_converge():
    x = _inputs(8, seed=5, d=10)
    exact_nngp = _net(8).kernel_fn(x, None, get="nngp")
    exact_ntk = _net(8, readout=16).kernel_fn(x, None, get="ntk")
    errors = {}
    for width in (256, 2048):
        nngp = monte_carlo_kernel_fn(*_net(width)[:2], jax.random.PRNGKey(2), 2)(x, get="nngp")
        ntk = monte_carlo_kernel_fn(*_net(width, readout=16)[:2], jax.random.PRNGKey(2), 4)(
            x, get="ntk")
        errors[width] = (_rel(nngp, exact_nngp), _rel(ntk, exact_ntk))
    assert max(errors[2048]) <= 0.05, errors
    assert errors[2048][0] < errors[256][0] and errors[2048][1] < errors[256][1], errors


def test_dtypes_jit_symmetry_and_grad():
    x = _inputs(6, seed=6)
    kernel_fn = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2), stax.BatchNorm(gamma_std=1.0),
                            stax.Tanh(), stax.Dense(1)).kernel_fn
    k64 = kernel_fn(x, None)
    k32 = kernel_fn(jnp.asarray(x, jnp.float32), None)
    k_jit = jax.jit(lambda x: kernel_fn(x, None))(x)
    for f in ("nngp", "ntk"):
        v = np.asarray(getattr(k64, f))
        assert getattr(k32, f).dtype == jnp.float32 and np.isfinite(v).all()
        np.testing.assert_allclose(v, v.T, rtol=1e-12, atol=1e-12)
        assert np.linalg.eigvalsh(v).min() > -1e-10 * np.abs(v).max()
        np.testing.assert_allclose(getattr(k32, f), v, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(getattr(k_jit, f), v, rtol=1e-9, atol=1e-11)
    grad = jax.grad(lambda x: kernel_fn(x, None, "ntk").sum())(jnp.asarray(x))
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0


def test_bad_combinations():
    x = _inputs(5)
    with pytest.raises(ValueError, match="Sign after BatchNorm.*jumps"):
        stax.serial(stax.Dense(4), stax.BatchNorm(), stax.Sign()).kernel_fn(x)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="n_samples must be an integer >= 2"):
            stax.BatchNorm(n_samples=bad)
    with pytest.raises(ValueError, match="seed must be an integer"):
        stax.BatchNorm(seed="zero")
