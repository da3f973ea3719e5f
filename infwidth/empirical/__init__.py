"""Finite-width kernels: empirical NTK/NNGP of any JAX function, Monte Carlo estimates of the
infinite-width kernels, linearization, and the finite-vs-infinite comparison over widths.

Names and semantics follow neural-tangents 0.6.5 (``nt.empirical_ntk_fn``, ``nt.linearize``,
``nt.monte_carlo_kernel_fn``, ...).
"""

from ._costs import EmpiricalMemoryError, memory_limit
from ._flax import nnx_apply_fn
from .debug import Fallback, FallbackReport, structured_fallbacks
from .linearize import linearize, taylor_expand
from .monte_carlo import MonteCarloEstimate, monte_carlo_kernel_fn
from .nngp import empirical_kernel_fn, empirical_nngp_fn
from .ntk import DEFAULT_NTK_IMPLEMENTATION, NtkImplementation, empirical_ntk_fn
from .widths import WidthComparison, compare_widths, fit_rate

__all__ = [
    "NtkImplementation",
    "DEFAULT_NTK_IMPLEMENTATION",
    "empirical_ntk_fn",
    "memory_limit",
    "EmpiricalMemoryError",
    "structured_fallbacks",
    "Fallback",
    "FallbackReport",
    "empirical_nngp_fn",
    "empirical_kernel_fn",
    "monte_carlo_kernel_fn",
    "MonteCarloEstimate",
    "linearize",
    "taylor_expand",
    "nnx_apply_fn",
    "compare_widths",
    "WidthComparison",
    "fit_rate",
]
