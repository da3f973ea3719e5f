"""A scikit-learn kernel from any infinite-width network, so that
``GaussianProcessRegressor`` and ``GaussianProcessClassifier`` fit its hyperparameters.

Needs scikit-learn (``pip install 'infwidth[sklearn]'``); importing this module imports it.
"""

from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

__all__ = ["InfiniteWidthKernel"]


@contextlib.contextmanager
def _x64():
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(True):
            yield
    else:  # pragma: no cover - older JAX
        from jax.experimental import enable_x64

        with enable_x64():
            yield


def _kernel_fn_of(net, hparams: dict):
    out = net(**hparams)
    kernel_fn = getattr(out, "kernel_fn", None)
    if kernel_fn is None and isinstance(out, tuple) and len(out) == 3:
        kernel_fn = out[2]
    if kernel_fn is None and callable(out):
        kernel_fn = out
    if kernel_fn is None:
        raise TypeError(f"InfiniteWidthKernel(net={net!r}): net(**hparams) must return a stax "
                        f"layer (init_fn, apply_fn, kernel_fn) or a kernel_fn, got {out!r}.")
    return kernel_fn


@functools.lru_cache(maxsize=64)
def _compiled(net, get: str, names: tuple, fixed: tuple):
    """Jitted ``(log_theta, x1, x2) -> K`` and ``(log_theta, x) -> (K, dK/dlog_theta)``."""

    def kernel(log_theta, x1, x2):
        values = dict(fixed)
        values.update({n: jnp.exp(t) for n, t in zip(names, log_theta)})
        k = _kernel_fn_of(net, values)(x1, x2, get=get)
        if k.ndim != 2:
            raise ValueError(f"InfiniteWidthKernel: the network's {get} has shape {k.shape}; "
                             f"end it with Flatten or GlobalAvgPool and a Dense readout.")
        return k

    def with_gradient(log_theta, x):
        k, lin = jax.linearize(lambda t: kernel(t, x, None), log_theta)
        grads = jax.vmap(lin, out_axes=-1)(jnp.eye(log_theta.shape[0], dtype=log_theta.dtype))
        return k, grads

    def diag(log_theta, x):
        return jax.vmap(lambda xi: kernel(log_theta, xi[None], None)[0, 0])(x)

    return jax.jit(kernel), jax.jit(with_gradient), jax.jit(diag)


