"""infwidth: infinite-width neural networks in JAX.

Describe a network once as stax layers and get the finite network (``init_fn``, ``apply_fn``)
and its exact infinite-width NNGP and NTK kernels (``kernel_fn``). Around them:
``empirical`` (finite-width kernels of any JAX function), ``predict`` (GP inference and
gradient-descent dynamics), ``batch`` (tiled, sharded evaluation), ``analysis`` (criticality,
alignment, spectra, lazy-vs-rich diagnostics), ``mup`` (muP training with optax) and
``architectures`` (builders for the networks papers use), ``applications`` (a quantum
error-correction decoder by kernel regression) and ``features`` (random-feature and
sketch maps of the kernels, for regression on millions of points).

As in neural-tangents, the empirical-kernel, Monte Carlo, linearization and batching functions
are also available at the top level, so ``import infwidth as nt`` runs code written for
``import neural_tangents as nt``.
"""

__version__ = "0.1.0"

from . import (
    analysis,
    applications,
    architectures,
    dmft,
    empirical,
    features,
    gp,
    mup,
    predict,
    stax,
)
from .batching import batch
from .empirical import (
    NtkImplementation,
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
    linearize,
    monte_carlo_kernel_fn,
    taylor_expand,
)
from .empirical.ntk_vp import empirical_ntk_vp_fn
from .flax_tracing import from_flax
from .kernel import Kernel

__all__ = ["Kernel", "batch", "stax", "empirical", "predict", "analysis", "mup", "architectures",
           "dmft", "gp", "applications", "features",
           "NtkImplementation", "empirical_kernel_fn", "empirical_nngp_fn", "empirical_ntk_fn",
           "empirical_ntk_vp_fn", "linearize", "monte_carlo_kernel_fn", "taylor_expand",
           "from_flax", "__version__"]
