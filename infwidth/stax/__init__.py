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
from ._tiling import tile_memory
from .activations import (
    ABRelu,
    Abs,
    Erf,
    Gelu,
    LeakyRelu,
    RectifiedMonomial,
    Relu,
    Sigmoid_like,
    Sign,
)
from .activations_poly import Hermite, Monomial, Polynomial
from .activations_trig import Cos, Exp, ExpNormalized, Gabor, Gaussian, Rbf, Sin
from .attention import GlobalSelfAttention
from .branching import FanInConcat, FanInProd, FanInSum, FanOut, Scale
from .combinators import Identity, parallel, repeat, serial
from .dense import Dense
from .elementwise import elementwise
from .graph import Aggregate
from .indexing import Index, Slice
from .normalization import Dropout, LayerNorm
from .numerical import (
    Elementwise,
    ElementwiseNumerical,
    Elu,
    Mish,
    Selu,
    Sigmoid,
    Silu,
    Softplus,
    Tanh,
)

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
    "Sign",
    "Sigmoid_like",
    "Gelu",
    "RectifiedMonomial",
    "Monomial",
    "Polynomial",
    "Hermite",
    "Sin",
    "Cos",
    "Rbf",
    "Gabor",
    "Gaussian",
    "Exp",
    "ExpNormalized",
    "Elementwise",
    "ElementwiseNumerical",
    "Tanh",
    "Sigmoid",
    "Silu",
    "Softplus",
    "Elu",
    "Selu",
    "Mish",
    "LayerNorm",
    "Dropout",
    "GlobalSelfAttention",
    "Aggregate",
    "Index",
    "Slice",
]

from .conv import Conv, ConvLocal, ConvTranspose  # noqa: E402
from .pooling import AvgPool, GlobalAvgPool, GlobalSumPool, SumPool  # noqa: E402
from .reshape import Flatten  # noqa: E402

__all__ += ["Conv", "ConvTranspose", "ConvLocal", "AvgPool", "SumPool", "GlobalAvgPool",
            "GlobalSumPool", "Flatten"]

from .output_scale import OutputScale  # noqa: E402

__all__ += ["OutputScale"]
__all__ += ["tile_memory"]

from .dot_general import DotGeneral  # noqa: E402
from .linear_maps import ImageResize  # noqa: E402
from .options import (  # noqa: E402
    AggregateImplementation,
    AttentionMechanism,
    Padding,
    PositionalEmbedding,
)
from .requirements import (  # noqa: E402
    Bool,
    Diagonal,
    MaskedArray,
    layer,
    requires,
    supports_masking,
    unmask_fn,
)

__all__ += ["DotGeneral", "ImageResize", "Padding", "PositionalEmbedding", "AttentionMechanism",
            "AggregateImplementation", "Bool", "Diagonal", "MaskedArray", "layer", "requires",
            "supports_masking", "unmask_fn"]

from .branching_dependent import DependentFanIn  # noqa: E402

__all__ += ["DependentFanIn"]

from .batch_norm import BatchNorm  # noqa: E402
from .pooling_max import GlobalMaxPool, MaxPool  # noqa: E402

__all__ += ["MaxPool", "GlobalMaxPool", "BatchNorm"]

from .recurrent import SimpleRNN  # noqa: E402

__all__ += ["SimpleRNN"]


def _named_after(layer_fn):
    """``layer_fn`` whose layers' three functions are named after it, as neural-tangents names
    them (``stax.Relu()[0].__name__ == 'Relu'``)."""
    @_functools.wraps(layer_fn)
    def build(*args, **kwargs):
        out = layer_fn(*args, **kwargs)
        if isinstance(out, Layer):
            for fn in out:
                try:
                    fn.__name__ = layer_fn.__name__
                except (AttributeError, TypeError):  # a builtin or a functools.partial
                    pass
        return out

    return build


def _name_layers():
    import inspect

    skip = {"layer", "requires", "unmask_fn", "tile_memory", "elementwise"}
    for _name in __all__:
        _obj = globals()[_name]
        if _name not in skip and inspect.isfunction(_obj):
            globals()[_name] = _named_after(_obj)


import functools as _functools  # noqa: E402

_name_layers()
