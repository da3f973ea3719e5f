"""Infinite-width kernels of Flax models (linen, nnx) and plain JAX functions, by tracing them.

>>> from infwidth.flax_tracing import from_flax, UnsupportedOperation
"""

from ._initializers import Moments, initializer_moments
from ._values import UnsupportedOperation
from .from_flax import from_flax

__all__ = ["from_flax", "UnsupportedOperation", "initializer_moments", "Moments"]
