"""infwidth.gp.sklearn.InfiniteWidthKernel inside scikit-learn: kernel values and their
theta-gradients against the numpy arc-cosine closed form, GaussianProcessRegressor fitting it
(with WhiteKernel noise) on the bundled diabetes data, GaussianProcessClassifier on breast
cancer, clone/get_params, and clear errors."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from gp_closed_forms import evidence_numpy, relu_nngp_numpy  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes  # noqa: E402
from sklearn.gaussian_process import (  # noqa: E402
    GaussianProcessClassifier,
    GaussianProcessRegressor,
)
from sklearn.gaussian_process.kernels import WhiteKernel  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from infwidth import stax  # noqa: E402
from infwidth.gp.sklearn import InfiniteWidthKernel  # noqa: E402


def relu2(W_std, b_std):
    return stax.serial(stax.Dense(8, W_std, b_std), stax.Relu(), stax.Dense(8, W_std, b_std),
                       stax.Relu(), stax.Dense(1, W_std, b_std))


RNG = np.random.RandomState(0)
X = RNG.randn(12, 3)


def test_values_diag_and_gradient_match_closed_form():
    kernel = InfiniteWidthKernel(relu2, {"W_std": 1.3, "b_std": 0.4})
    k, grad = kernel(X, eval_gradient=True)
    assert k.dtype == np.float64 and grad.shape == (12, 12, 2)
    np.testing.assert_allclose(k, relu_nngp_numpy(X, X, 1.3, 0.4, 2), rtol=1e-10)
    np.testing.assert_allclose(kernel(X[:5], X[5:]), relu_nngp_numpy(X[:5], X[5:], 1.3, 0.4, 2),
                               rtol=1e-10)
    np.testing.assert_allclose(kernel.diag(X), np.diag(relu_nngp_numpy(X, X, 1.3, 0.4, 2)),
                               rtol=1e-10)
    eps = 1e-6
    for i in range(2):  # d K / d log(theta_i)
        t = np.log([1.3, 0.4])
        kp = relu_nngp_numpy(X, X, *np.exp(t + eps * np.eye(2)[i]), 2)
        km = relu_nngp_numpy(X, X, *np.exp(t - eps * np.eye(2)[i]), 2)
        np.testing.assert_allclose(grad[..., i], (kp - km) / (2 * eps), atol=1e-7)
    np.testing.assert_allclose(kernel.theta, np.log([1.3, 0.4]))
    np.testing.assert_allclose(kernel.bounds, np.log([[1e-3, 1e3]] * 2))


def test_regressor_fits_it_on_diabetes():
    data = load_diabetes()
    x = StandardScaler().fit_transform(data.data[:80])
    y = (data.target[:80] - data.target[:80].mean()) / data.target[:80].std()
    kernel = InfiniteWidthKernel(relu2, {"W_std": 1.0, "b_std": 1.0},
                                 bounds={"b_std": (1e-3, 10.0)}) + WhiteKernel(0.5)
    gpr = GaussianProcessRegressor(kernel, optimizer="fmin_l_bfgs_b").fit(x, y)
    fitted = gpr.kernel_
    w, b = fitted.k1.hparams["W_std"], fitted.k1.hparams["b_std"]
    noise = fitted.k2.noise_level
    # scikit-learn's evidence at the fitted point is the closed form's, and it improved
    expected = evidence_numpy(relu_nngp_numpy(x, x, w, b, 2), y[:, None], noise + 1e-10)
    assert abs(gpr.log_marginal_likelihood_value_ - expected) < 1e-6 * abs(expected)
    assert gpr.log_marginal_likelihood_value_ > gpr.log_marginal_likelihood(kernel.theta) + 1
    assert gpr.predict(x[:3]).shape == (3,)


def test_classifier_fits_it_on_breast_cancer():
    data = load_breast_cancer()
    idx = RNG.permutation(len(data.target))[:120]
    x = StandardScaler().fit_transform(data.data[idx])
    y = data.target[idx]
    kernel = InfiniteWidthKernel(relu2, {"W_std": 1.0, "b_std": 0.5},
                                 bounds={"W_std": (0.1, 10.0), "b_std": (1e-3, 10.0)})
    gpc = GaussianProcessClassifier(kernel).fit(x[:80], y[:80])
    assert gpc.kernel_.theta.shape == (2,)
    assert not np.allclose(gpc.kernel_.theta, kernel.theta)  # it was optimized
    assert gpc.score(x[80:], y[80:]) > 0.85


def test_clone_fixed_bounds_and_errors():
    kernel = InfiniteWidthKernel(relu2, {"W_std": 1.3, "b_std": 0.4}, {"b_std": "fixed"})
    assert kernel.theta.shape == (1,) and kernel.bounds.shape == (1, 2)
    other = kernel.clone_with_theta(np.log([2.0]))
    assert other.hparams == {"W_std": 2.0, "b_std": 0.4} and kernel.hparams["W_std"] == 1.3
    assert clone(kernel).get_params()["bounds"] == {"b_std": "fixed"}
    np.testing.assert_allclose(other(X), relu_nngp_numpy(X, X, 2.0, 0.4, 2), rtol=1e-10)
    with pytest.raises(ValueError, match=r"hparams\['W_std'\]=-1.0\).*positive"):
        InfiniteWidthKernel(relu2, {"W_std": -1.0, "b_std": 0.4})(X)
    with pytest.raises(ValueError, match=r"get='cov1'"):
        InfiniteWidthKernel(relu2, {"W_std": 1.0}, get="cov1")(X)
    with pytest.raises(ValueError, match=r"\['c'\] are not in hparams"):
        _ = InfiniteWidthKernel(relu2, {"W_std": 1.0}, bounds={"c": (1, 2)}).theta