class InfiniteWidthKernel(Kernel):
    """The NNGP or NTK of an infinite-width network as a scikit-learn ``Kernel``.

    ``net(**hparams)`` builds the network (a stax layer or its ``kernel_fn``) from positive
    scalar hyperparameters such as ``W_std`` and ``b_std``; scikit-learn optimizes their
    logarithms (``theta``) within ``bounds`` by maximizing the marginal likelihood, with exact
    gradients from JAX (``eval_gradient=True``, forward mode). Kernels are computed in float64.
    Combine it with scikit-learn's kernels as usual: ``+ WhiteKernel()`` learns the noise,
    ``ConstantKernel() *`` an output scale.

    Args:
      net: ``net(**hparams) -> stax layer or kernel_fn``; hashable (a function).
      hparams: ``{name: value}``, the starting values (> 0).
      bounds: ``{name: (low, high) or 'fixed'}``; default ``(1e-3, 1e3)`` for each.
      get: ``'nngp'`` or ``'ntk'``.

    Example:
      >>> import numpy as np
      >>> from sklearn.gaussian_process import GaussianProcessRegressor
      >>> from sklearn.gaussian_process.kernels import WhiteKernel
      >>> from infwidth import stax
      >>> from infwidth.gp.sklearn import InfiniteWidthKernel
      >>> def relu_net(W_std, b_std):
      ...     return stax.serial(stax.Dense(1, W_std, b_std), stax.Relu(),
      ...                        stax.Dense(1, W_std, b_std))
      >>> kernel = InfiniteWidthKernel(relu_net, {'W_std': 1.5, 'b_std': 0.1}) + WhiteKernel()
      >>> x = np.linspace(-2, 2, 20)[:, None]
      >>> gpr = GaussianProcessRegressor(kernel, random_state=0).fit(x, np.abs(x[:, 0]))
      >>> bool(gpr.log_marginal_likelihood_value_ > gpr.log_marginal_likelihood(
      ...     kernel.theta))
      True
    """

    def __init__(self, net, hparams=None, bounds=None, get: str = "nngp"):
        self.net = net
        self.hparams = hparams
        self.bounds_ = bounds  # not "bounds": that name is the Kernel property
        self.get = get

    # scikit-learn reads the constructor's arguments by name; 'bounds' is stored as bounds_.
    def get_params(self, deep=True):
        return {"net": self.net, "hparams": self.hparams, "bounds": self.bounds_,
                "get": self.get}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in ("net", "hparams", "bounds", "get"):
                raise ValueError(f"InfiniteWidthKernel.set_params: unknown parameter {k!r}.")
            setattr(self, "bounds_" if k == "bounds" else k, v)
        return self

    def _checked(self):
        name = "InfiniteWidthKernel"
        if not callable(self.net):
            raise TypeError(f"{name}(net={self.net!r}): net must be a function of the "
                            f"hyperparameters returning a stax layer or kernel_fn.")
        if not isinstance(self.hparams, dict) or not self.hparams:
            raise TypeError(f"{name}(hparams={self.hparams!r}): give a non-empty dict "
                            f"{{name: value}} of positive scalars, e.g. {{'W_std': 1.5}}.")
        for k, v in self.hparams.items():
            try:
                ok = float(v) > 0 and math.isfinite(float(v))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{name}(hparams[{k!r}]={v!r}): scikit-learn optimizes the "
                                 f"logarithm of each hyperparameter, so it must be a positive "
                                 f"finite scalar.")
        if self.get not in ("nngp", "ntk"):
            raise ValueError(f"{name}(get={self.get!r}): get must be 'nngp' or 'ntk'.")
        bounds = dict(self.bounds_ or {})
        unknown = set(bounds) - set(self.hparams)
        if unknown:
            raise ValueError(f"{name}(bounds=...): {sorted(unknown)} are not in hparams.")
        return bounds

    @property
    def hyperparameters(self):
        bounds = self._checked()
        out = []
        for k in self.hparams:
            b = bounds.get(k, (1e-3, 1e3))
            fixed = isinstance(b, str) and b == "fixed"
            out.append(Hyperparameter(k, "numeric", "fixed" if fixed else tuple(b), 1, fixed))
        return out

    def _free(self):
        return tuple(h.name for h in self.hyperparameters if not h.fixed)

    @property
    def theta(self):
        return np.log(np.array([float(self.hparams[n]) for n in self._free()], dtype=float))

    @theta.setter
    def theta(self, theta):
        names = self._free()
        theta = np.asarray(theta, dtype=float).reshape(-1)
        if theta.shape[0] != len(names):
            raise ValueError(f"InfiniteWidthKernel.theta: got {theta.shape[0]} values for the "
                             f"{len(names)} free hyperparameters {names}.")
        self.hparams = {**self.hparams, **{n: float(np.exp(t)) for n, t in zip(names, theta)}}

    @property
    def bounds(self):
        free = [h for h in self.hyperparameters if not h.fixed]
        if not free:
            return np.empty((0, 2))
        return np.log(np.vstack([np.asarray(h.bounds, dtype=float) for h in free]))

    def _functions(self):
        names = self._free()
        fixed = tuple(sorted((k, float(v)) for k, v in self.hparams.items() if k not in names))
        return _compiled(self.net, self.get, names, fixed)

    def __call__(self, X, Y=None, eval_gradient=False):
        """The kernel matrix ``K(X, Y)`` (and ``dK / dtheta``, shape ``(N, N, n_theta)``)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if Y is not None and eval_gradient:
            raise ValueError("InfiniteWidthKernel: eval_gradient=True is only defined for Y=None.")
        kernel, with_gradient, _ = self._functions()
        with _x64():
            theta = jnp.asarray(self.theta)
            if eval_gradient:
                k, g = with_gradient(theta, jnp.asarray(X))
                return np.asarray(k), np.asarray(g)
            x2 = None if Y is None else jnp.asarray(np.atleast_2d(np.asarray(Y, dtype=float)))
            return np.asarray(kernel(theta, jnp.asarray(X), x2))

    def diag(self, X):
        """``K(X, X)``'s diagonal, one input at a time (no ``N x N`` array)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        with _x64():
            return np.asarray(self._functions()[2](jnp.asarray(self.theta), jnp.asarray(X)))

    def is_stationary(self):
        return False

    @property
    def requires_vector_input(self):
        return True

    def __repr__(self):
        h = ", ".join(f"{k}={float(v):.3g}" for k, v in (self.hparams or {}).items())
        return f"InfiniteWidthKernel({getattr(self.net, '__name__', self.net)}, {h})"
