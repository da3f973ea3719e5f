"""Signal propagation and criticality (infwidth.analysis.signal).

Known critical points in float64 (He, Glorot, leaky ReLU), and predictions checked against deep
finite networks written out here with plain JAX (independent of infwidth's layers): the depth
scale of correlations in the ordered phase, the chaotic fixed point c*, and the GELU edge of
chaos computed by `critical_W_std`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tol, x64

from infwidth import stax
from infwidth.analysis import (
    CHAOTIC,
    ORDERED,
    UNBOUNDED,
    correlation_propagation,
    critical_W_std,
    dual_kernel,
    phase_diagram,
    signal_propagation,
)
from infwidth.stax._layer import make_layer

RELU = stax.Relu()
ERF = stax.Erf()
UNIT_ERF = stax.Erf(b=math.sqrt(math.pi) / 2)  # erf scaled to slope 1 at 0, like tanh
GELU = stax.Gelu()
TANH = stax.Tanh()  # numerical (Gauss-Hermite quadrature) kernel map


# ----------------------------------------------------------------------------------------------
# deep finite networks, written out independently of infwidth's layers


def deep_network(phi, W_std, b_std, h0, t0, depth, key):
    """Propagates pre-activations h (n, width) and tangents t through ``depth`` random layers
    ``h -> W_std / sqrt(width) phi(h) W + b_std beta``; returns per-layer h and t."""
    width = h0.shape[-1]
    dphi = jax.vmap(jax.vmap(jax.grad(phi)))

    def layer(carry, k):
        h, t = carry
        kw, kb = jax.random.split(k)
        w = jax.random.normal(kw, (width, width)) * W_std / math.sqrt(width)
        beta = jax.random.normal(kb, (width,)) * b_std
        h_new = phi(h) @ w + beta
        t_new = (dphi(h) * t) @ w
        return (h_new, t_new), (h_new, t_new)

    _, (hs, ts) = jax.lax.scan(layer, (h0, t0), jax.random.split(key, depth))
    return hs, ts


def independent_networks(phi, W_std, b_std, h0, t0, depth, key):
    """`deep_network` with an independent draw of weights for each leading index of h0, t0."""
    keys = jax.random.split(key, h0.shape[0])
    run = jax.vmap(lambda h, t, k: deep_network(phi, W_std, b_std, h, t, depth, k))
    hs, ts = run(h0, t0, keys)
    return jnp.moveaxis(hs, 0, 1), jnp.moveaxis(ts, 0, 1)  # (depth, networks, ...)


def gaussian_inputs(key, n, width, q, c=None):
    """n pre-activations of variance q (pairs of correlation c when c is given)."""
    z = jax.random.normal(key, (2, n, width))
    if c is None:
        return math.sqrt(q) * z[0]
    return math.sqrt(q) * jnp.stack([z[0], c * z[0] + math.sqrt(1 - c * c) * z[1]])


# ----------------------------------------------------------------------------------------------
# known critical points


def test_dual_kernel_is_the_arccosine_kernel():
    with x64():
        c = np.array([-0.5, 0.0, 0.3, 0.9])
        nngp, d_nngp = dual_kernel(RELU, 2.0 * c, 2.0)
        theta = np.arccos(c)
        expected = 2.0 * (np.sin(theta) + (np.pi - theta) * c) / (2 * np.pi)
        np.testing.assert_allclose(nngp, expected, rtol=tol("exact", np.float64))
        np.testing.assert_allclose(d_nngp, (np.pi - theta) / (2 * np.pi),
                                   rtol=tol("exact", np.float64))


@pytest.mark.parametrize("b_std", [0.0, 0.5])
def test_he_initialisation_for_relu(b_std):
    with x64():
        assert critical_W_std(RELU, b_std) ** 2 == pytest.approx(2.0, rel=1e-7)


@pytest.mark.parametrize("alpha", [0.2, -0.5])
def test_leaky_relu_critical_point(alpha):
    with x64():
        w = critical_W_std(stax.LeakyRelu(alpha))
    assert w**2 == pytest.approx(2 / (1 + alpha**2), rel=1e-7)


def test_glorot_for_odd_saturating_activations():
    with x64():
        # chi_1 - 1 is quadratic in W_std - 1 above the transition, so the root is flat
        assert critical_W_std(UNIT_ERF) == pytest.approx(1.0, abs=2e-4)
        assert critical_W_std(ERF) ** 2 == pytest.approx(math.pi / 4, rel=4e-4)
        assert critical_W_std(TANH) == pytest.approx(1.0, abs=2e-4)
        # a bias moves the edge of chaos to larger W_std (Poole et al. 2016, Fig. 4)
        assert critical_W_std(UNIT_ERF, 0.3) > 1.05


def test_signal_propagation_closed_forms_for_relu():
    # ReLU: q* = b^2 / (1 - W^2 / 2), chi_1 = chi_q = W^2 / 2, c* = 1 in the ordered phase
    w, b = np.array([0.8, 1.0, 1.2]), 0.3
    with x64():
        sp = signal_propagation(RELU, w, b)
        exact = tol("exact", np.float64)
        np.testing.assert_allclose(sp.q_star, b**2 / (1 - w**2 / 2), rtol=exact)
        # (arccos near correlation 1 loses half the digits)
        np.testing.assert_allclose(sp.chi_1, w**2 / 2, rtol=1e-7)
        np.testing.assert_allclose(sp.chi_q, w**2 / 2, rtol=1e-7)
        np.testing.assert_allclose(sp.xi_c, -1 / np.log(w**2 / 2), rtol=1e-7)
        np.testing.assert_array_equal(sp.c_star, 1.0)
        # beyond He the variance explodes
        assert np.isinf(signal_propagation(RELU, 1.5, 0.3).q_star)


def test_correlation_map_agrees_with_the_kernel_recursion():
    """q^l, c^l of `correlation_propagation` vs infwidth's own deep kernel (Dense + Erf)."""
    W_std, b_std, depth = 1.6, 0.2, 6
    x = jnp.array([[1.0, 0.0], [0.6, 0.8]]) * math.sqrt(2.0)  # |x|^2 / d = 1, cos = 0.6
    layers = [stax.Dense(1, W_std, b_std)]
    for _ in range(depth):
        layers += [ERF, stax.Dense(1, W_std, b_std)]
    k = stax.serial(*layers)[2](x, get="nngp")
    q0 = W_std**2 + b_std**2
    with x64():
        q, c = correlation_propagation(ERF, W_std, b_std, q0,
                                       (0.6 * W_std**2 + b_std**2) / q0, depth)
    assert float(k[0, 0]) == pytest.approx(q[-1], rel=1e-4)
    assert float(k[0, 1] / k[0, 0]) == pytest.approx(c[-1], rel=1e-4)


