"""infwidth: infinite-width neural networks in JAX.

Describe a network once as stax layers and get the finite network (``init_fn``, ``apply_fn``)
and its exact infinite-width NNGP and NTK kernels (``kernel_fn``).
"""

from . import predict, stax  # noqa: F401  (predict: infwidth.predict)
from .kernel import Kernel

__version__ = "0.1.0"

__all__ = ["Kernel", "stax", "__version__"]

from .batching import batch  # noqa: E402

__all__ += ["batch"]

from . import analysis, mup  # noqa: E402,F401  (infwidth.analysis, infwidth.mup)
from . import empirical  # noqa: E402,F401  (infwidth.empirical)
