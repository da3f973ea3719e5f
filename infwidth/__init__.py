"""infwidth: infinite-width neural networks in JAX.

Describe a network once as stax layers and get the finite network (``init_fn``, ``apply_fn``)
and its exact infinite-width NNGP and NTK kernels (``kernel_fn``). Around them:
``empirical`` (finite-width kernels of any JAX function), ``predict`` (GP inference and
gradient-descent dynamics), ``batch`` (tiled, sharded evaluation), ``analysis`` (criticality,
alignment, spectra, lazy-vs-rich diagnostics), ``mup`` (muP training with optax) and
``architectures`` (builders for the networks papers use).
"""

__version__ = "0.1.0"

from . import analysis, architectures, empirical, mup, predict, stax
from .batching import batch
from .kernel import Kernel

__all__ = ["Kernel", "batch", "stax", "empirical", "predict", "analysis", "mup", "architectures",
           "__version__"]
from .flax_tracing import from_flax as from_flax  # noqa: E402  (re-export)