def test_variance_depth_scale_matches_the_kernel_recursion():
    """|q^l - q*| ~ exp(-l / xi_q), with q^l from the library's deep-network kernel."""
    W_std, b_std = 1.2, 0.4
    with x64():
        sp = signal_propagation(ERF, W_std, b_std)
        x = jnp.full((1, 4), 2.0)
        layers, qs = [stax.Dense(1, W_std, b_std)], []
        for _ in range(8):
            qs.append(float(stax.serial(*layers)[2](x, get="nngp")[0, 0]))
            layers += [ERF, stax.Dense(1, W_std, b_std)]
    dev = np.abs(np.array(qs) - float(sp.q_star))
    slope = np.polyfit(np.arange(3, 8), np.log(dev[3:8]), 1)[0]
    assert -1 / slope == pytest.approx(float(sp.xi_q), rel=0.03)


@pytest.mark.parametrize("name, rel", [("Gelu", 1e-6), ("Sin", 1e-6), ("Tanh", 1e-4),
                                       ("Silu", 1e-4)])
def test_any_activation_of_the_library(name, rel):
    """Closed-form and numerical activations alike: q* and chi_1 from the layer's kernel map agree
    with Gauss-Hermite quadrature of its own apply_fn and autodiff derivative (numerical maps
    use 25-point quadrature, hence their looser tolerance)."""
    act = {"Gelu": GELU, "Tanh": TANH}.get(name) or getattr(stax, name)()
    W_std, b_std = 1.3, 0.2
    with x64():
        sp = signal_propagation(act, W_std, b_std)
        q = float(sp.q_star)
        z, w = np.polynomial.hermite_e.hermegauss(120)
        u = jnp.sqrt(q) * jnp.asarray(z)
        phi = lambda x: act[1]((), x)
        dphi = jax.vmap(jax.grad(lambda s: phi(s[None])[0]))
        w = jnp.asarray(w / w.sum())
        assert q == pytest.approx(W_std**2 * float(jnp.sum(w * phi(u) ** 2)) + b_std**2, rel=rel)
        assert float(sp.chi_1) == pytest.approx(W_std**2 * float(jnp.sum(w * dphi(u) ** 2)),
                                                rel=rel)


