"""Predictions from infinite-width kernels, with neural-tangents' ``predict`` names.

* `gp_inference`: NNGP / NTK Gaussian-process posterior (mean and covariance).
* `gradient_descent_mse`: closed-form gradient-flow dynamics under MSE, any time ``t``.
* `gradient_descent_mse_ensemble`: mean and covariance over an infinite ensemble of infinitely
  wide networks trained by gradient descent (or the NNGP posterior), straight from ``kernel_fn``.
* `gradient_descent`: other losses and momentum, by integrating the function-space ODE.
* `max_learning_rate`: the largest stable gradient-descent step.
* `kernel_regression`: NNGP / NTK regression straight from ``kernel_fn`` at large ``N``:
  Cholesky, matrix-free Nystrom-preconditioned CG over streamed kernel tiles, or random
  features (`infwidth.features`), sharded over devices and processes.

Numerics, common to every predictor:

* Use float64 (``jax.config.update('jax_enable_x64', True)``): kernel matrices of wide networks
  are badly conditioned, and float32 factorizations lose most of their digits.
* Each train-train kernel is factorized once (eigendecomposition for finite times, Cholesky
  or CG for ``t=None``) and reused by every later call, time, output and covariance.
* Eigenvalues at rounding level (``<= N * eps * largest``) or negative count as zero: those
  directions are never learned, also at ``t = inf`` (numpy's ``matrix_rank`` threshold).
* Negative predictive variances (float32 rounding when test points repeat training points) are
  set to 0, with a warning when they exceed ``sqrt(eps)`` of the prior variance.
* Train-train kernels that are complex, non-finite or not symmetric raise an error naming the
  entry; argument errors are raised before any kernel is computed.
* LAPACK runs with as many BLAS threads as there are idle cores (with the optional
  ``threadpoolctl``; ``INFWIDTH_BLAS_THREADS`` overrides).

Solvers and positive-definiteness handling live in `infwidth.predict.solvers` (`Cholesky`,
`CG`).

>>> import jax.numpy as jnp
>>> from infwidth import predict
>>> predict_fn = predict.gp_inference(jnp.eye(2), jnp.array([[1.], [2.]]))
>>> predict_fn('nngp', k_test_train=jnp.array([[0.5, 0.5]])).tolist()
[[1.5]]
"""

from .ensemble import gradient_descent_mse_ensemble
from .gp import Gaussian, gp_inference
from .mse import gradient_descent_mse, max_learning_rate
from .ode import ODEState, gradient_descent
from .regression import NotConvergedError, Prediction, kernel_regression
from .solvers import CG, Cholesky, NotPositiveDefiniteError

__all__ = [
    "Gaussian",
    "ODEState",
    "gp_inference",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "gradient_descent",
    "max_learning_rate",
    "Cholesky",
    "CG",
    "NotPositiveDefiniteError",
    "kernel_regression",
    "NotConvergedError",
    "Prediction",
]
