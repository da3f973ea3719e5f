"""The U-Net of Ronneberger, Fischer & Brox 2015 ("U-Net: convolutional networks for biomedical
image segmentation", arXiv:1505.04597), as a layer triple with its infinite-width kernel.

A contracting path of convolution blocks and 2x downsamplings, an expanding path of 2x2
transposed convolutions, each concatenated along channels with the encoder features of the same
resolution (the skip connection), and a 1x1 convolution per pixel. In the infinite-width limit
the channels of a concatenation contribute in proportion to their number (the concatenation's
kernel is the channel-weighted average of the branch kernels; Novak et al. 2020, "Neural
Tangents", arXiv:1912.02803; Yang 2019, arXiv:1910.12478), and the output is not Gaussian, so a
convolution follows it, as in the paper. The up-convolution divides the channels by the
level's growth factor, as in the paper, so it has as many channels as the skip: the two halves
weigh equally and the kernel does not depend on ``width`` or ``channel_multiplier`` under 'ntk'.
"""

from __future__ import annotations

from .. import stax
from ..stax._layer import check_positive_int, make_layer
from .cnn import _activation

_DOWNSAMPLE = ("avgpool", "conv")
_READOUT = ("pixel", "gap")


def _check_input(depth: int, downsample: str, readout: str) -> stax.Layer:
    """Identity that checks, before any work, that the image sides halve ``depth`` times and
    that ``diagonal_spatial=True`` suits the network."""
    factor = 2**depth

    def check(shape, arg):
        if len(shape) < 3 or any(s % factor for s in shape[1:-1]):
            raise ValueError(
                f"unet(depth={depth}): {arg} must be images (N, *spatial, C) whose sides are "
                f"multiples of 2**depth = {factor} (each level halves them, and the decoder "
                f"must recover the encoder's sizes to concatenate); got shape {tuple(shape)}. "
                f"Crop or pad the images, or lower depth.")

    def init_fn(key, input_shape):
        check(tuple(input_shape), "input_shape")
        return tuple(input_shape), ()

    def apply_fn(params, x, **kwargs):
        check(x.shape, "x")
        return x

    def kernel_map(k, **kwargs):
        check(k.shape1, "x1")
        check(k.shape2, "x2")
        if k.diagonal_spatial and (readout == "gap" or downsample == "avgpool" and depth):
            arg = "readout='gap'" if readout == "gap" else "downsample='avgpool'"
            raise ValueError(
                f"unet({arg}): kernel_fn(..., diagonal_spatial=True) keeps only equal pixels, "
                f"but {'global' if readout == 'gap' else 'average'} pooling mixes pixels. Use "
                f"diagonal_spatial=False, or unet(downsample='conv', readout='pixel') for "
                f"per-pixel kernels.")
        return k

    return make_layer("unet_input", init_fn, apply_fn, kernel_map, shape_fn=lambda s: s,
                      family="linear", hparams={"apply_fn": apply_fn})