# ----------------------------------------------------------------------------------------------
# checks against deep finite networks


def test_ordered_phase_loses_correlations_at_the_predicted_depth_scale():
    W_std, b_std, depth, width = 1.0, 0.3, 14, 1024
    with x64():
        sp = signal_propagation(UNIT_ERF, W_std, b_std)
    assert 0.6 < float(sp.chi_1) < 0.95 and float(sp.c_star) == 1.0
    q = float(sp.q_star)
    phi = lambda x: jax.scipy.special.erf(math.sqrt(math.pi) / 2 * x)
    h0 = gaussian_inputs(jax.random.PRNGKey(1), 8, width, q, c=0.6)
    hs, _ = deep_network(phi, W_std, b_std, h0.reshape(16, width), jnp.zeros((16, width)), depth,
                         jax.random.PRNGKey(2))
    hs = hs.reshape(depth, 2, 8, width)
    u = hs / jnp.linalg.norm(hs, axis=-1, keepdims=True)
    one_minus_c = 0.5 * jnp.sum((u[:, 0] - u[:, 1]) ** 2, -1)  # (depth, pairs)
    log_gap = np.log(np.asarray(one_minus_c)).mean(1)
    layers = np.arange(4, depth)
    xi = -1 / np.polyfit(layers, log_gap[layers], 1)[0]
    assert xi == pytest.approx(float(sp.xi_c), rel=0.1)
    # the variance sits at q*
    assert float(jnp.mean(hs[-4:] ** 2)) == pytest.approx(q, rel=tol("mc"))


@pytest.mark.float32_stream  # see the closing note: float64 draws settle 0.02-0.04 above c*
def test_chaotic_phase_correlation_fixed_point():
    """Chaotic phase: correlations of a deep finite network follow the correlation map down to
    c* < 1 (at the rate chi_c < 1)."""
    W_std, b_std, depth, width, n = 2.5, 0.3, 16, 1024, 16
    with x64():
        sp = signal_propagation(ERF, W_std, b_std)
        _, c_theory = correlation_propagation(ERF, W_std, b_std, float(sp.q_star), 0.5, depth)
    assert float(sp.chi_1) > 1 and float(sp.chi_c) < 1 and 0 < float(sp.c_star) < 0.2
    h0 = gaussian_inputs(jax.random.PRNGKey(3), n, width, float(sp.q_star), c=0.5)
    pairs = jnp.moveaxis(h0, 0, 1)  # (networks, 2, width)
    hs, _ = independent_networks(jax.scipy.special.erf, W_std, b_std, pairs,
                                 jnp.zeros_like(pairs), depth, jax.random.PRNGKey(4))
    c = jnp.sum(hs[:, :, 0] * hs[:, :, 1], -1) / jnp.sqrt(jnp.sum(hs[:, :, 0] ** 2, -1)
                                                         * jnp.sum(hs[:, :, 1] ** 2, -1))
    c = np.asarray(c).mean(1)
    # c of one network fluctuates by ~0.05 around the map (width 1024); 16 networks
    np.testing.assert_allclose(c, c_theory[1:], atol=0.04)
    assert c[-4:].mean() == pytest.approx(float(sp.c_star), abs=0.03)


