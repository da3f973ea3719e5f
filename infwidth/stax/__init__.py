"""Layers as (init_fn, apply_fn, kernel_fn) triples, with neural-tangents' `stax` names.

Describe an architecture once and get the finite network and its infinite-width kernels:

>>> import jax, jax.numpy as jnp
>>> from infwidth import stax
>>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
>>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
>>> kernel_fn(x, x, get='ntk').shape
(4, 4)
"""

from ._layer import Layer
from .activations import ABRelu, Abs, Erf, LeakyRelu, Relu
from .branching import FanInConcat, FanInProd, FanInSum, FanOut, Scale
from .combinators import Identity, parallel, repeat, serial
from .dense import Dense
from .elementwise import elementwise

__all__ = [
    "Layer",
    "serial",
    "parallel",
    "Identity",
    "Dense",
    "elementwise",
    "ABRelu",
    "Relu",
    "LeakyRelu",
    "Abs",
    "Erf",
    "FanOut",
    "FanInSum",
    "FanInProd",
    "FanInConcat",
    "Scale",
    "repeat",
]

from .conv import Conv, ConvLocal, ConvTranspose  # noqa: E402
from .pooling import AvgPool, GlobalAvgPool, GlobalSumPool, SumPool  # noqa: E402
from .reshape import Flatten  # noqa: E402

__all__ += ["Conv", "ConvTranspose", "ConvLocal", "AvgPool", "SumPool", "GlobalAvgPool",
            "GlobalSumPool", "Flatten"]

from .output_scale import OutputScale  # noqa: E402

__all__ += ["OutputScale"]
