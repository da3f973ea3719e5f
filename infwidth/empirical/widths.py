"""Finite against infinite width: how far the empirical kernels of single networks are from the
analytic infinite-width kernel, as the width grows."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .nngp import empirical_nngp_fn
from .ntk import empirical_ntk_fn


class WidthComparison(NamedTuple):
    """Result of :func:`compare_widths`.

    Attributes:
      widths: the widths, shape ``(W,)``.
      errors: relative Frobenius error ``||K_emp - K_inf|| / ||K_inf||`` of every width and
        seed, shape ``(W, n_seeds)``.
      mean, std: mean and standard deviation over seeds, shape ``(W,)``.
      rate: slope of the least-squares line through ``(log width, log mean error)``; theory
        predicts about ``-0.5`` (fluctuations ~ 1/sqrt(width)).
      rate_stderr: standard error of that slope (``nan`` with two widths).
      prefactor: ``exp(intercept)``: the fitted error is ``prefactor * width**rate``.
      get: which kernel was compared, ``'ntk'`` or ``'nngp'``.
    """

    widths: np.ndarray
    errors: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    rate: float
    rate_stderr: float
    prefactor: float
    get: str

    def table(self) -> str:
        """A plain-text table of the errors and the fitted rate."""
        lines = [f"{'width':>8} {'rel. error (mean)':>18} {'std over seeds':>15} "
                 f"{'fit':>10}", "-" * 54]
        for w, m, s in zip(self.widths, self.mean, self.std):
            lines.append(f"{int(w):>8d} {m:>18.4g} {s:>15.3g} "
                         f"{self.prefactor * w ** self.rate:>10.4g}")
        se = "" if not np.isfinite(self.rate_stderr) else f" +- {self.rate_stderr:.2f}"
        lines.append(f"fitted rate: error ~ width^{self.rate:.3f}{se} (theory: -0.5)")
        return "\n".join(lines)


def fit_rate(widths, errors) -> tuple[float, float, float]:
    """Least-squares slope, its standard error and the prefactor of log(error) vs log(width).

    >>> fit_rate([10, 100, 1000], [1., .1, .01])[0]
    -1.0
    """
    lw, le = np.log(np.asarray(widths, float)), np.log(np.asarray(errors, float))
    if lw.size < 2:
        raise ValueError("fit_rate: need at least two widths to fit a rate.")
    A = np.stack([lw, np.ones_like(lw)], 1)
    coef, *_ = np.linalg.lstsq(A, le, rcond=None)
    resid = le - A @ coef
    if lw.size > 2:
        s2 = resid @ resid / (lw.size - 2)
        se = float(np.sqrt(s2 / np.sum((lw - lw.mean()) ** 2)))
    else:
        se = float("nan")
    return round(float(coef[0]), 12), se, float(np.exp(coef[1]))


def compare_widths(make_network, widths, x, n_seeds: int = 4, key=None, x2=None,
                   get: str = "ntk", implementation="auto", trace_axes=(-1,),
                   diagonal_axes=()) -> WidthComparison:
    """The empirical kernel of single networks against the analytic kernel, over widths.

    For each width ``make_network(width)`` must return a stax-like ``(init_fn, apply_fn,
    kernel_fn)``; ``n_seeds`` networks are drawn (keys ``fold_in(key, seed)``), their empirical
    NTK (or NNGP) on ``x`` (and ``x2``) is compared with ``kernel_fn(x, x2, get)`` by relative
    Frobenius error, and a power law is fitted to the mean error. For the NTK parameterization
    the error decays like ``width**-0.5`` (Jacot et al. 2018, arXiv:1806.07572; Lee et al. 2019,
    arXiv:1902.06720; Hanin & Nica 2019, arXiv:1909.05989).

    Example:
      >>> import jax
      >>> from infwidth import stax
      >>> from infwidth.empirical import compare_widths
      >>> def mlp(width):
      ...     return stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(1))
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
      >>> res = compare_widths(mlp, [32, 128, 512], x, n_seeds=3)
      >>> res.errors.shape, bool(-0.9 < res.rate < -0.1)
      ((3, 3), True)
    """
    caller = "compare_widths"
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w <= 0 for w in widths):
        raise ValueError(f"{caller}(widths={widths}): need at least two positive widths.")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1:
        raise ValueError(f"{caller}(n_seeds={n_seeds!r}): n_seeds must be a positive int.")
    if get not in ("ntk", "nngp"):
        raise ValueError(f"{caller}(get={get!r}): get must be 'ntk' or 'nngp'.")
    key = jax.random.PRNGKey(0) if key is None else key
    errors = np.zeros((len(widths), n_seeds))
    for i, w in enumerate(widths):
        init_fn, apply_fn, kernel_fn = make_network(w)
        exact = kernel_fn(x, x2, get)
        if get == "ntk":
            emp_fn = empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes,
                                      implementation=implementation)
        else:
            emp_fn = empirical_nngp_fn(apply_fn, trace_axes, diagonal_axes)

        def err(k, exact=exact, init_fn=init_fn, emp_fn=emp_fn):
            _, params = init_fn(k, x.shape)
            emp = emp_fn(x, x2, params)
            return jnp.linalg.norm(emp - exact) / jnp.linalg.norm(exact)

        keys = jnp.stack([jax.random.fold_in(key, s) for s in range(n_seeds)])
        errors[i] = np.asarray(jax.jit(jax.vmap(err))(keys))
    mean = errors.mean(1)
    rate, se, pref = fit_rate(widths, mean)
    return WidthComparison(np.asarray(widths), errors, mean, errors.std(1), rate, se, pref, get)
