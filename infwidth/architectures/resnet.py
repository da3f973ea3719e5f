"""Residual networks (dense and convolutional) and a transformer encoder, as layer triples."""

from __future__ import annotations

from .. import stax
from ..stax._layer import check_positive_int
from .cnn import _activation


def _branch_scale(branch_scale, depth: int, builder: str):
    if branch_scale is None:
        return None
    if branch_scale == "1/sqrt(depth)":
        return depth**-0.5
    try:
        return float(branch_scale)
    except (TypeError, ValueError):
        raise ValueError(f"{builder}(branch_scale={branch_scale!r}): branch_scale must be None, "
                         f"a number or '1/sqrt(depth)'.") from None


def residual(branch: stax.Layer, shortcut: stax.Layer | None = None) -> stax.Layer:
    """``x -> shortcut(x) + branch(x)`` (``shortcut`` defaults to the identity).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.architectures import residual
      >>> _, _, kernel_fn = stax.serial(stax.Dense(4), residual(stax.Dense(4, W_std=0.)))
      >>> kernel_fn(jnp.array([[2., 0.]]), get='nngp').tolist()  # branch adds nothing
      [[2.0]]
    """
    return stax.serial(stax.FanOut(2),
                       stax.parallel(stax.Identity() if shortcut is None else shortcut, branch),
                       stax.FanInSum())


def dense_resnet(depth: int = 10, width: int = 512, W_std: float = 2**0.5, b_std: float = 0.0,
                 out_dim: int = 1, activation="relu", branch_scale=None,
                 use_repeat: bool = True, parameterization: str = "ntk") -> stax.Layer:
    """A fully connected residual network (He et al. 2016, arXiv:1603.05027, pre-activation).

    ``Dense(width)``, then ``depth`` blocks ``x + c * Dense(phi(x))``, then ``phi`` and
    ``Dense(out_dim)``. With ``branch_scale='1/sqrt(depth)'`` (``c = depth**-0.5``) the kernel has
    a limit as the depth grows too (Hayou et al. 2021, arXiv:2105.01591); without it the kernel's
    scale grows with depth. ``use_repeat`` builds the blocks with `stax.repeat` (one compiled
    loop); parameters are then stacked over the blocks.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.architectures import dense_resnet
      >>> _, _, kernel_fn = dense_resnet(depth=50, branch_scale='1/sqrt(depth)')
      >>> kernel_fn(jnp.eye(2, 3), get='nngp').shape
      (2, 2)
    """
    depth = check_positive_int(depth, "depth", "dense_resnet")
    scale = _branch_scale(branch_scale, depth, "dense_resnet")
    phi = _activation(activation, "dense_resnet")
    branch = [phi, stax.Dense(width, W_std, b_std, parameterization=parameterization)]
    if scale is not None:
        branch.append(stax.Scale(scale))
    block = residual(stax.serial(*branch))
    body = stax.repeat(block, depth) if use_repeat else stax.serial(*[block] * depth)
    return stax.serial(stax.Dense(width, W_std, b_std, parameterization=parameterization), body,
                       phi, stax.Dense(out_dim, W_std, b_std, parameterization=parameterization))


def transformer_block(n_chan: int = 256, n_heads: int = 8, n_chan_key: int | None = None,
                      mlp_width: int | None = None, W_std: float = 1.0, b_std: float = 0.0,
                      attention_mechanism: str = "SOFTMAX", activation="relu",
                      pos_emb_type: str = "NONE", layer_norm: bool = True) -> stax.Layer:
    """A pre-LayerNorm transformer encoder block (Vaswani et al. 2017, arXiv:1706.03762; the
    infinite-width limit of Hron et al. 2020, arXiv:2006.10540) on ``(N, T, n_chan)``:

    ``x + Attention(LN(x))``, then ``y + Dense(phi(Dense(LN(y))))``. Its input must be Gaussian
    (e.g. follow a `Dense` embedding), and it keeps the shape, so it can be `stax.repeat`-ed.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.architectures import transformer_block
      >>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(32), transformer_block(32, 4))
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5))
      >>> _, params = init_fn(jax.random.PRNGKey(1), x.shape)
      >>> apply_fn(params, x).shape, kernel_fn(x, get='nngp').shape
      ((2, 6, 32), (2, 2, 6, 6))
    """
    n_chan_key = n_chan // n_heads if n_chan_key is None else n_chan_key
    mlp_width = 4 * n_chan if mlp_width is None else mlp_width
    phi = _activation(activation, "transformer_block")

    def ln():
        return [stax.LayerNorm()] if layer_norm else []

    attention = stax.GlobalSelfAttention(
        n_chan, n_chan_key, max(n_chan // n_heads, 1), n_heads, W_key_std=W_std,
        W_query_std=W_std, W_value_std=W_std, W_out_std=1.0, b_std=b_std,
        attention_mechanism=attention_mechanism, pos_emb_type=pos_emb_type)
    mlp = stax.serial(*ln(), stax.Dense(mlp_width, W_std, b_std), phi,
                      stax.Dense(n_chan, W_std, b_std))
    return stax.serial(residual(stax.serial(*ln(), attention)), residual(mlp))


def transformer(depth: int = 2, n_chan: int = 256, n_heads: int = 8, out_dim: int = 1,
                W_std: float = 1.0, b_std: float = 0.0, attention_mechanism: str = "SOFTMAX",
                pos_emb_type: str = "SUM", use_repeat: bool = True) -> stax.Layer:
    """A transformer encoder for sequences ``(N, T, C)``: ``Dense(n_chan)`` embedding, ``depth``
    `transformer_block`s (one `stax.repeat` loop), ``LayerNorm``, mean over positions and
    ``Dense(out_dim)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.architectures import transformer
      >>> _, _, kernel_fn = transformer(depth=3)
      >>> kernel_fn(jnp.ones((2, 4, 3)), get='ntk').shape
      (2, 2)
    """
    depth = check_positive_int(depth, "depth", "transformer")
    block = transformer_block(n_chan, n_heads, W_std=W_std, b_std=b_std,
                              attention_mechanism=attention_mechanism, pos_emb_type=pos_emb_type)
    body = stax.repeat(block, depth) if use_repeat else stax.serial(*[block] * depth)
    return stax.serial(stax.Dense(n_chan, W_std, b_std), body, stax.LayerNorm(),
                       stax.GlobalAvgPool(), stax.Dense(out_dim, W_std, b_std))
