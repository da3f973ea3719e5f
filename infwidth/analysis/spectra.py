"""Kernel spectra, effective rank and spectral learning curves of kernel regression.

The learning-curve theory of Bordelon, Canatar and Pehlevan 2020 ("Spectrum dependent learning
curves in kernel regression and wide neural networks", arXiv:2002.02561) and Canatar, Bordelon
and Pehlevan 2021 ("Spectral bias and task-model alignment explain generalization in kernel
regression and infinitely wide neural networks", arXiv:2006.13198) predicts the expected test
error of kernel (ridge) regression from ``p`` samples out of the kernel's eigenvalues ``eta_k``
(of the integral operator over the data distribution) and the target's coefficients ``a_k`` in
the eigenbasis:

    kappa = ridge + kappa * sum_k eta_k / (p eta_k + kappa)             (solved for kappa > 0)
    gamma = sum_k p eta_k**2 / (p eta_k + kappa)**2
    E_g   = 1 / (1 - gamma) * sum_k kappa**2 a_k**2 / (p eta_k + kappa)**2
            + noise_var * gamma / (1 - gamma)

for the estimator ``f(x) = k(x, X) (K + ridge I)^-1 y``, whose training labels carry Gaussian
noise of variance ``noise_var``; ``E_g`` is the mean squared error against the noiseless target.

With a finite pool of ``N`` inputs standing for the data distribution (the uniform measure on the
pool), the operator's eigenvalues are those of ``K / N`` and the eigenfunctions are ``sqrt(N)``
times the eigenvectors, which is what `predicted_learning_curve` uses; `measured_learning_curve`
draws training sets from the same pool and measures the error over it, so the two are comparable.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import safe_divide

__all__ = [
    "eigendecomposition",
    "effective_rank",
    "LearningCurve",
    "learning_curve_from_spectrum",
    "predicted_learning_curve",
    "MeasuredLearningCurve",
    "measured_learning_curve",
]


def _check_kernel(kernel, fn: str):
    k = jnp.asarray(kernel)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"{fn}(kernel): expected a square (N, N) kernel matrix; got shape "
                         f"{k.shape}. For a Kernel use kernel_fn(x, None, 'ntk') (or 'nngp').")
    if not jnp.issubdtype(k.dtype, jnp.floating):
        k = k.astype(jnp.result_type(float))
    if not isinstance(k, jax.core.Tracer):
        scale = float(jnp.max(jnp.abs(k)))
        asym = float(jnp.max(jnp.abs(k - k.T)))
        if not np.isfinite(scale):
            raise ValueError(f"{fn}(kernel): the kernel has non-finite entries.")
        if asym > 1e3 * float(jnp.finfo(k.dtype).eps) * max(scale, 1e-30):
            raise ValueError(f"{fn}(kernel): the kernel is not symmetric (max |K - K^T| = "
                             f"{asym:.3g}, max |K| = {scale:.3g}); spectra need a symmetric "
                             f"kernel of one set of inputs, kernel_fn(x, None). If the asymmetry "
                             f"is rounding, pass (K + K.T) / 2.")
    return k


def eigendecomposition(kernel):
    """Eigenvalues (descending) and orthonormal eigenvectors (columns) of a symmetric kernel
    matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.analysis import eigendecomposition
      >>> values, vectors = eigendecomposition(jnp.array([[2., 1.], [1., 2.]]))
      >>> values.round(4).tolist(), abs(vectors[:, 0]).round(4).tolist()
      ([3.0, 1.0], [0.7071, 0.7071])
    """
    k = _check_kernel(kernel, "eigendecomposition")
    values, vectors = jnp.linalg.eigh((k + k.T) / 2)
    return values[::-1], vectors[:, ::-1]


def _spectrum(kernel_or_eigenvalues, fn):
    x = jnp.asarray(kernel_or_eigenvalues)
    if x.ndim == 1:
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))
    return eigendecomposition(_check_kernel(x, fn))[0]


def effective_rank(kernel_or_eigenvalues, kind: str = "entropy"):
    """Effective rank of a kernel (an (N, N) matrix) or of a spectrum (a 1-D array).

    * ``'entropy'``: ``exp(-sum p_k log p_k)`` with ``p_k = lambda_k / sum lambda`` (Roy and
      Vetterli 2007, "The effective rank: a measure of effective dimensionality").
    * ``'participation'``: the participation ratio ``(sum lambda_k)**2 / sum lambda_k**2``.

    Both equal ``r`` for ``r`` equal non-zero eigenvalues and are small when a few directions
    carry most of the kernel's power (fast spectral decay). Negative rounding-level eigenvalues
    are treated as 0.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.analysis import effective_rank
      >>> round(float(effective_rank(jnp.array([1., 1., 1., 0.]))), 4)
      3.0
      >>> round(float(effective_rank(jnp.array([3., 1.]), 'participation')), 4)   # 16 / 10
      1.6
    """
    if kind not in ("entropy", "participation"):
        raise ValueError(f"effective_rank(kind={kind!r}): kind must be 'entropy' or "
                         f"'participation'.")
    lam = jnp.clip(_spectrum(kernel_or_eigenvalues, "effective_rank"), 0, None)
    total = jnp.sum(lam)
    if kind == "participation":
        return safe_divide(total**2, jnp.sum(lam**2))
    p = safe_divide(lam, total)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0)
    return jnp.exp(-jnp.sum(plogp))


class LearningCurve(NamedTuple):
    """The predicted learning curve: ``error[i]`` is the expected test error with ``n_train[i]``
    training points; ``kappa`` and ``gamma`` are the self-consistent quantities of the theory."""

    n_train: Any
    error: Any
    kappa: Any
    gamma: Any


def _solve_kappa(eta, p, ridge, n_iter=200):
    """kappa > 0 with 1 = ridge / kappa + sum eta / (p eta + kappa), by bisection in log kappa;
    kappa = 0 where ridge = 0 and there are no more non-zero modes than samples."""
    total = jnp.sum(eta)
    hi = jnp.log(ridge + total + jnp.finfo(eta.dtype).tiny)
    lo = jnp.log(jnp.maximum(ridge, total * 1e-30) * 1e-6 + jnp.finfo(eta.dtype).tiny)

    def excess(log_k):
        k = jnp.exp(log_k)
        return ridge / k + jnp.sum(eta / (p * eta + k)) - 1

    def body(_, bounds):
        a, b = bounds
        mid = (a + b) / 2
        up = excess(mid) > 0
        return jnp.where(up, mid, a), jnp.where(up, b, mid)

    a, b = jax.lax.fori_loop(0, n_iter, body, (lo, hi))
    kappa = jnp.exp((a + b) / 2)
    n_modes = jnp.sum(eta > 0)
    return jnp.where((ridge == 0) & (n_modes <= p), 0.0, kappa)


def learning_curve_from_spectrum(eigenvalues, coefficients, n_train, ridge: float = 0.0,
                                 noise_var: float = 0.0) -> LearningCurve:
    """Expected test error of kernel regression against the number of training points, from the
    kernel's spectrum (Bordelon et al. 2020, arXiv:2002.02561; Canatar et al. 2021,
    arXiv:2006.13198; equations in the module docstring).

    Args:
      eigenvalues: eigenvalues ``eta_k`` of the kernel's integral operator over the data
        distribution (for a pool of N inputs: the eigenvalues of ``K / N``).
      coefficients: the target's coefficients ``a_k`` in the orthonormal eigenfunctions, shape
        ``(M,)`` or ``(M, outputs)`` (errors are averaged over outputs).
      n_train: the training-set sizes ``p`` (a number or a 1-D array).
      ridge: the ridge ``lambda`` of ``(K + lambda I)^-1`` (0: interpolation).
      noise_var: variance of the label noise on the training targets.

    Example:
      >>> from infwidth.analysis import learning_curve_from_spectrum
      >>> # one mode of eigenvalue 1 carrying the whole target, ridge 1: kappa solves
      >>> # kappa^2 + (p - 2) kappa - p = 0 (the golden ratio for p = 1)
      >>> lc = learning_curve_from_spectrum([1.], [1.], n_train=[1], ridge=1.)
      >>> round(float(lc.kappa[0]), 4), round(float(lc.error[0]), 4)
      (1.618, 0.4472)
    """
    eta = jnp.clip(jnp.asarray(eigenvalues, jnp.result_type(float)), 0, None)
    a = jnp.asarray(coefficients, eta.dtype)
    if eta.ndim != 1:
        raise ValueError(f"learning_curve_from_spectrum(eigenvalues): expected a 1-D spectrum; "
                         f"got shape {eta.shape}.")
    if a.shape[:1] != eta.shape:
        raise ValueError(f"learning_curve_from_spectrum(coefficients): expected shape "
                         f"({eta.shape[0]},) or ({eta.shape[0]}, outputs); got {a.shape}.")
    a2 = a**2 if a.ndim == 1 else jnp.mean(a**2, axis=1)
    p = np.atleast_1d(np.asarray(n_train))
    if p.ndim != 1 or np.any(p < 1):
        raise ValueError(f"learning_curve_from_spectrum(n_train={n_train!r}): n_train must be "
                         f"positive training-set sizes.")
    if ridge < 0 or noise_var < 0:
        raise ValueError(f"learning_curve_from_spectrum(ridge={ridge}, noise_var={noise_var}): "
                         f"both must be non-negative.")
    error, kappa, gamma = _theory(eta, a2, jnp.asarray(p, eta.dtype), jnp.asarray(ridge, eta.dtype),
                                  jnp.asarray(noise_var, eta.dtype))
    return LearningCurve(np.atleast_1d(np.asarray(n_train)), error, kappa, gamma)


@jax.jit
def _theory(eta, a2, sizes, ridge, noise_var):
    def one(p):
        kappa = _solve_kappa(eta, p, ridge)
        denom = p * eta + kappa
        # kappa / (p eta + kappa): 1 for modes of eigenvalue 0 (unlearnable), 0 once learnt
        unlearnt = safe_divide(kappa, denom, fill=1.0)
        gamma = jnp.sum(safe_divide(p * eta**2, denom**2))
        inv = safe_divide(1.0, 1 - gamma, fill=jnp.inf)
        error = inv * (jnp.sum(unlearnt**2 * a2) + noise_var * gamma)
        return error, kappa, gamma

    return jax.vmap(one)(sizes)


def _pool_spectrum(kernel, targets, fn):
    k = _check_kernel(kernel, fn)
    n = k.shape[0]
    y = jnp.asarray(targets, k.dtype)
    if y.shape[:1] != (n,) or y.ndim > 2:
        raise ValueError(f"{fn}(targets): expected shape ({n},) or ({n}, outputs) to match the "
                         f"kernel; got {y.shape}.")
    values, vectors = eigendecomposition(k)
    return k, y, values / n, vectors.T @ y / np.sqrt(n)


def predicted_learning_curve(kernel, targets, n_train, ridge: float = 0.0,
                             noise_var: float = 0.0) -> LearningCurve:
    """The theoretical learning curve of kernel regression on a pool of inputs standing for the
    data distribution (Bordelon et al. 2020, arXiv:2002.02561; Canatar et al. 2021,
    arXiv:2006.13198).

    The spectrum is that of ``kernel / N`` and the target coefficients ``V^T y / sqrt(N)``; see
    `learning_curve_from_spectrum` for the arguments and `measured_learning_curve` for the
    experiment it predicts.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.analysis import predicted_learning_curve
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (200, 3))
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))
      >>> lc = predicted_learning_curve(kernel_fn(x, None, 'ntk'), x[:, 0], [10, 100])
      >>> bool(lc.error[1] < lc.error[0] < jnp.mean(x[:, 0] ** 2))
      True
    """
    _, _, eta, a = _pool_spectrum(kernel, targets, "predicted_learning_curve")
    return learning_curve_from_spectrum(eta, a, n_train, ridge, noise_var)


class MeasuredLearningCurve(NamedTuple):
    """The measured learning curve: mean test error over draws of the training set and its
    standard error."""

    n_train: Any
    error: Any
    stderr: Any


def measured_learning_curve(kernel, targets, n_train, *, n_draws: int = 20, ridge: float = 0.0,
                            noise_var: float = 0.0, key=None) -> MeasuredLearningCurve:
    """Test error of kernel regression measured on a pool, averaged over training sets.

    For each size ``p`` and each of ``n_draws`` draws, ``p`` distinct pool points are chosen at
    random, their targets get Gaussian noise of variance ``noise_var``, the predictor
    ``k(x, X) (K_XX + ridge I)^-1 y_X`` is fitted, and its mean squared error against the clean
    targets over the whole pool is recorded. This is the quantity `predicted_learning_curve`
    predicts (up to sampling without replacement, negligible for ``p`` much below ``N``).

    Args:
      kernel: (N, N) kernel matrix of the pool.
      targets: (N,) or (N, outputs) clean targets.
      n_train: training-set sizes (each below N).
      n_draws: training sets drawn per size.
      ridge, noise_var: as in `learning_curve_from_spectrum`.
      key: a ``jax.random`` key (default ``PRNGKey(0)``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth.analysis import measured_learning_curve
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (50, 2))
      >>> mc = measured_learning_curve(x @ x.T, x[:, 0], [2], n_draws=3)   # linear kernel, 2-D
      >>> float(mc.error[0]) < 1e-3                                        # learns x[:, 0]
      True
    """
    k, y, _, _ = _pool_spectrum(kernel, targets, "measured_learning_curve")
    n = k.shape[0]
    sizes = np.atleast_1d(np.asarray(n_train))
    if sizes.ndim != 1 or np.any(sizes < 1) or np.any(sizes >= n):
        raise ValueError(f"measured_learning_curve(n_train={n_train!r}): sizes must be between 1 "
                         f"and N - 1 = {n - 1}.")
    if ridge < 0 or noise_var < 0 or n_draws < 1:
        raise ValueError(f"measured_learning_curve(ridge={ridge}, noise_var={noise_var}, "
                         f"n_draws={n_draws}): ridge and noise_var must be non-negative and "
                         f"n_draws positive.")
    key = jax.random.PRNGKey(0) if key is None else key
    y2 = y if y.ndim == 2 else y[:, None]
    means, errs = [], []
    for i, p in enumerate(sizes):
        keys = jax.random.split(jax.random.fold_in(key, i), n_draws)
        e = _krr_errors(k, y2, keys, int(p), jnp.asarray(ridge, k.dtype),
                        jnp.asarray(noise_var, k.dtype))
        means.append(jnp.mean(e))
        errs.append(jnp.std(e) / np.sqrt(n_draws))
    return MeasuredLearningCurve(sizes, jnp.stack(means), jnp.stack(errs))


@functools.partial(jax.jit, static_argnums=3)
def _krr_errors(k, y2, keys, p, ridge, noise_var):
    n = k.shape[0]

    def one(subkey):
        k_idx, k_noise = jax.random.split(subkey)
        idx = jax.random.permutation(k_idx, n)[:p]
        noisy = y2[idx] + jnp.sqrt(noise_var) * jax.random.normal(k_noise, y2[idx].shape, k.dtype)
        k_xx = k[idx][:, idx] + ridge * jnp.eye(p, dtype=k.dtype)
        # The pseudo-inverse (eigenvalues below p * eps * largest dropped): a rank-deficient
        # kernel gives the minimum-norm interpolant instead of NaN.
        pred = k[:, idx] @ (jnp.linalg.pinv(k_xx, hermitian=True) @ noisy)
        return jnp.mean((pred - y2) ** 2)

    return jax.vmap(one)(keys)
