"""Reading the variance of a parameter from the initializer that draws it.

Only the first two moments of the weights matter in the infinite-width limit (the central limit
theorem over the fan-in; Neal 1996, Lee et al. 2018, arXiv:1711.00165), so an initializer is
read as the mean and variance of the entries it draws for a given shape. The initializers of
`jax.nn.initializers` (which Flax re-exports) are closures; their arguments are read with
`inspect.getclosurevars`, and the variance follows from the formulas of those functions:

* ``variance_scaling(scale, mode, distribution)`` (``lecun_*``, ``he_*``, ``glorot_*``,
  ``xavier_*``, ``kaiming_*``): ``scale / n`` with ``n`` the fan-in, fan-out or their mean
  (fans computed from the shape with the initializer's ``in_axis``/``out_axis``/``batch_axis``,
  receptive field included), for 'normal', 'uniform' and 'truncated_normal' (whose standard
  deviation is corrected by the constant JAX uses);
* ``normal(stddev)``: ``stddev**2``; ``truncated_normal(stddev, lower, upper)``: ``stddev**2``
  times the variance of a standard normal truncated to ``[lower, upper]``;
* ``uniform(scale)``: mean ``scale / 2``, variance ``scale**2 / 12``;
* ``zeros``, ``ones``, ``constant(value)``: the constant, variance 0.
"""

from __future__ import annotations

import inspect
import math
from typing import NamedTuple

import numpy as np

# the standard deviation of a standard normal truncated to [-2, 2], as jax writes it in
# variance_scaling (jax/_src/nn/initializers.py)
_JAX_TRUNCATION_STD = 0.87962566103423978


class Moments(NamedTuple):
    """Mean and variance of the entries an initializer draws."""

    mean: float
    var: float


def _truncated_moments(lower: float, upper: float) -> Moments:
    """Mean and variance of a standard normal truncated to ``[lower, upper]``."""
    pdf = [math.exp(-t * t / 2) / math.sqrt(2 * math.pi) for t in (lower, upper)]
    z = 0.5 * (math.erf(upper / math.sqrt(2)) - math.erf(lower / math.sqrt(2)))
    mean = (pdf[0] - pdf[1]) / z
    var = 1 + (lower * pdf[0] - upper * pdf[1]) / z - mean**2
    return Moments(mean, var)


def _fans(shape, in_axis, out_axis, batch_axis) -> tuple[float, float]:
    """Fan-in and fan-out as `jax.nn.initializers.variance_scaling` computes them."""
    shape = tuple(shape)
    if len(shape) <= 1:
        raise ValueError(f"variance_scaling needs a parameter of rank >= 2, got shape {shape}")
    nd = len(shape)
    batch = (batch_axis,) if isinstance(batch_axis, int) else tuple(batch_axis)
    batch_size = math.prod(shape[b % nd] for b in batch)
    receptive = math.prod(shape) / (shape[in_axis] * shape[out_axis] * batch_size)
    return shape[in_axis] * receptive, shape[out_axis] * receptive


class FlatInit(NamedTuple):
    """An initializer applied to the 2-D ``(prod(in dims), prod(out dims))`` view of a
    parameter, then reshaped: how Flax's ``DenseGeneral`` / ``nnx.LinearGeneral`` draw
    multi-axis kernels (the fan-in is the contracted size, not the first axis times the
    receptive field of a convolution)."""

    init: object
    n_in: int

    def flat_shape(self, shape) -> tuple:
        return (math.prod(shape[:self.n_in]), math.prod(shape[self.n_in:]))

    def __call__(self, key, shape, dtype=None):
        kwargs = {} if dtype is None else {"dtype": dtype}
        return self.init(key, self.flat_shape(tuple(shape)), **kwargs).reshape(shape)


def _describe(init) -> str:
    return getattr(init, "__qualname__", type(init).__name__)


def initializer_moments(init, shape) -> Moments:
    """Mean and variance of the entries ``init(key, shape)`` draws.

    Raises ValueError for an initializer that is not one of `jax.nn.initializers`' (their
    variance cannot be read without drawing).

    >>> from jax.nn import initializers
    >>> initializer_moments(initializers.he_normal(), (64, 10)).var  # 2 / fan_in
    0.03125
    >>> initializer_moments(initializers.zeros, (10,))
    Moments(mean=0.0, var=0.0)
    """
    if isinstance(init, FlatInit):
        return initializer_moments(init.init, init.flat_shape(tuple(shape)))
    name = getattr(init, "__qualname__", "")
    if name in ("zeros", "ones"):
        return Moments(0.0 if name == "zeros" else 1.0, 0.0)
    try:
        args = inspect.getclosurevars(init).nonlocals
    except TypeError:
        args = None
    if args is None or not name.endswith(".<locals>.init"):
        raise ValueError(
            f"cannot read the variance of the initializer {_describe(init)}: only those of "
            f"jax.nn.initializers / flax.nnx.initializers (variance_scaling and its lecun_, he_, "
            f"glorot_ forms, normal, truncated_normal, uniform, zeros, ones, constant) can be "
            f"read. Pass initializers={{'path/to/param': jax.nn.initializers....}} to "
            f"from_flax to say how this parameter is drawn.")
    kind = name.split(".")[0]
    if kind == "constant":
        return Moments(float(np.asarray(args["value"]).mean()), 0.0)
    if kind == "normal":
        return Moments(0.0, float(args["stddev"]) ** 2)
    if kind == "uniform":
        scale = float(args["scale"])
        return Moments(scale / 2, scale**2 / 12)
    if kind == "truncated_normal":
        m = _truncated_moments(float(args["lower"]), float(args["upper"]))
        s = float(args["stddev"])
        return Moments(s * m.mean, s * s * m.var)
    if kind == "variance_scaling":
        fan_in, fan_out = _fans(shape, args["in_axis"], args["out_axis"], args["batch_axis"])
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
             "fan_geo_avg": math.sqrt(fan_in * fan_out)}.get(args["mode"])
        dist = args["distribution"]
        if n is None or dist not in ("normal", "uniform", "truncated_normal"):
            raise ValueError(f"variance_scaling(mode={args['mode']!r}, distribution={dist!r}) "
                             f"is not supported by from_flax (real-valued normal, uniform and "
                             f"truncated_normal only).")
        var = float(args["scale"]) / n
        if dist == "truncated_normal":
            var *= _truncated_moments(-2.0, 2.0).var / _JAX_TRUNCATION_STD**2
        return Moments(0.0, var)
    raise ValueError(f"cannot read the variance of the initializer {name}; pass initializers="
                     f"{{'path/to/param': ...}} with one of jax.nn.initializers.")
