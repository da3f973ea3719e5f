"""infwidth.gp.gpjax.InfiniteWidthKernel inside GPJax: the Gram matrix against the numpy
arc-cosine closed form and against GPJax's own ArcCosine kernel, GPJax's marginal likelihood
against the closed-form evidence, and gpx.fit training W_std, b_std and the noise."""

import numpy as np
import pytest

gpx = pytest.importorskip("gpjax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from gp_closed_forms import evidence_numpy, relu_nngp_numpy  # noqa: E402
from gpjax.parameters import val  # noqa: E402
from helpers import x64  # noqa: E402

from infwidth import stax  # noqa: E402
from infwidth.gp.gpjax import InfiniteWidthKernel  # noqa: E402

RNG = np.random.RandomState(0)
X = RNG.randn(16, 3)
Y = np.sin(2 * X[:, :1]) + 0.1 * RNG.randn(16, 1)


def relu2(W_std, b_std):
    return stax.serial(stax.Dense(8, W_std, b_std), stax.Relu(), stax.Dense(8, W_std, b_std),
                       stax.Relu(), stax.Dense(1, W_std, b_std))


def test_gram_and_evidence_match_closed_forms():
    with x64():
        x, y = jnp.asarray(X), jnp.asarray(Y)
        kernel = InfiniteWidthKernel(relu2, {"W_std": 1.3, "b_std": 0.4})
        k = kernel.gram(x).as_matrix()
        np.testing.assert_allclose(k, relu_nngp_numpy(X, X, 1.3, 0.4, 2), rtol=1e-10)
        np.testing.assert_allclose(kernel.cross_covariance(x[:4], x[4:]),
                                   relu_nngp_numpy(X[:4], X[4:], 1.3, 0.4, 2), rtol=1e-10)
        posterior = (gpx.gps.Prior(mean_function=gpx.mean_functions.Zero(), kernel=kernel)
                     * gpx.likelihoods.Gaussian(obs_stddev=0.3))
        mll = float(gpx.objectives.conjugate_mll(posterior, gpx.Dataset(X=x, y=y)))
        expected = evidence_numpy(relu_nngp_numpy(X, X, 1.3, 0.4, 2), Y, 0.09)
        assert abs(mll - expected) < 1e-4 * abs(expected)  # GPJax adds a 1e-6 jitter


def test_one_layer_relu_is_gpjax_arccosine():
    """Dense(W, b) -> Relu -> Dense(V): the degree-1 arc-cosine kernel of Cho & Saul, GPJax's
    ArcCosine(order=1, weight_variance=W^2/d, bias_variance=b^2, variance=V^2/2)."""
    with x64():
        net = lambda W_std, b_std: stax.serial(stax.Dense(8, W_std, b_std), stax.Relu(),
                                               stax.Dense(1, 1.2))
        ours = InfiniteWidthKernel(net, {"W_std": 1.5, "b_std": 0.3}).gram(jnp.asarray(X))
        ref = gpx.kernels.ArcCosine(order=1, weight_variance=1.5**2 / 3, bias_variance=0.3**2,
                                    variance=1.2**2 / 2).gram(jnp.asarray(X))
        np.testing.assert_allclose(ours.as_matrix(), ref.as_matrix(), rtol=1e-8)


def test_gpx_fit_trains_hyperparameters_and_noise():
    with x64():
        data = gpx.Dataset(X=jnp.asarray(X), y=jnp.asarray(Y))
        kernel = InfiniteWidthKernel(relu2, {"W_std": 1.0, "b_std": 1.0})
        posterior = (gpx.gps.Prior(mean_function=gpx.mean_functions.Zero(), kernel=kernel)
                     * gpx.likelihoods.Gaussian(obs_stddev=0.5))
        loss = lambda model, d: -gpx.objectives.conjugate_mll(model, d)
        before = float(loss(posterior, data))
        fitted, history = gpx.fit(model=posterior, objective=loss, train_data=data,
                                  optim=optax.adam(0.05), num_iters=40, verbose=False)
        after = float(loss(fitted, data))
        assert after < before - 1 and np.isfinite(np.asarray(history)).all()
        h = fitted.prior.kernel.hparams
        w, b = float(val(h["W_std"])), float(val(h["b_std"]))
        s = float(val(fitted.likelihood.obs_stddev))
        assert (w, b) != (1.0, 1.0) and w > 0 and b > 0
        # GPJax's loss at the fitted values is the closed-form evidence there
        expected = evidence_numpy(relu_nngp_numpy(X, X, w, b, 2), Y, s**2)
        assert abs(-after - expected) < 1e-4 * abs(expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"hparams\['W_std'\]=-1.0\).*PositiveReal"):
        InfiniteWidthKernel(relu2, {"W_std": -1.0, "b_std": 0.1})
    with pytest.raises(ValueError, match=r"get='cov1'"):
        InfiniteWidthKernel(relu2, {"W_std": 1.0, "b_std": 0.1}, get="cov1")
    assert jax.tree_util.tree_leaves(InfiniteWidthKernel(relu2, {"W_std": 1.0, "b_std": 0.1}))
