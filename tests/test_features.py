"""infwidth.features: random-feature and sketch maps against the exact kernels (float64).

* one hidden layer (Dense, Conv, branches): the estimate is unbiased, so its mean over keys
  matches kernel_fn within the Monte Carlo error of that mean (4.5 standard errors per entry);
* deeper networks: the relative Frobenius error falls like n_features ** -0.5 (slope fitted);
* tiles of inputs get the same features as the whole batch; bad arguments raise first.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infwidth import stax
from infwidth.features import feature_fn


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True), jax.numpy_rank_promotion("raise"):
        yield


def _estimates(net, x, m, keys):
    out = []
    for k in keys:
        f = feature_fn(net, jax.random.PRNGKey(k), m)(x)
        out.append([np.asarray(f.nngp @ f.nngp.T), np.asarray(f.ntk @ f.ntk.T)])
    return np.array(out)  # (keys, 2, N, N)


ONE_HIDDEN = {
    "relu_ntk": lambda: stax.serial(stax.Dense(1, W_std=1.5, b_std=0.2), stax.Relu(),
                                    stax.Dense(1, W_std=1.2, b_std=0.1)),
    "erf_standard": lambda: stax.serial(
        stax.Dense(7, W_std=1.3, b_std=0.3, parameterization="standard"), stax.Erf(),
        stax.Dense(3, W_std=0.9, b_std=0.2, parameterization="standard")),
    "branches": lambda: stax.serial(
        stax.Dense(4, W_std=1.4, b_std=0.1), stax.FanOut(3),
        stax.parallel(stax.Relu(), stax.Erf(), stax.Identity()), stax.FanInConcat(),
        stax.Dense(1)),
    "residual": lambda: stax.serial(
        stax.Dense(4, W_std=1.4, b_std=0.1), stax.FanOut(2),
        stax.parallel(stax.Identity(), stax.serial(stax.LeakyRelu(0.2), stax.Dense(4))),
        stax.FanInSum(), stax.Dense(1, W_std=0.8)),
    "conv": lambda: stax.serial(
        stax.Conv(1, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
        stax.AvgPool((2, 2)), stax.Flatten(), stax.Dense(1)),
    "conv1d_circular": lambda: stax.serial(
        stax.Conv(1, (3,), strides=(2,), padding="CIRCULAR", W_std=1.2), stax.Gelu(),
        stax.GlobalAvgPool(), stax.Dense(1, b_std=0.3)),
}


@pytest.mark.parametrize("name", sorted(ONE_HIDDEN))
def test_one_hidden_layer_is_unbiased(name):
    net = ONE_HIDDEN[name]()
    rng = np.random.RandomState(1)
    x = (rng.randn(4, 4, 4, 2) if name == "conv" else rng.randn(4, 6, 2)
         if name.startswith("conv1d") else rng.randn(5, 3))
    exact = net.kernel_fn(x, x, get=("nngp", "ntk"))
    exact = np.array([exact.nngp, exact.ntk])
    est = _estimates(net, x, 512, range(40))
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
    # the test is sharp: the standard error is a few percent of the kernel
    assert np.max(se / np.abs(exact).max(axis=(1, 2), keepdims=True)) < 0.03
    z = np.abs(mean - exact) / (se + 1e-12 * np.abs(exact).max())
    assert z.max() < 4.5, (name, z.max())


def test_error_rate_is_inverse_square_root():
    """Two hidden ReLU layers (not unbiased: the second layer sees estimated features): the
    relative Frobenius error, averaged over 8 keys (about 10% noise per point, so about 0.05
    on the slope), has log-log slope -1/2 in n_features."""
    net = stax.serial(stax.Dense(1, W_std=1.4, b_std=0.1), stax.Relu(),
                      stax.Dense(1, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(1))
    x = np.random.RandomState(2).randn(10, 5)
    k = net.kernel_fn(x, x, get=("nngp", "ntk"))
    ms = np.array([32, 128, 512])
    errs = []
    for m in ms:
        est = _estimates(net, x, int(m), range(8))
        errs.append([np.mean([np.linalg.norm(e[i] - ki) / np.linalg.norm(ki) for e in est])
                     for i, ki in enumerate((k.nngp, k.ntk))])
    slopes = np.polyfit(np.log(ms), np.log(np.array(errs)), 1)[0]
    assert np.all((slopes > -0.7) & (slopes < -0.3)), slopes
    assert np.array(errs)[-1].max() < 0.2


def test_tiles_get_the_same_features():
    net = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1), stax.Erf(), stax.Dense(1))
    x = np.random.RandomState(3).randn(9, 4)
    phi = feature_fn(net, jax.random.PRNGKey(0), 32)
    whole, part = phi(x), phi(x[5:])
    np.testing.assert_allclose(part.ntk, whole.ntk[5:], rtol=1e-12, atol=1e-14)
    other = feature_fn(net, jax.random.PRNGKey(1), 32, get="nngp")(x)
    assert other.shape == (9, 32) and not np.allclose(other, whole.nngp)


def test_bad_arguments():
    net = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="n_features"):
        feature_fn(net, key, 0)
    with pytest.raises(ValueError, match="'LayerNorm' has no feature rule"):
        feature_fn(stax.serial(stax.Dense(1), stax.LayerNorm(), stax.Dense(1)), key, 8)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        feature_fn(net, 0, 8)
    with pytest.raises(ValueError, match="get"):
        feature_fn(net, key, 8, get="cov1")
    with pytest.raises(ValueError, match="method"):
        feature_fn(net, key, 8, method="hermite")
    with pytest.raises(TypeError, match="stax layer"):
        feature_fn(lambda x: x, key, 8)
    with pytest.raises(ValueError, match="not Gaussian"):  # the kernel's own check, first
        feature_fn(stax.serial(stax.Relu(), stax.Dense(1)), key, 8)(jnp.ones((2, 3)))


def test_first_call_under_jit_or_eval_shape_does_not_leak_tracers():
    net = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    phi = feature_fn(net, jax.random.PRNGKey(0), 64, get="nngp")
    assert jax.eval_shape(phi, x).shape == (5, 64)  # the draws are made here, concretely
    inside = jax.jit(phi)(x)
    np.testing.assert_allclose(np.asarray(phi(x)), np.asarray(inside), rtol=1e-12)


def test_deep_cnn_feature_widths_stay_bounded_and_unbiased():
    """Myrtle-5 at 32x32: each convolution multiplies the feature width by its 9 taps, so the
    exact linear half of ReLU features would grow geometrically (72k columns at 64 features,
    terabytes of memory at 256); past n_features it is sampled. The estimate stays unbiased:
    its mean over keys approaches the exact kernel much faster than a single key does."""
    from infwidth.architectures import myrtle

    net = myrtle(depth=5)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 32, 32, 3)))
    exact = np.asarray(jax.jit(net.kernel_fn, static_argnames="get")(x, None, get="nngp"))
    ks = [np.asarray(f @ f.T) for f in
          (feature_fn(net, jax.random.PRNGKey(s), 256, get="nngp")(x) for s in range(4))]
    one = [np.linalg.norm(k - exact) / np.linalg.norm(exact) for k in ks]
    mean = np.linalg.norm(sum(ks) / 4 - exact) / np.linalg.norm(exact)
    assert max(one) < 0.3 and mean < 0.6 * np.mean(one), (one, mean)
