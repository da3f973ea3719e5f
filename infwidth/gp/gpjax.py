"""A GPJax kernel from any infinite-width network: its hyperparameters are GPJax parameters
(``PositiveReal`` by default), so ``gpx.fit`` / ``gpx.fit_scipy`` train them with the rest of
the model.

Needs GPJax (``pip install 'infwidth[gpjax]'``, GPJax 1.x); importing this module imports it.
"""

from __future__ import annotations

import typing as tp

import equinox as eqx
import jax
import jax.numpy as jnp
from gpjax.kernels.base import AbstractKernel
from gpjax.kernels.computations.base import AbstractKernelComputation
from gpjax.parameters import PositiveReal, val

__all__ = ["InfiniteWidthKernel", "InfiniteWidthComputation"]


class InfiniteWidthComputation(AbstractKernelComputation):
    """Evaluates whole kernel matrices with one ``kernel_fn`` call (not pair by pair)."""

    def _cross_covariance(self, kernel, x, y):
        return kernel.matrix(x, y)

    def _gram(self, kernel, x):
        return kernel.matrix(x, None)


class InfiniteWidthKernel(AbstractKernel):
    """The NNGP or NTK of an infinite-width network as a GPJax kernel.

    Args:
      net: ``net(**hparams) -> stax layer or kernel_fn``.
      hparams: ``{name: value}``; plain numbers become ``gpjax.parameters.PositiveReal``
        (trained in an unconstrained coordinate); pass a ``Real``, ``SigmoidBounded`` or other
        GPJax parameter for other domains, or a JAX array to keep a value fixed.
      get: ``'nngp'`` or ``'ntk'``.

    Example:
      >>> import jax.numpy as jnp, gpjax as gpx
      >>> from infwidth import stax
      >>> from infwidth.gp.gpjax import InfiniteWidthKernel
      >>> def relu_net(W_std, b_std):
      ...     return stax.serial(stax.Dense(1, W_std, b_std), stax.Relu(),
      ...                        stax.Dense(1, W_std, b_std))
      >>> kernel = InfiniteWidthKernel(relu_net, {'W_std': 1.5, 'b_std': 0.1})
      >>> x = jnp.linspace(-1, 1, 5)[:, None]
      >>> kernel.gram(x).as_matrix().shape
      (5, 5)
      >>> prior = gpx.gps.Prior(mean_function=gpx.mean_functions.Zero(), kernel=kernel)
      >>> posterior = prior * gpx.likelihoods.Gaussian(obs_stddev=0.1)
      >>> data = gpx.Dataset(X=x, y=jnp.abs(x))
      >>> bool(jnp.isfinite(gpx.objectives.conjugate_mll(posterior, data)))
      True
    """

    net: tp.Callable = eqx.field(static=True)
    hparams: dict
    get: str = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(self, net, hparams: dict, get: str = "nngp", active_dims=None):
        if not callable(net):
            raise TypeError(f"InfiniteWidthKernel(net={net!r}): net must be a function of the "
                            f"hyperparameters returning a stax layer or kernel_fn.")
        if not isinstance(hparams, dict) or not hparams:
            raise TypeError(f"InfiniteWidthKernel(hparams={hparams!r}): give a non-empty dict "
                            f"{{name: value}}.")
        if get not in ("nngp", "ntk"):
            raise ValueError(f"InfiniteWidthKernel(get={get!r}): get must be 'nngp' or 'ntk'.")
        params = {}
        for k, v in hparams.items():
            if isinstance(v, (int, float)):
                if not v > 0:
                    raise ValueError(f"InfiniteWidthKernel(hparams[{k!r}]={v!r}): a plain number "
                                     f"becomes a PositiveReal and must be > 0; pass "
                                     f"gpjax.parameters.Real({v!r}) for a signed value.")
                v = PositiveReal(float(v))
            params[k] = v
        self.net = net
        self.hparams = params
        self.get = get
        self.name = f"InfiniteWidth({getattr(net, '__name__', 'net')}, {get})"
        super().__init__(active_dims, None, InfiniteWidthComputation())

    def _kernel_fn(self):
        out = self.net(**{k: val(v) if not isinstance(v, jax.Array) else v
                          for k, v in self.hparams.items()})
        kernel_fn = getattr(out, "kernel_fn", None)
        if kernel_fn is None:
            kernel_fn = out[2] if isinstance(out, tuple) and len(out) == 3 else out
        return kernel_fn

    def matrix(self, x, y=None):
        """``K(x, y)`` ``(N, M)`` (``y=None``: ``K(x, x)``, computed as such)."""
        x = self.slice_input(jnp.atleast_2d(x))
        y = None if y is None else self.slice_input(jnp.atleast_2d(y))
        k = self._kernel_fn()(x, y, get=self.get)
        if k.ndim != 2:
            raise ValueError(f"InfiniteWidthKernel: the network's {self.get} has shape "
                             f"{k.shape}; end it with Flatten or GlobalAvgPool and a Dense "
                             f"readout.")
        return k

    def __call__(self, x, y):
        return self.matrix(x[None], y[None])[0, 0]
