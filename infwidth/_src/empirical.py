"""neural-tangents' ``_src.empirical`` names (see `infwidth._src`)."""

from ..empirical import NtkImplementation, empirical_kernel_fn, empirical_nngp_fn, empirical_ntk_fn

__all__ = ["NtkImplementation", "empirical_kernel_fn", "empirical_nngp_fn", "empirical_ntk_fn",
           "_DEFAULT_TESTING_NTK_IMPLEMENTATION"]

#: the empirical NTK method neural-tangents' tests use (its value there)
_DEFAULT_TESTING_NTK_IMPLEMENTATION = NtkImplementation.STRUCTURED_DERIVATIVES
