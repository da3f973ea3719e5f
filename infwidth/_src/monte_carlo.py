"""neural-tangents' ``_src.monte_carlo`` names (see `infwidth._src`)."""

from ..empirical.monte_carlo import monte_carlo_kernel_fn

__all__ = ["monte_carlo_kernel_fn"]