def test_gelu_edge_of_chaos_in_deep_finite_networks():
    """The GELU edge of chaos at b_std = 0.5 found by `critical_W_std`, checked in deep finite
    networks: at W_c, started at the predicted q*, the variance stays there and a perturbation's
    squared norm keeps its size layer after layer (chi_1 = 1); 3% below it shrinks, 3% above it
    grows."""
    act = GELU
    b_std, width, depth, n = 0.5, 1024, 10, 8
    with x64():
        w_c = critical_W_std(act, b_std)
        q_c = float(signal_propagation(act, w_c, b_std).q_star)
    assert w_c == pytest.approx(1.39987, abs=2e-4)  # W_c^2 = 1.9596: just below He's 2
    assert q_c == pytest.approx(6.4, rel=0.05)
    phi = lambda x: x * jax.scipy.stats.norm.cdf(x)
    # one input per network, independent networks: the variance near the edge is only weakly
    # pinned (chi_q ~ 0.99), so each network's q wanders by O(sqrt(depth / width))
    h0 = gaussian_inputs(jax.random.PRNGKey(5), n, width, q_c)[:, None]
    t0 = jax.random.normal(jax.random.PRNGKey(6), (n, 1, width))
    growth = {}
    for factor in (0.97, 1.0, 1.03):
        hs, ts = independent_networks(phi, factor * w_c, b_std, h0, t0, depth,
                                      jax.random.PRNGKey(7))
        norms = jnp.concatenate([jnp.sum(t0**2, -1)[None], jnp.sum(ts**2, -1)])
        growth[factor] = float(jnp.exp(jnp.mean(jnp.log(norms[1:] / norms[:-1]))))
        if factor == 1.0:
            assert float(jnp.mean(hs**2)) == pytest.approx(q_c, rel=0.1)
    assert growth[1.0] == pytest.approx(1.0, abs=0.02)
    assert growth[0.97] < 0.95 and growth[1.03] > 1.03


# ----------------------------------------------------------------------------------------------
# phase diagram, jumps, errors


def test_phase_diagram_phases_and_edge():
    with x64():
        d = phase_diagram(ERF, W_std=np.array([0.6, 1.0, 2.0, 3.0]), b_std=np.array([0.0, 0.5]))
        edge = critical_W_std(ERF, 0.5)
        relu = phase_diagram(RELU, W_std=np.array([1.0, 1.6]), b_std=np.array([0.2]))
    assert d.phase.shape == (2, 4) and d.chi_1.shape == (2, 4)
    assert (d.phase[:, 0] == ORDERED).all() and (d.phase[:, -1] == CHAOTIC).all()
    # the edge separates the phases and matches critical_W_std
    assert d.critical_W_std[0] == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-3)
    assert d.critical_W_std[1] == pytest.approx(edge, rel=1e-4)
    assert (np.diff(d.critical_W_std) > 0).all()
    chaotic = d.c_star[d.phase == CHAOTIC]
    assert (chaotic < 1).all() and (d.c_star[d.phase == ORDERED] == 1).all()
    assert relu.phase.tolist() == [[ORDERED, UNBOUNDED]]


def test_a_jump_of_chi_1_is_not_an_edge_of_chaos():
    """A saddle-node bifurcation (the stable q* vanishes and the variance explodes) makes chi_1
    jump over 1; that is reported, not returned as a critical point."""
    with x64(), pytest.raises(ValueError, match="jumps over 1"):
        critical_W_std(GELU, 0.0)


def test_bad_inputs():
    with pytest.raises(TypeError, match="needs an activation layer"):
        critical_W_std(jnp.tanh)

    def broken(k, **kwargs):
        raise NotImplementedError("no closed form")

    no_map = make_layer("NoMap", lambda key, s: (s, ()), lambda p, x, **kw: x, broken,
                        lambda s: s)
    with pytest.raises(ValueError, match="NoMap: its kernel_fn cannot map a Gaussian Kernel"):
        signal_propagation(no_map, 1.0)
    with pytest.raises(ValueError, match="W_std must be non-negative"):
        signal_propagation(RELU, -1.0)
    with x64(), pytest.raises(ValueError, match="stays below 1"):
        critical_W_std(RELU, W_max=1.0)
    with pytest.raises(ValueError, match="1-D grids"):
        phase_diagram(RELU, W_std=np.ones((2, 2)))