def unet(depth: int = 2, width: int = 64, n_conv: int = 2, filter_shape=(3, 3),
         channel_multiplier: int = 2, downsample: str = "avgpool", readout: str = "pixel",
         out_dim: int = 1, W_std: float = 2**0.5, b_std: float = 0.0, activation="relu",
         parameterization: str = "ntk") -> stax.Layer:
    """A U-Net (Ronneberger et al. 2015, arXiv:1505.04597) for images ``(N, *spatial, C)``.

    Level ``l = 0 .. depth`` has ``width * channel_multiplier**l`` channels. A block is
    ``n_conv`` times (``Conv(filter_shape, 'SAME')``, activation). The encoder applies a block
    and keeps its output for the skip, then halves the resolution; after ``depth`` levels a
    bottleneck block follows. The decoder then, level by level, applies ``ConvTranspose((2,
    2), strides=2)`` to the level's channel count, concatenates the skip along channels
    (`stax.FanInConcat`) and applies a block. 'SAME' padding (the paper crops 'VALID'
    convolutions instead) keeps the sizes aligned; the image sides must be multiples of
    ``2**depth``.

    Kernels (``kernel_fn(x1, x2, get=..., diagonal_spatial=...)``):

    * ``readout='pixel'``: ``Conv(out_dim, (1, 1))``, one output per pixel, as in the paper.
      The kernel is ``(N1, N2, H, H', W, W')``: the covariance of every pixel pair, at
      ``N1 N2 (H W)**2`` numbers per array (4 MiB per image pair at 32x32 in float32; the
      encoder's skip kernels stay alive until the decoder uses them, so the peak is a few
      times that). With ``downsample='conv'`` nothing mixes positions except through the
      convolutions, so ``diagonal_spatial=True`` is exact for the per-pixel kernel
      ``(N1, N2, H, W)`` (equal pixels only) at ``N1 N2 H W`` numbers per array;
      ``downsample='avgpool'`` needs the covariances between pixels and raises there.
    * ``readout='gap'``: global average pooling and ``Dense(out_dim)``: one kernel value per
      image pair ``(N1, N2)``, computed through the full pixel covariances
      (``diagonal_spatial=False``).

    Args:
      depth: number of downsamplings (0: a plain convolutional network).
      width: channels of level 0 of the finite network.
      n_conv: convolutions per block (the paper's 2).
      filter_shape: of the block convolutions (the paper's 3x3).
      channel_multiplier: channel growth per level (the paper's 2).
      downsample: ``'avgpool'`` (2x2 average pooling; the paper max-pools, whose kernel has no
        closed form) or ``'conv'`` (a 2x2 convolution with stride 2 and the activation).
      readout: ``'pixel'`` or ``'gap'``.
      out_dim: output channels (per pixel, or per image with ``'gap'``).
      W_std, b_std: of every affine layer.
      activation: ``'relu'``, ``'erf'``, ``'abs'``, or a layer such as ``stax.Relu()``.
      parameterization: ``'ntk'`` or ``'standard'``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth.architectures import unet
      >>> init_fn, apply_fn, kernel_fn = unet(depth=1, width=4, n_conv=1)
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
      >>> out_shape, params = init_fn(jax.random.PRNGKey(1), x.shape)
      >>> out_shape, apply_fn(params, x).shape
      ((2, 8, 8, 1), (2, 8, 8, 1))
      >>> kernel_fn = jax.jit(kernel_fn, static_argnames=('get', 'diagonal_spatial'))
      >>> kernel_fn(x, get='ntk').shape  # every pixel pair of every image pair
      (2, 2, 8, 8, 8, 8)
      >>> _, _, kernel_fn = unet(depth=1, n_conv=1, downsample='conv')
      >>> kernel_fn = jax.jit(kernel_fn, static_argnames=('get', 'diagonal_spatial'))
      >>> kernel_fn(x, get='ntk', diagonal_spatial=True).shape  # equal pixels only
      (2, 2, 8, 8)
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"unet(depth={depth!r}): depth must be a non-negative integer.")
    width = check_positive_int(width, "width", "unet")
    n_conv = check_positive_int(n_conv, "n_conv", "unet")
    channel_multiplier = check_positive_int(channel_multiplier, "channel_multiplier", "unet")
    out_dim = check_positive_int(out_dim, "out_dim", "unet")
    if downsample not in _DOWNSAMPLE:
        raise ValueError(f"unet(downsample={downsample!r}): downsample must be 'avgpool' or "
                         f"'conv'.")
    if readout not in _READOUT:
        raise ValueError(f"unet(readout={readout!r}): readout must be 'pixel' or 'gap'.")
    phi = _activation(activation, "unet")

    def conv(channels, shape, strides=None, transpose=False):
        layer = stax.ConvTranspose if transpose else stax.Conv
        return layer(channels, shape, strides, padding="SAME", W_std=W_std, b_std=b_std,
                     parameterization=parameterization)

    def block(channels):
        return stax.serial(*[stax.serial(conv(channels, filter_shape), phi)
                             for _ in range(n_conv)])

    channels = [width * channel_multiplier**level for level in range(depth + 1)]
    n_spatial = len(tuple(filter_shape)) if isinstance(filter_shape, (tuple, list)) else 2
    two = (2,) * n_spatial  # the 2x2 windows and strides of down- and upsampling

    def down(level):
        if downsample == "avgpool":
            return stax.AvgPool(two, strides=two)
        return stax.serial(conv(channels[level + 1], two, two), phi)

    body = block(channels[depth])  # the bottleneck
    for level in reversed(range(depth)):
        expand = stax.serial(down(level), body, conv(channels[level], two, two, True))
        body = stax.serial(block(channels[level]), stax.FanOut(2),
                           stax.parallel(stax.Identity(), expand), stax.FanInConcat(),
                           block(channels[level]))
    if readout == "pixel":
        head = [conv(out_dim, (1,) * n_spatial)]
    else:
        head = [stax.GlobalAvgPool(), stax.Dense(out_dim, W_std=W_std, b_std=b_std,
                                                 parameterization=parameterization)]
    return stax.serial(_check_input(depth, downsample, readout), body, *head)
