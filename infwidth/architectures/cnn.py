"""Convolutional architectures: the Myrtle networks and a plain CNN."""

from __future__ import annotations

from .. import stax

_MYRTLE_STAGES = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}  # conv layers per resolution


def _activation(activation, builder):
    if isinstance(activation, tuple) and len(activation) == 3:
        return activation
    table = {"relu": stax.Relu, "erf": stax.Erf, "abs": stax.Abs}
    if isinstance(activation, str) and activation.lower() in table:
        return table[activation.lower()]()
    raise ValueError(f"{builder}(activation={activation!r}): activation must be one of "
                     f"{', '.join(repr(a) for a in table)} or a layer such as stax.Relu().")


def myrtle(depth: int = 5, width: int = 128, W_std: float = 2**0.5, b_std: float = 0.0,
           out_dim: int = 10, activation="relu", parameterization: str = "ntk") -> stax.Layer:
    """The Myrtle network of Shankar et al. 2020 ("Neural kernels without tangents",
    arXiv:2003.02237), for 32x32 images.

    3x3 'SAME' convolutions and ReLUs at three resolutions (``depth=5``: 2, 1, 1 convolutions;
    ``7``: 2, 2, 2; ``10``: 3, 3, 3), each followed by 2x2 average pooling with stride 2, then
    two more poolings (down to 1x1: the network expects 32x32 inputs), `Flatten` and `Dense`.
    ``depth`` counts the affine layers.

    Args:
      depth: 5, 7 or 10.
      width: channels of the finite network's convolutions (the kernel does not depend on it
        under 'ntk').
      W_std, b_std: weight and bias standard deviations of every affine layer.
      out_dim: outputs of the readout.
      activation: ``'relu'`` (the paper's), ``'erf'``, ``'abs'``, or a layer.
      parameterization: ``'ntk'`` or ``'standard'``.

    Example:
      >>> import jax
      >>> from infwidth.architectures import myrtle
      >>> init_fn, apply_fn, kernel_fn = myrtle(depth=5)
      >>> init_fn(jax.random.PRNGKey(0), (2, 32, 32, 3))[0]
      (2, 10)
      >>> kernel_fn = jax.jit(kernel_fn, static_argnames='get')  # compile once, then fast
      >>> # kernel_fn(x1, x2, get=('nngp', 'ntk')) for images of shape (N, 32, 32, 3)
    """
    if depth not in _MYRTLE_STAGES:
        raise ValueError(f"myrtle(depth={depth!r}): depth must be one of "
                         f"{', '.join(map(str, _MYRTLE_STAGES))}.")
    layers = []
    for stage, n_conv in enumerate(_MYRTLE_STAGES[depth]):
        for _ in range(n_conv):
            layers += [stax.Conv(width, (3, 3), padding="SAME", W_std=W_std, b_std=b_std,
                                 parameterization=parameterization),
                       _activation(activation, "myrtle")]
        n_pool = 3 if stage == 2 else 1
        layers += [stax.AvgPool((2, 2), strides=(2, 2))] * n_pool
    layers += [stax.Flatten(), stax.Dense(out_dim, W_std=W_std, b_std=b_std,
                                          parameterization=parameterization)]
    return stax.serial(*layers)


def cnn(depth: int = 3, width: int = 128, filter_shape=(3, 3), padding: str = "SAME",
        W_std: float = 2**0.5, b_std: float = 0.0, out_dim: int = 10, activation="relu",
        readout: str = "gap", parameterization: str = "ntk") -> stax.Layer:
    """A plain CNN: ``depth`` convolutions, each followed by the activation, then a readout.

    The readout is global average pooling (``readout='gap'``, translation invariant: Novak et
    al. 2019, arXiv:1810.05148; Arora et al. 2019, arXiv:1904.11955) or `Flatten`
    (``readout='flatten'``), followed by `Dense`. Networks with a Flatten readout can be
    evaluated with ``kernel_fn(..., diagonal_spatial=True)``, which only tracks per-position
    covariances and is far cheaper.

    Args:
      depth: number of convolutions.
      width: channels of the finite network.
      filter_shape, padding: of every convolution.
      W_std, b_std: weight and bias standard deviations of every affine layer.
      out_dim: outputs of the readout.
      activation: ``'relu'``, ``'erf'``, ``'abs'``, or a layer.
      readout: ``'gap'`` or ``'flatten'``.
      parameterization: ``'ntk'`` or ``'standard'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.architectures import cnn
      >>> _, _, kernel_fn = cnn(depth=2, readout='flatten')
      >>> kernel_fn(jnp.ones((3, 6, 6, 3)), get='ntk', diagonal_spatial=True).shape
      (3, 3)
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"cnn(depth={depth!r}): depth must be a positive integer.")
    readouts = {"gap": stax.GlobalAvgPool, "flatten": stax.Flatten}
    if readout not in readouts:
        raise ValueError(f"cnn(readout={readout!r}): readout must be 'gap' or 'flatten'.")
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(width, filter_shape, padding=padding, W_std=W_std, b_std=b_std,
                             parameterization=parameterization),
                   _activation(activation, "cnn")]
    layers += [readouts[readout](), stax.Dense(out_dim, W_std=W_std, b_std=b_std,
                                               parameterization=parameterization)]
    return stax.serial(*layers)
