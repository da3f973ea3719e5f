"""The Wide residual network of Zagoruyko & Komodakis 2016 ("Wide residual networks",
arXiv:1605.07146), in the pre-activation form whose kernel Novak et al. 2020 evaluate
("Neural Tangents", arXiv:1912.02803)."""

from __future__ import annotations

from .. import stax
from .cnn import _activation


def _block(channels, strides, project, conv, phi):
    main = stax.serial(phi, conv(channels, strides), phi, conv(channels, (1, 1)))
    shortcut = conv(channels, strides) if project else stax.Identity()
    return stax.serial(stax.FanOut(2), stax.parallel(main, shortcut), stax.FanInSum())


def _group(n_blocks, channels, strides, conv, phi):
    blocks = [_block(channels, strides, True, conv, phi)]
    blocks += [_block(channels, (1, 1), False, conv, phi) for _ in range(n_blocks - 1)]
    return stax.serial(*blocks)


def wide_resnet(block_size: int = 4, k: float = 1, num_classes: int = 10, W_std: float = 1.0,
                b_std: float = 0.0, parameterization: str = "ntk",
                activation="relu") -> stax.Layer:
    """A Wide-ResNet: a 3x3 convolution, three groups of ``block_size`` residual blocks with
    ``16 k``, ``32 k`` and ``64 k`` channels (the last two starting with stride 2), global
    average pooling and a dense readout.

    Each block is ``x + Conv(phi(Conv(phi(x))))`` (pre-activation, 3x3 'SAME' convolutions);
    the first block of a group replaces the identity shortcut by a 3x3 convolution, which also
    carries the stride. In the infinite-width limit the two branches are independent Gaussian
    processes and their kernels add (arXiv:1912.02803). WRN-28-10 is ``block_size=4, k=10``
    (the kernel does not depend on ``k`` under 'ntk').

    Args:
      block_size: residual blocks per group.
      k: width multiplier of the finite network.
      num_classes: outputs of the readout.
      W_std, b_std: of the convolutions (the readout uses ``W_std=1``, ``b_std=0``).
      parameterization: ``'ntk'`` or ``'standard'``.
      activation: ``'relu'``, ``'erf'``, ``'abs'`` or a layer such as ``stax.Relu()``.

    Example:
      >>> import jax
      >>> from infwidth.architectures import wide_resnet
      >>> init_fn, apply_fn, kernel_fn = wide_resnet(block_size=1, k=0.25)
      >>> init_fn(jax.random.PRNGKey(0), (2, 8, 8, 3))[0]
      (2, 10)
      >>> kernel_fn = jax.jit(kernel_fn, static_argnames='get')  # compile once (a few seconds)
      >>> # kernel_fn(x1, x2, get=('nngp', 'ntk')) for images x1, x2 of shape (N, H, W, 3)
    """
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"wide_resnet(block_size={block_size!r}): block_size must be a "
                         f"positive integer.")
    if not k > 0:
        raise ValueError(f"wide_resnet(k={k!r}): k must be positive.")
    phi = _activation(activation, "wide_resnet")

    def conv(channels, strides):
        return stax.Conv(channels, (3, 3), strides, padding="SAME", W_std=W_std, b_std=b_std,
                         parameterization=parameterization)

    widths = [max(1, int(c * k)) for c in (16, 32, 64)]
    return stax.serial(
        conv(16, (1, 1)),
        _group(block_size, widths[0], (1, 1), conv, phi),
        _group(block_size, widths[1], (2, 2), conv, phi),
        _group(block_size, widths[2], (2, 2), conv, phi),
        stax.GlobalAvgPool(),
        stax.Dense(num_classes, 1.0, 0.0, parameterization=parameterization),
    )
