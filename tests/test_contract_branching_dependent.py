"""Fan-in of dependent or non-Gaussian branches (issue 21): `DependentFanIn` (Relu(h) + h,
Relu(h) * h) and repeated inputs of FanInSum / FanInProd / FanInConcat, against closed forms in
float64 and Monte Carlo of wide finite networks; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64
from layer_properties import check_kernel_properties

from infwidth import stax

W, B = 1.3, 0.1


def _twice(fan_in, **kw):
    return stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), stax.Identity()),
                       fan_in(**kw))


def _arccos(q):
    """ReLU's NNGP and derivative maps (Cho & Saul 2009) of a covariance matrix q."""
    s = np.sqrt(np.outer(np.diag(q), np.diag(q)))
    th = np.arccos(np.clip(q / s, -1, 1))
    return s * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


def _inputs(n=4, d=5, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, d))


def test_relu_plus_h_closed_form_float64():
    """E[(relu u + u)(relu v + v)] = arccos_1 + 2 c; the derivative map (pi - t) / 2 pi + 2."""
    with x64():
        x = _inputs()
        base = stax.Dense(8, W, B)
        k0 = base.kernel_fn(x)
        k = stax.serial(base, stax.DependentFanIn(stax.Relu(), stax.Identity())).kernel_fn(x)
        q, t = np.asarray(k0.nngp), np.asarray(k0.ntk)
        relu, drelu = _arccos(q)
        assert_close(k.nngp, relu + 2 * q, 2e-3, "nngp")
        assert_close(k.ntk, t * (drelu + 2), 2e-3, "ntk")
        assert rel_err(k.nngp, relu + q) > 0.1  # the cross terms matter


def test_relu_times_h_is_rectified_square_float64():
    """Relu(h) * h = h**2 [h > 0]: the degree-2 arc-cosine kernel (RectifiedMonomial(2))."""
    with x64():
        x = _inputs()
        base = stax.Dense(8, W, B)
        k = stax.serial(base, stax.DependentFanIn(stax.Relu(), stax.Identity(), mode="prod"))
        ref = stax.serial(base, stax.RectifiedMonomial(2))
        a, b = k.kernel_fn(x), ref.kernel_fn(x)
        assert_close(a.nngp, b.nngp, 1e-4, "nngp")
        assert_close(a.ntk, b.ntk, 1e-3, "ntk")


def test_repeated_inputs_closed_forms_float64():
    """h + h = 2h (kernel x4, neural-tangents gives x2); h * h = h**2 (Isserlis:
    var1 var2 + 2 c**2; neural-tangents gives c**2, 200% off on the diagonal)."""
    with x64():
        x = _inputs()
        base = stax.Dense(8, W, B)
        k0 = base.kernel_fn(x)
        q, t = np.asarray(k0.nngp), np.asarray(k0.ntk)
        ks = stax.serial(base, _twice(stax.FanInSum)).kernel_fn(x)
        assert_close(ks.nngp, 4 * q, 1e-12, "sum nngp")
        assert_close(ks.ntk, 4 * t, 1e-12, "sum ntk")
        kp = stax.serial(base, _twice(stax.FanInProd)).kernel_fn(x)
        v = np.diag(q)
        assert_close(kp.nngp, np.outer(v, v) + 2 * q**2, 1e-12, "prod nngp")
        assert_close(kp.ntk, 4 * q * t, 1e-12, "prod ntk")  # E[2u 2v] ntk
        assert rel_err(q**2, kp.nngp) > 0.5


def _spatial_net(width, readout=64):
    return stax.serial(stax.Dense(width, W, B), _twice(stax.FanInConcat, axis=1), stax.Relu(),
                       stax.GlobalAvgPool(), stax.Dense(readout, 1.1, 0.1))


NETS = {
    "relu_plus_h": lambda w: stax.serial(
        stax.Dense(w, W, B), stax.DependentFanIn(stax.Relu(), stax.Identity()),
        stax.Dense(64, 1.1, 0.1)),
    "relu_times_h": lambda w: stax.serial(
        stax.Dense(w, W, B), stax.DependentFanIn(stax.Relu(), stax.Identity(), mode="prod"),
        stax.Dense(64, 1.1, 0.1)),
    "h_times_h": lambda w: stax.serial(stax.Dense(w, W, B), _twice(stax.FanInProd),
                                       stax.Dense(64, 1.1, 0.1)),
    "concat_spatial_relu": _spatial_net,
}


