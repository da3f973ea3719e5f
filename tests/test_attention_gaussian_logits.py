"""`GlobalSelfAttention(..., linear_scaling=False)` with softmax, relu and abs attention: the
kernel over Gaussian logits (infwidth/stax/attention_gaussian_logits.py), checked against an
independent float64 sampler of the logits' Kronecker covariance, the closed form of the
identity mechanism, and Monte Carlo of finite networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import x64

import infwidth
from infwidth import stax
from infwidth.stax.attention_gaussian_logits import _elementwise_pair

P, C = 3, 4


def _inputs(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, P, C))


def _input_cov(x):
    return np.einsum("apc,bqc->abpq", x, x) / x.shape[-1]  # the raw-input kernel of stax


def _kron_logits(K, a, b, qk, n, rng):
    """Draws of the logits of inputs a and b from their covariance written out entry by entry,
    Cov(G_a[p, q], G_b[p', q']) = qk**2 K[a, b][p, p'] K[a, b][q, q'] (Hron et al. 2020)."""
    idx = [(i, p, q) for i in (a, b) for p in range(P) for q in range(P)]
    cov = np.array([[qk**2 * K[i, j, p, pp] * K[i, j, q, qq] for (j, pp, qq) in idx]
                    for (i, p, q) in idx])
    w, u = np.linalg.eigh(cov)
    g = rng.normal(size=(n, len(idx))) @ (u * np.sqrt(np.clip(w, 0, None))).T
    return g[:, :P * P].reshape(n, P, P), g[:, P * P:].reshape(n, P, P)


def _softmax(g):
    e = np.exp(g - g.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


MECHANISM_FNS = {"SOFTMAX": _softmax, "RELU": lambda g: np.maximum(g, 0), "ABS": np.abs}


def _sampled_nngp(mechanism, K, a, b, qk, ov, n=100_000, seed=1):
    """(mean, standard error) of ov**2 E[A_a V A_b^T], V = K[a, b], by direct sampling."""
    ga, gb = _kron_logits(K, a, b, qk, n, np.random.default_rng(seed))
    fn = MECHANISM_FNS[mechanism]
    vals = ov**2 * np.einsum("spq,qr,sur->spu", fn(ga), K[a, b], fn(gb))
    return vals.mean(0), vals.std(0) / np.sqrt(n), vals.std(0)


@pytest.mark.parametrize("mechanism", ["RELU", "ABS", "SOFTMAX"])
def test_nngp_matches_an_independent_sampler_of_the_logits(mechanism):
    qk, ov, n_rule = 1.3, 1.2, 8192
    x = _inputs()
    with x64():
        kernel_fn = stax.GlobalSelfAttention(
            8, 8, 8, 1, linear_scaling=False, W_query_std=qk, W_value_std=ov,
            attention_mechanism=mechanism, n_samples=n_rule)[2]
        k = np.asarray(kernel_fn(jnp.asarray(x), None, "nngp", diagonal_spatial=False))
    K = _input_cov(x)
    for a, b in ((0, 1), (2, 2)):
        mean, se, sd = _sampled_nngp(mechanism, K, a, b, qk, ov)
        # RELU and ABS are exact (the arc-cosine kernels); SOFTMAX adds its own Monte Carlo
        # error, that of n_rule draws of the same integrand
        se_rule = sd / np.sqrt(n_rule) if mechanism == "SOFTMAX" else 0.0
        bound = 5 * np.sqrt(se**2 + se_rule**2) + 1e-12
        assert (np.abs(k[a, b] - mean) <= bound).all(), (mechanism, a, b, k[a, b], mean, bound)


def test_the_general_rule_reproduces_the_identity_closed_form():
    """The NTK formula of the Gaussian-logit rule, run with the identity as the mechanism
    (dual kernel cov12, derivative kernel 1), against the closed form of Hron et al. that
    GlobalSelfAttention(attention_mechanism='IDENTITY') implements (as neural-tangents)."""
    qk, ov = 1.3, 0.9
    x = _inputs(2)
    with x64():
        net = stax.serial(stax.Dense(5, 1.2, 0.3), stax.GlobalSelfAttention(
            8, 8, 8, 1, linear_scaling=False, W_query_std=qk, W_value_std=ov,
            attention_mechanism="IDENTITY"))
        exact = net.kernel_fn(jnp.asarray(x), None, ("nngp", "ntk"), diagonal_spatial=False)
        k_in = stax.Dense(5, 1.2, 0.3)[2](jnp.asarray(x), None, ("nngp", "ntk"),
                                          diagonal_spatial=False)
        dual = (lambda c, v1, v2: c, lambda c, v1, v2: jnp.ones_like(c))
        for a, b in ((0, 1), (1, 1)):
            kab, tab = k_in.nngp[a, b], k_in.ntk[a, b]
            nngp, ntk = _elementwise_pair(dual, qk**2, k_in.nngp[a, a], k_in.nngp[b, b],
                                          kab, kab, tab, tab)
            np.testing.assert_allclose(ov**2 * nngp, exact.nngp[a, b], rtol=1e-10)
            np.testing.assert_allclose(ov**2 * ntk, exact.ntk[a, b], rtol=1e-10)


def _net(mechanism, width, heads=1, n_samples=1024):
    """Attention between affine layers, read out by Relu and a Dense layer."""
    return stax.serial(
        stax.Dense(width, 1.2, 0.1),
        stax.GlobalSelfAttention(width, width, width, heads, linear_scaling=False,
                                 W_query_std=1.5, attention_mechanism=mechanism, b_std=0.1,
                                 n_samples=n_samples),
        stax.Relu(), stax.Dense(1))


@pytest.mark.parametrize("mechanism", ["SOFTMAX", "RELU"])
def test_kernel_properties(mechanism):
    """x2 = a copy of x1 gives exactly the x2=None kernel; symmetric and PSD (RELU exact,
    SOFTMAX within its Monte Carlo error); jit == eager; infwidth.batch == plain; float32
    equal to float64 within float32 rounding, and jax.grad finite."""
    x = jnp.asarray(_inputs(3, seed=2))
    kernel_fn = _net(mechanism, 8, n_samples=64).kernel_fn
    get = ("nngp", "ntk")
    with x64():
        x64_ = x.astype(jnp.float64)
        k_none = kernel_fn(x64_, None, get, diagonal_spatial=False)
        k_copy = kernel_fn(x64_, x64_ + 0, get, diagonal_spatial=False)
        k_jit = jax.jit(lambda a: kernel_fn(a, None, get, diagonal_spatial=False))(x64_)
        k_batch = infwidth.batch(kernel_fn, 2)(x64_, None, get, diagonal_spatial=False)
        for f in get:
            v = np.asarray(getattr(k_none, f))
            np.testing.assert_array_equal(np.asarray(getattr(k_copy, f)), v)
            np.testing.assert_allclose(np.asarray(getattr(k_jit, f)), v, rtol=1e-12)
            np.testing.assert_allclose(np.asarray(getattr(k_batch, f)), v, rtol=1e-12)
            np.testing.assert_allclose(v, v.transpose(1, 0, 3, 2), rtol=1e-10)
            gram = v.transpose(0, 2, 1, 3).reshape(3 * P, 3 * P)  # (input, position) pairs
            lam = np.linalg.eigvalsh(gram)
            # RELU: exact, PSD within rounding; SOFTMAX: each draw of the Monte Carlo rule
            # is not a PSD kernel by itself, so within the rule's error (n_samples=64)
            slack = 1e-10 if mechanism == "RELU" else 0.1
            assert lam.min() > -slack * lam.max(), lam
    k32 = kernel_fn(x, None, get, diagonal_spatial=False)
    for f in get:  # float32 uses the same draws as float64
        v = np.asarray(getattr(k_none, f))
        np.testing.assert_allclose(np.asarray(getattr(k32, f)), v, rtol=1e-4,
                                   atol=1e-5 * np.abs(v).max())
    grad = jax.grad(lambda a: kernel_fn(a, None, "ntk", diagonal_spatial=False).sum())(x)
    assert np.isfinite(np.asarray(grad)).all()


def test_masked_keys_get_no_attention():
    """Relu attention is exact, so masking the last position equals cutting it off."""
    x = _inputs(2, seed=4)
    padded = np.concatenate([x, np.full((2, 1, C), -7.0)], 1)
    net = stax.GlobalSelfAttention(8, 8, 8, 1, linear_scaling=False,
                                   attention_mechanism="RELU")
    with x64():
        cut = net[2](jnp.asarray(x), None, ("nngp", "ntk"), diagonal_spatial=False)
        masked = net[2](jnp.asarray(padded), None, ("nngp", "ntk"), diagonal_spatial=False,
                        mask_constant=-7.0)
        for f in ("nngp", "ntk"):
            m = np.asarray(getattr(masked, f))[:, :, :P, :P]
            np.testing.assert_allclose(m, np.asarray(getattr(cut, f)), rtol=1e-10)


def test_softmax_rule_error_falls_with_n_samples():
    """The rule's spread over seeds falls like 1 / sqrt(n_samples)."""
    x = jnp.asarray(_inputs(2, seed=5))

    def spread(n):
        ks = [np.asarray(stax.GlobalSelfAttention(
            4, 4, 4, 1, linear_scaling=False, n_samples=n, seed=s)[2](
                x, None, "nngp", diagonal_spatial=False)) for s in range(4)]
        return np.std(ks, axis=0).mean()

    with x64():
        small, large = spread(256), spread(4096)
    assert 2.5 < small / large < 6.5  # 1 / sqrt(16) = 4


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["SOFTMAX", "RELU"])
def test_kernels_match_finite_networks(mechanism):
    """Monte Carlo over initialisations of finite attention layers, their outputs' kernel
    averaged over channels: the relative Frobenius error falls with the width and the number
    of heads and is within 0.05 at the widest, NNGP and NTK. On raw inputs: after a finite
    Dense layer the (unnormalised) relu attention is cubic in the Dense layer's random
    covariance, whose finite-width fluctuations then dominate the estimate."""
    from infwidth.empirical import monte_carlo_kernel_fn
    x = jnp.asarray(_inputs(3, seed=6))

    def net(width, heads, n_samples=1024):
        return stax.GlobalSelfAttention(
            width, width, width, heads, linear_scaling=False, W_query_std=1.5,
            attention_mechanism=mechanism, b_std=0.1, n_samples=n_samples)

    exact = net(8, 1, 16384).kernel_fn(x, None, ("nngp", "ntk"), diagonal_spatial=False)
    errors = []
    for width, heads in ((16, 1), (256, 16)):
        init_fn, apply_fn, _ = net(width, heads)
        mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(1), n_samples=32,
                                   implementation=2, vmap_axes=0)(x, None, ("nngp", "ntk"))
        errors.append([np.linalg.norm(np.asarray(getattr(mc, f) - getattr(exact, f)))
                       / np.linalg.norm(np.asarray(getattr(exact, f))) for f in ("nngp", "ntk")])
    errors = np.asarray(errors)
    assert (errors[-1] <= 0.05).all(), errors
    assert (errors[-1] < errors[0]).all(), errors
