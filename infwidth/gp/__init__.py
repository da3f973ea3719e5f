"""Gaussian-process modelling with infinite-width kernels: differentiable hyperparameters,
the evidence and other model-selection objectives, and hyperparameter fitting.

* `log_marginal_likelihood`, `leave_one_out_log_likelihood`, `validation_log_likelihood`,
  `validation_mse`: objectives of a kernel_fn, differentiable in its hyperparameters.
* `fit`: maximizes one of them over W_std, b_std, activation parameters and the noise level
  with an optax optimizer (L-BFGS by default).
* Adapters (optional extras, imported lazily): `infwidth.gp.sklearn.InfiniteWidthKernel`
  (scikit-learn) and `infwidth.gp.gpjax.InfiniteWidthKernel` (GPJax).

>>> import jax.numpy as jnp
>>> from infwidth import stax, gp
>>> _, _, kernel_fn = stax.serial(stax.Dense(1, 1.5, 0.1), stax.Relu(), stax.Dense(1))
>>> x = jnp.linspace(-1, 1, 5)[:, None]
>>> bool(jnp.isfinite(gp.log_marginal_likelihood(kernel_fn, x, x[:, 0], diag_reg=0.1)))
True
"""

from .fit import FitResult, fit
from .likelihood import (
    leave_one_out_log_likelihood,
    log_marginal_likelihood,
    stable_cholesky,
    validation_log_likelihood,
    validation_mse,
)

__all__ = [
    "log_marginal_likelihood",
    "leave_one_out_log_likelihood",
    "validation_log_likelihood",
    "validation_mse",
    "stable_cholesky",
    "fit",
    "FitResult",
]