@pytest.mark.float32_stream
@pytest.mark.parametrize("name", ["relu_plus_h", "concat_spatial_relu"])
def test_dependent_fan_in_matches_monte_carlo(name):
    spatial = name.startswith("concat")
    shape = (3, 3, 4) if spatial else (3, 5)
    x1 = jax.random.normal(jax.random.PRNGKey(0), shape)
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2,) + shape[1:])
    k = NETS[name](8).kernel_fn(x1, x2, get=("nngp", "ntk"))
    errs = []
    for width, n in ((64, 64), (512, 64)):
        init_fn, apply_fn, _ = NETS[name](width)
        mc = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), n)
        errs.append((rel_err(mc[0], k.nngp), rel_err(mc[1], k.ntk)))
    (e_nngp, e_ntk), (_, e_ntk_small) = errs[1], errs[0]
    assert e_nngp < tol("mc") and e_ntk < tol("mc"), errs
    assert e_ntk < e_ntk_small, errs  # the NTK's 1/width fluctuations shrink
    assert rel_err(mc[0], 1.2 * np.asarray(k.nngp)) > tol("mc")


def test_spatial_concat_copies_covary():
    """[h, h] along a spatial axis keeps the covariance between the copies (zero would be the
    kernel of two independent branches)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4))
    k = _spatial_net(8).kernel_fn(x, get="nngp")
    indep = stax.serial(stax.Dense(8, W, B), stax.FanOut(2),
                        stax.parallel(stax.Dense(8), stax.Dense(8)),
                        stax.FanInConcat(axis=1)).kernel_fn(x, get="nngp")
    same = stax.serial(stax.Dense(8, W, B), _twice(stax.FanInConcat, axis=1)).kernel_fn(
        x, get="nngp")
    assert same.shape == indep.shape == (2, 2, 6, 6)
    assert float(jnp.abs(indep[:, :, :3, 3:]).max()) == 0.0
    h = stax.Dense(8, W, B).kernel_fn(x, get="nngp")
    np.testing.assert_allclose(same[:, :, :3, 3:], h, rtol=1e-6)
    assert np.isfinite(np.asarray(k)).all()


@pytest.mark.parametrize("name", ["relu_times_h", "concat_spatial_relu"])
def test_dependent_fan_in_properties(name):
    spatial = name.startswith("concat")
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 4) if spatial else (3, 5))
    check_kernel_properties(lambda: NETS[name](8).kernel_fn, x)


def test_dependent_fan_in_apply_is_the_fan_out_network():
    x = _inputs()
    init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.DependentFanIn(stax.Relu(),
                                                                          stax.Identity()))
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    ref = stax.serial(stax.Dense(16), stax.FanOut(2), stax.parallel(stax.Relu(), stax.Identity()),
                      stax.FanInSum())[1]
    np.testing.assert_array_equal(apply_fn(params, x), ref([params[0], (), [(), ()], ()], x))


def test_bad_input():
    with pytest.raises(ValueError, match="branch 0 has parameters"):
        stax.DependentFanIn(stax.Dense(4), stax.Relu())
    with pytest.raises(ValueError, match="branch 1 is not elementwise"):
        stax.DependentFanIn(stax.Relu(), stax.LayerNorm())  # normalizes over the channels
    with pytest.raises(ValueError, match="mode must be"):
        stax.DependentFanIn(stax.Relu(), stax.Identity(), mode="max")
    x = _inputs()
    relu_plus_h = stax.serial(stax.Dense(8), stax.FanOut(2),
                              stax.parallel(stax.Relu(), stax.Identity()), stax.FanInSum())
    with pytest.raises(ValueError, match="FanInSum.*DependentFanIn"):
        relu_plus_h.kernel_fn(x)
    relu_squared = stax.serial(stax.Dense(8), stax.Relu(), _twice(stax.FanInProd))
    with pytest.raises(ValueError, match="FanInProd: the same non-Gaussian input"):
        relu_squared.kernel_fn(x)
    msg = r"DependentFanIn\(mode='sum'\): its input is not Gaussian"
    with pytest.raises(ValueError, match=msg):
        stax.serial(stax.Dense(8), stax.Relu(),
                    stax.DependentFanIn(stax.Relu(), stax.Identity())).kernel_fn(x)
