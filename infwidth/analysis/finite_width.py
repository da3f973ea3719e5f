r"""Finite-width corrections: how single networks of width ``n`` scatter around, and are biased
away from, their infinite-width kernels and predictions.

* `relu_gradient_fluctuation`: the normalized variance ``Var[K] / E[K]**2`` of the squared
  gradient norm ``K(x) = |d f(x) / d theta|**2`` (the NTK diagonal) of a ReLU MLP. For the
  gradient with respect to the readout weights, ``|a^L|**2 / n_L``, it is exact:
  ``prod_l (1 + 5 / n_l) - 1`` (Gaussian weights, no biases: given the layer below, ``|a^l|**2``
  is the previous squared norm times ``2 / n_{l-1}`` times a chi-square with a
  ``Binomial(n_l, 1/2)`` number of degrees of freedom, whose second moment is
  ``1 + 5 / n_l`` times its squared mean). For the whole NTK diagonal Hanin & Nica (2019,
  "Finite depth and width corrections to the neural tangent kernel", arXiv:1909.05989) prove
  ``E[K**2] / E[K]**2 ~ exp(5 beta)``, ``beta = sum_l 1 / n_l = depth / width``, up to
  multiplicative constants; the constant in the exponent is also 5, and
  `measure_gradient_fluctuation` fits it.
* `ntk_width_corrections`: the ``O(1 / n)`` deviation of the seed-averaged empirical NTK from
  the infinite-width NTK, and the ``O(1 / n)`` variance of single networks' NTKs (Hanin & Nica
  2019; Dyer & Gur-Ari 2019, arXiv:1909.11304).
* `ensemble_bias_variance`: trained networks' test error split into the variance over
  initialisations (removed by ensembling) and the bias of the finite-width ensemble from the
  infinite-width ensemble mean (`infwidth.predict.gradient_descent_mse_ensemble`) (Geiger et al.
  2020, arXiv:1901.01608; Atanasov et al. 2022, arXiv:2212.12147).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._training import check_positive_int
from ..empirical.widths import fit_rate

__all__ = ["relu_gradient_fluctuation", "relu_mlp", "GradientFluctuation",
           "measure_gradient_fluctuation", "WidthCorrections", "ntk_width_corrections",
           "BiasVariance", "ensemble_bias_variance"]


def relu_gradient_fluctuation(depth: int, width, which: str = "readout", c: float = 5.0):
    """Predicted normalized variance ``Var[K] / E[K]**2`` of a ReLU MLP's squared gradient norm
    at one input (``depth`` hidden layers of ``width`` units, Gaussian weights, no biases).

    Args:
      depth: number of hidden layers ``L``.
      width: hidden width ``n`` (scalar or array: broadcast).
      which: ``'readout'``: the gradient with respect to the last layer, exactly
        ``(1 + 5 / n)**L - 1``; ``'ntk'``: the whole NTK diagonal, Hanin & Nica's asymptotic
        form ``exp(c L / n) - 1`` (arXiv:1909.05989 prove ``c = 5`` up to a bounded prefactor
        of ``E[K**2] / E[K]**2``).
      c: the exponent's constant for ``'ntk'``.

    Example:
      >>> from infwidth.analysis import relu_gradient_fluctuation
      >>> round(float(relu_gradient_fluctuation(2, 10)), 4)        # 1.5**2 - 1
      1.25
      >>> round(float(relu_gradient_fluctuation(4, 100, 'ntk')), 4)  # exp(0.2) - 1
      0.2214
    """
    depth = check_positive_int(int(depth), "depth", "relu_gradient_fluctuation")
    width = np.asarray(width, np.float64)
    if np.any(width <= 0):
        raise ValueError(f"relu_gradient_fluctuation(width={width!r}): widths must be > 0.")
    if which == "readout":
        return (1 + 5 / width) ** depth - 1
    if which == "ntk":
        return np.expm1(c * depth / width)
    raise ValueError(f"relu_gradient_fluctuation(which={which!r}): 'readout' or 'ntk'.")


class GradientFluctuation(NamedTuple):
    """Result of `measure_gradient_fluctuation` (grids indexed ``[depth, width]``).

    Attributes:
      depths, widths: the grid.
      beta: ``depth / width``.
      ntk, ntk_stderr: measured ``Var[K] / E[K]**2`` of the NTK diagonal and its bootstrap
        standard error.
      readout, readout_stderr: the same for the readout-layer part of ``K``.
      c, c_stderr: least-squares slope of ``log(E[K**2] / E[K]**2)`` against ``beta``
        (intercept fitted too; Hanin & Nica: 5).
    """

    depths: np.ndarray
    widths: np.ndarray
    beta: np.ndarray
    ntk: np.ndarray
    ntk_stderr: np.ndarray
    readout: np.ndarray
    readout_stderr: np.ndarray
    c: float
    c_stderr: float


def _normalized_variance(samples, n_boot, rng):
    def nv(s):
        return s.var(-1) / s.mean(-1) ** 2

    boot = rng.integers(0, samples.shape[0], (n_boot, samples.shape[0]))
    return float(nv(samples)), float(np.std(nv(samples[boot])))


def _relu_ntk_samples(rng, n_seeds, x, width, depth, max_floats=2 ** 24):
    """Empirical NTKs ``(n_seeds, P, P)`` (all weights) and their readout-layer part of
    bias-free ReLU MLPs in the NTK parameterization, ``h^{l+1} = g_l W^{l+1} a^l / sqrt(n_l)``
    with ``a^0 = x``, ``g_0 = 1``, ``a^l = relu(h^l)``, ``g_l = sqrt(2)`` (numpy, float64,
    explicit backpropagation: the layer-``l`` term is
    ``g_l**2 <delta^{l+1}(x), delta^{l+1}(x')> <a^l(x), a^l(x')> / n_l``)."""
    p, d0 = x.shape
    dims = [d0] + [width] * depth + [1]
    gains = [1.0] + [np.sqrt(2.0)] * depth
    totals, readouts = [], []
    per_seed = sum(dims[i] * dims[i + 1] for i in range(depth + 1))
    chunk = max(1, min(n_seeds, max_floats // per_seed))     # weights of <= 128 MiB at once
    for start in range(0, n_seeds, chunk):
        s = min(chunk, n_seeds - start)
        ws = [rng.standard_normal((s, dims[i + 1], dims[i])) for i in range(depth + 1)]
        acts = [np.broadcast_to(x, (s, p, d0))]
        masks = []
        for i in range(depth):
            h = gains[i] * np.einsum("sij,spj->spi", ws[i], acts[-1]) / np.sqrt(dims[i])
            masks.append(h > 0)
            acts.append(np.where(h > 0, h, 0.0))
        delta = np.ones((s, p, 1))
        total = np.zeros((s, p, p))
        for i in range(depth, -1, -1):
            term = gains[i] ** 2 * np.einsum("spi,sqi->spq", delta, delta) * np.einsum(
                "spj,sqj->spq", acts[i], acts[i]) / dims[i]
            if i == depth:
                readouts.append(term)
            total += term
            if i:
                delta = gains[i] * np.einsum("spi,sij->spj", delta, ws[i]) / np.sqrt(dims[i])
                delta = delta * masks[i - 1]
        totals.append(total)
    return np.concatenate(totals), np.concatenate(readouts)


def relu_mlp(width: int, depth: int):
    """The stax network `measure_gradient_fluctuation` and `ntk_width_corrections` sample:
    ``depth`` bias-free ReLU layers of ``width`` (He initialisation, first layer ``W_std=1``)
    and a readout ``Dense(1, W_std=sqrt(2))``, NTK parameterization.

    >>> import numpy as np
    >>> from infwidth.analysis.finite_width import relu_mlp
    >>> _, _, kernel_fn = relu_mlp(16, 2)
    >>> round(float(kernel_fn(np.ones((1, 2)), None, 'nngp')[0, 0]), 6)  # |x|^2 / d, kept by He
    1.0
    """
    from .. import stax

    hidden = [stax.Dense(width, W_std=np.sqrt(2.0)), stax.Relu()] * (depth - 1)
    return stax.serial(stax.Dense(width, W_std=1.0), stax.Relu(), *hidden,
                       stax.Dense(1, W_std=np.sqrt(2.0)))


def measure_gradient_fluctuation(depths, widths, n_seeds: int = 1000, seed: int = 0,
                                 input_dim: int = 4, n_boot: int = 200) -> GradientFluctuation:
    """Measured normalized variance of the squared gradient norm of ReLU MLPs over a
    depth-width grid (the networks of `relu_mlp`: He initialisation, no biases, NTK
    parameterization; one fixed input ``(1, ..., 1)``), against
    `relu_gradient_fluctuation`. ``n_seeds`` networks per grid point (numpy, float64, explicit
    backpropagation), standard errors by ``n_boot`` bootstrap resamples (heavy tails at large
    ``depth / width`` make them optimistic there).

    Example:
      >>> from infwidth.analysis import measure_gradient_fluctuation, relu_gradient_fluctuation
      >>> m = measure_gradient_fluctuation([2], [8], n_seeds=2000)
      >>> exact = relu_gradient_fluctuation(2, 8)
      >>> bool(abs(m.readout[0, 0] - exact) < 4 * m.readout_stderr[0, 0])
      True
    """
    where = "measure_gradient_fluctuation"
    depths = [check_positive_int(int(d), "depths", where) for d in depths]
    widths = [check_positive_int(int(w), "widths", where) for w in widths]
    n_seeds = check_positive_int(n_seeds, "n_seeds", where)
    x = np.ones((1, input_dim))
    gen = np.random.default_rng(seed)
    rng = np.random.default_rng(seed + 1)
    shape = (len(depths), len(widths))
    ntk, ntk_se, ro, ro_se = (np.zeros(shape) for _ in range(4))
    for i, d in enumerate(depths):
        for j, w in enumerate(widths):
            total, readout = (k[:, 0, 0] for k in _relu_ntk_samples(gen, n_seeds, x, w, d))
            ntk[i, j], ntk_se[i, j] = _normalized_variance(total, n_boot, rng)
            ro[i, j], ro_se[i, j] = _normalized_variance(readout, n_boot, rng)
    beta = np.asarray(depths, float)[:, None] / np.asarray(widths, float)[None]
    y = np.log1p(ntk).ravel()
    a = np.stack([beta.ravel(), np.ones(beta.size)], 1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    dof = max(beta.size - 2, 1)
    s2 = float(np.sum((y - a @ coef) ** 2)) / dof
    c_se = float(np.sqrt(s2 / max(np.sum((beta - beta.mean()) ** 2), 1e-300)))
    return GradientFluctuation(np.asarray(depths), np.asarray(widths), beta, ntk, ntk_se, ro,
                               ro_se, float(coef[0]), c_se)


class WidthCorrections(NamedTuple):
    """Result of `ntk_width_corrections` (one entry per width).

    Attributes:
      widths: the widths ``n``.
      mean_deviation: ``|E[Theta_n] - Theta_inf|_F / |Theta_inf|_F``, with the seed-average's
        own Monte Carlo noise removed (``|mean - Theta_inf|**2 - sum Var / S``, floored at 0).
      mean_deviation_stderr: its standard error (delta method on the noise-corrected square).
      variance: ``sum_ij Var[Theta_n,ij] / |Theta_inf|_F**2`` over seeds.
      variance_stderr: its standard error (from 4 disjoint groups of seeds).
      mean_rate, variance_rate: fitted log-log slopes (theory: -1 and -1), and their standard
        errors ``mean_rate_stderr``, ``variance_rate_stderr`` from the fit residuals.
    """

    widths: np.ndarray
    mean_deviation: np.ndarray
    mean_deviation_stderr: np.ndarray
    variance: np.ndarray
    variance_stderr: np.ndarray
    mean_rate: float
    mean_rate_stderr: float
    variance_rate: float
    variance_rate_stderr: float


def ntk_width_corrections(widths, x, depth: int = 3, n_seeds: int = 20000,
                          seed: int = 0) -> WidthCorrections:
    """The ``O(1 / n)`` corrections of finite networks' NTKs: the bias of the mean over
    initialisations and the variance, against the analytic NTK of `relu_mlp` (``kernel_fn``),
    over widths ``n`` (Hanin & Nica 2019, arXiv:1909.05989; Dyer & Gur-Ari 2019,
    arXiv:1909.11304: both are ``O(1 / n)``). ``n_seeds`` bias-free ReLU networks per width
    (numpy, float64, explicit backpropagation). The mean correction is small (a few percent
    of the kernel at ``n = 8``), so it needs many seeds and inputs at an angle (on the
    diagonal the ReLU mean is nearly exact).

    Example:
      >>> import numpy as np
      >>> from infwidth.analysis import ntk_width_corrections
      >>> x = np.array([[1., 0.], [0.8, 0.6]])
      >>> c = ntk_width_corrections([8, 16, 32], x, n_seeds=2000)
      >>> bool(-1.3 < c.variance_rate < -0.7)
      True
    """
    where = "ntk_width_corrections"
    widths = [check_positive_int(int(w), "widths", where) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"{where}(widths={widths}): need at least two widths to fit rates.")
    depth = check_positive_int(depth, "depth", where)
    n_seeds = check_positive_int(n_seeds, "n_seeds", where)
    if n_seeds < 8:
        raise ValueError(f"{where}(n_seeds={n_seeds}): need at least 8 seeds (4 groups).")
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{where}(x): inputs must have shape (P, d); got {x.shape}.")
    gen = np.random.default_rng(seed)
    dev, dev_se, var, var_se = (np.zeros(len(widths)) for _ in range(4))
    for i, w in enumerate(widths):
        exact = np.asarray(relu_mlp(w, depth).kernel_fn(x, None, "ntk"), np.float64)
        k, _ = _relu_ntk_samples(gen, n_seeds, x, w, depth)
        norm2 = float(np.sum(exact ** 2))
        v = k.var(0, ddof=1)
        bias = k.mean(0) - exact
        d2 = float(np.sum(bias ** 2) - v.sum() / n_seeds)   # unbiased for |E Theta - exact|**2
        dev[i] = np.sqrt(max(d2, 0.0) / norm2)
        sd_d2 = 2 * np.sqrt(np.sum((bias ** 2 + v / (2 * n_seeds)) * v / n_seeds)) / norm2
        dev_se[i] = sd_d2 / max(2 * dev[i], np.sqrt(sd_d2))
        groups = np.array([g.var(0, ddof=1).sum() / norm2 for g in np.array_split(k, 4)])
        var[i], var_se[i] = v.sum() / norm2, groups.std(ddof=1) / 2
    m_rate, m_se, _ = fit_rate(widths, np.maximum(dev, 1e-300))
    v_rate, v_se, _ = fit_rate(widths, var)
    return WidthCorrections(np.asarray(widths), dev, dev_se, var, var_se, m_rate, m_se, v_rate,
                            v_se)


class BiasVariance(NamedTuple):
    """Result of `ensemble_bias_variance` (test mean squared errors; arrays over widths).

    Attributes:
      widths: the widths ``n``.
      ensemble_sizes: the ensemble sizes ``k``.
      ensemble_error: ``(W, K)`` test error of ensembles of ``k`` networks (mean over disjoint
        groups of seeds); ``k = 1`` is a single network.
      ensemble_mean_error: test error of the mean over all seeds (the finite-width infinite
        ensemble, up to ``variance / n_seeds``).
      variance: ``mean_x Var_seed[f(x)]``: what ensembling of ``k`` removes as ``1 - 1/k``.
      bias_to_infinite: ``mean_x (E_seed f(x) - mu_inf(x))**2`` (the seed average's noise
        ``variance / n_seeds`` subtracted): the part that ensembling cannot remove.
      infinite_mean_error: test error of the infinite-width ensemble mean ``mu_inf``.
      infinite_variance: ``mean_x Sigma_inf(x, x)``: the variance over initialisations of a
        single infinitely wide network.
    """

    widths: np.ndarray
    ensemble_sizes: np.ndarray
    ensemble_error: np.ndarray
    ensemble_mean_error: np.ndarray
    variance: np.ndarray
    bias_to_infinite: np.ndarray
    infinite_mean_error: float
    infinite_variance: float


def ensemble_bias_variance(make_network, widths, x_train, y_train, x_test, y_test,
                           n_seeds: int = 32, ensemble_sizes=(1, 4, 16), steps: int = 2000,
                           learning_rate: float | None = None, key=None) -> BiasVariance:
    """Single networks vs ensembles vs infinite width: finite networks ``make_network(n)``
    (stax, one output, NTK parameterization) trained by ``steps`` steps of full-batch gradient
    descent on ``0.5 * mean((f - y)**2)``, against the infinite ensemble of infinitely wide
    networks trained for the same time (`infwidth.predict.gradient_descent_mse_ensemble` at
    ``t = steps``: its mean and covariance; discrete steps match the flow up to
    ``O(learning_rate)`` in the fast modes, which have converged by then). The test error of a
    ``k``-ensemble is ``bias**2 + variance / k``; the variance over initialisations is removed
    by ensembling, the bias of the finite-width ensemble from ``mu_inf`` only by width (Geiger
    et al. 2020, arXiv:1901.01608; Atanasov et al. 2022, arXiv:2212.12147).

    Args:
      make_network: ``width -> (init_fn, apply_fn, kernel_fn)``.
      widths, n_seeds, ensemble_sizes: the grid (each ``k`` must divide ``n_seeds``).
      x_train, y_train, x_test, y_test: the data, ``y`` of shape ``(N, 1)``.
      steps, learning_rate: gradient descent (default rate ``N / lambda_max(Theta_inf)``, a
        safe step at large width).
      key: ``jax.random`` key of the initialisations.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.analysis import ensemble_bias_variance
      >>> net = lambda n: stax.serial(stax.Dense(n, b_std=0.1), stax.Relu(), stax.Dense(1))
      >>> x = jnp.linspace(-1, 1, 6)[:, None]; xt = jnp.linspace(-0.9, 0.9, 5)[:, None]
      >>> r = ensemble_bias_variance(net, [256], x, jnp.sin(3 * x), xt, jnp.sin(3 * xt),
      ...                            n_seeds=8, ensemble_sizes=(1, 8), steps=500)
      >>> bool(r.ensemble_error[0, 1] < r.ensemble_error[0, 0])
      True
    """
    from .. import predict

    where = "ensemble_bias_variance"
    widths = [check_positive_int(int(w), "widths", where) for w in widths]
    n_seeds = check_positive_int(n_seeds, "n_seeds", where)
    steps = check_positive_int(steps, "steps", where)
    sizes = [check_positive_int(int(k), "ensemble_sizes", where) for k in ensemble_sizes]
    if any(n_seeds % k for k in sizes):
        raise ValueError(f"{where}(ensemble_sizes={tuple(sizes)}): each size must divide "
                         f"n_seeds={n_seeds}.")
    x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)
    x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)
    if y_train.ndim != 2 or y_train.shape[1] != 1 or y_test.shape != (x_test.shape[0], 1):
        raise ValueError(f"{where}(y_train, y_test): targets must have shape (N, 1); got "
                         f"{y_train.shape} and {y_test.shape}.")
    key = jax.random.PRNGKey(0) if key is None else key
    kernel_fn = make_network(widths[0])[2]
    if learning_rate is None:
        theta = np.asarray(kernel_fn(x_train, None, "ntk"), np.float64)
        learning_rate = float(x_train.shape[0] / np.linalg.eigvalsh(theta)[-1])
    lr = float(learning_rate)
    inf = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=lr)
    gauss = inf(float(steps), x_test, "ntk", compute_cov=True)   # time t = steps
    mu = np.asarray(gauss.mean, np.float64)[:, 0]
    inf_var = float(np.mean(np.diag(np.asarray(gauss.covariance, np.float64))))
    yt = np.asarray(y_test, np.float64)[:, 0]
    errs = np.zeros((len(widths), len(sizes)))
    mean_err, var, bias = (np.zeros(len(widths)) for _ in range(3))
    for i, w in enumerate(widths):
        init_fn, apply_fn, _ = make_network(w)

        def train(k, init_fn=init_fn, apply_fn=apply_fn):
            _, params = init_fn(k, x_train.shape)

            def loss(p):
                return 0.5 * jnp.mean((apply_fn(p, x_train) - y_train) ** 2)

            def step(p, _):
                g = jax.grad(loss)(p)
                return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), None

            params, _ = jax.lax.scan(step, params, None, length=steps)
            return apply_fn(params, x_test)[:, 0]

        keys = jax.random.split(jax.random.fold_in(key, w), n_seeds)
        f = np.asarray(jax.jit(jax.vmap(train))(keys), np.float64)       # (S, N_test)
        for j, k in enumerate(sizes):
            groups = f.reshape(n_seeds // k, k, -1).mean(1)
            errs[i, j] = np.mean((groups - yt) ** 2)
        fbar = f.mean(0)
        mean_err[i] = np.mean((fbar - yt) ** 2)
        var[i] = float(np.mean(f.var(0, ddof=1)))
        bias[i] = float(np.mean((fbar - mu) ** 2) - var[i] / n_seeds)
    return BiasVariance(np.asarray(widths), np.asarray(sizes), errs, mean_err, var, bias,
                        float(np.mean((mu - yt) ** 2)), inf_var)
