r"""How Gaussian finite networks' outputs are: the excess kurtosis and the Kolmogorov-Smirnov
distance of ``f(x)`` over initialisations from the NNGP's ``N(0, K(x, x))``.

At infinite width the output at an input is Gaussian with the NNGP variance (Neal 1996; Lee et
al. 2018, arXiv:1711.00165; Matthews et al. 2018, arXiv:1804.11271). At width ``n`` the
leading correction is a connected fourth cumulant of order ``1 / n`` (Yaida 2020,
arXiv:1910.00019; Roberts, Yaida & Hanin 2022, "The Principles of Deep Learning Theory"): for
one hidden layer, ``f = sum_i v_i phi(h_i) / sqrt(n)`` with i.i.d. units, the excess kurtosis
is exactly ``3 (E[phi**4] / E[phi**2]**2 - 1) / n`` (no bias in the readout). Matching the
covariance alone does not show Gaussianity; these two statistics do.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._training import check_positive_int

__all__ = ["Gaussianity", "output_gaussianity", "ks_distance"]


def ks_distance(samples, std: float = 1.0) -> float:
    """Kolmogorov-Smirnov distance ``sup |F_n - Phi|`` of samples from ``N(0, std**2)``.

    Its null distribution: ``sqrt(S) D`` tends to the Kolmogorov law, whose median is about
    0.83 and whose 99th percentile is about 1.63 (``S`` samples).

    >>> import numpy as np
    >>> d = ks_distance(np.random.default_rng(0).standard_normal(10_000))
    >>> bool(d < 1.63 / np.sqrt(10_000))
    True
    """
    z = np.sort(np.asarray(samples, np.float64).ravel()) / float(std)
    if z.size == 0 or not np.isfinite(z).all():
        raise ValueError("ks_distance(samples): need a non-empty array of finite numbers.")
    cdf = np.asarray(jax.scipy.special.ndtr(jnp.asarray(z)), np.float64)
    n = z.size
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(n) / n
    return float(max(upper.max(), lower.max()))


class Gaussianity(NamedTuple):
    """Result of `output_gaussianity` (arrays over widths).

    Attributes:
      widths: the widths.
      variance_ratio: sample variance of ``f(x)`` over the NNGP ``K(x, x)``.
      excess_kurtosis: ``E[f**4] / E[f**2]**2 - 3`` (zero mean known, so not centred).
      kurtosis_stderr: its standard error (``sqrt(24 / S)`` at a Gaussian, by bootstrap here).
      ks: Kolmogorov-Smirnov distance from ``N(0, K(x, x))``.
      ks_noise: ``0.83 / sqrt(S)``, the median KS distance of ``S`` true Gaussian samples.
    """

    widths: np.ndarray
    variance_ratio: np.ndarray
    excess_kurtosis: np.ndarray
    kurtosis_stderr: np.ndarray
    ks: np.ndarray
    ks_noise: float


def output_gaussianity(make_network, widths, x, n_seeds: int = 4000, key=None,
                       n_boot: int = 200) -> Gaussianity:
    """Excess kurtosis and KS distance of finite networks' outputs at one input ``x`` (shape
    ``(1, d)``) over ``n_seeds`` initialisations, against the NNGP ``N(0, K(x, x))`` of the
    same architecture, for each width (``make_network(width)`` returns a stax triple with
    one output).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.analysis import output_gaussianity
      >>> net = lambda n: stax.serial(stax.Dense(n, W_std=2.0), stax.Gabor(), stax.Dense(1))
      >>> g = output_gaussianity(net, [4, 256], jnp.ones((1, 3)), n_seeds=2000)
      >>> bool(g.excess_kurtosis[0] > 3 * g.kurtosis_stderr[0] and g.ks[1] < g.ks[0])
      True
    """
    where = "output_gaussianity"
    widths = [check_positive_int(int(w), "widths", where) for w in widths]
    n_seeds = check_positive_int(n_seeds, "n_seeds", where)
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] != 1:
        raise ValueError(f"{where}(x): one input of shape (1, d) is needed; got {x.shape}.")
    key = jax.random.PRNGKey(0) if key is None else key
    rng = np.random.default_rng(0)
    ratio, kurt, kurt_se, ks = (np.zeros(len(widths)) for _ in range(4))
    for i, w in enumerate(widths):
        init_fn, apply_fn, kernel_fn = make_network(w)
        k = float(np.asarray(kernel_fn(x, None, "nngp")).ravel()[0])

        def out(key, init_fn=init_fn, apply_fn=apply_fn):
            _, params = init_fn(key, x.shape)
            return apply_fn(params, x).ravel()[0]

        keys = jax.random.split(jax.random.fold_in(key, w), n_seeds)
        batch = max(1, min(n_seeds, 2 ** 22 // (w * w + w)))      # bounded memory
        f = np.asarray(jax.jit(lambda k, out=out, b=batch: jax.lax.map(out, k, batch_size=b))(
            keys), np.float64)

        def kurtosis(s):
            return np.mean(s ** 4, -1) / np.mean(s ** 2, -1) ** 2 - 3

        boot = f[rng.integers(0, n_seeds, (n_boot, n_seeds))]
        ratio[i] = np.mean(f ** 2) / k
        kurt[i], kurt_se[i] = kurtosis(f), np.std(kurtosis(boot))
        ks[i] = ks_distance(f, np.sqrt(k))
    return Gaussianity(np.asarray(widths), ratio, kurt, kurt_se, ks, 0.83 / np.sqrt(n_seeds))
