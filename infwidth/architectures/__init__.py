"""Builders for architectures that papers use, each returning an ``(init_fn, apply_fn,
kernel_fn)`` triple made of `infwidth.stax` layers.

>>> from infwidth import architectures
>>> init_fn, apply_fn, kernel_fn = architectures.myrtle(depth=5)
"""

from .cnn import cnn, myrtle
from .resnet import dense_resnet, residual, transformer, transformer_block
from .unet import unet
from .wide_resnet import wide_resnet

__all__ = ["myrtle", "cnn", "wide_resnet", "unet"]
__all__ += ["residual", "dense_resnet", "transformer_block", "transformer"]
