"""`Dense`: the fully connected layer and its kernel map."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..parameterization import ABC, affine_rule
from ._layer import (
    Layer,
    check_kernel_input,
    check_nonnegative,
    check_positive_int,
    check_shape,
    make_layer,
)


def Dense(out_dim: int, W_std: float = 1.0, b_std: float | None = None, batch_axis: int = 0,
          channel_axis: int = -1, parameterization: str | ABC = "ntk",
          s=(1, 1)) -> Layer:
    """Fully connected layer acting on the last (channel) axis, as neural-tangents' `stax.Dense`.

    Under ``parameterization='ntk'`` the layer computes
    ``W_std / sqrt(fan_in) * x @ W + b_std * b`` with ``W, b ~ N(0, 1)``; under ``'standard'``
    ``x @ W / sqrt(s[0]) + b`` with ``W ~ N(0, W_std**2 s[0] / fan_in)``, ``b ~ N(0, b_std**2)``.
    ``b_std=None`` means no bias at all (``b_std=0.`` keeps a zero-variance bias, which under
    'standard' still adds 1 to the NTK). The kernel map is
    ``nngp' = W_std**2 nngp + b_std**2`` and ``ntk' = nngp' + W_std**2 ntk`` ('ntk') or
    ``ntk' = fan_in / s[0] * nngp + [1] + W_std**2 ntk`` ('standard'), following Lee et al. 2018
    (arXiv:1711.00165), Jacot et al. 2018 (arXiv:1806.07572) and Sohl-Dickstein et al. 2020
    (arXiv:2001.07301).

    Inputs with spatial axes (sequences ``(N, T, C)``, images ``(N, H, W, C)``, ...) are
    transformed at every position by the same weights, as in neural-tangents (the same as `Conv`
    with a ``(1,) * n_spatial`` filter); the kernel keeps its spatial layout. To read out a
    convolutional network, put `Flatten` or `GlobalAvgPool` first.

    Beyond neural-tangents, ``parameterization='mup'`` (the maximal-update parameterization,
    arXiv:2011.14522, in the shape-only form of arXiv:2310.17813: ``W ~ N(0, W_std**2 / fan_in *
    min(1, out_dim / fan_in))``, multiplier 1) and a general ``ABC(a, b, c)`` from
    `infwidth.parameterization` build finite networks; train them with the learning rates of
    `infwidth.mup`. Their ``kernel_fn`` raises (the muP limit is not a kernel), except for
    ``ABC(0.5, 0)``, which is 'ntk'.

    Args:
      out_dim: output width of the finite network (the kernel does not depend on it under 'ntk').
      W_std: weight standard deviation.
      b_std: bias standard deviation, or ``None`` for no bias.
      batch_axis, channel_axis: only the default layout (batch first, channels last) is
        supported; move axes with ``jnp.moveaxis`` first.
      parameterization: ``'ntk'``, ``'standard'``, ``'mup'`` or an `ABC`.
      s: width multipliers of the input and output under 'standard' (see neural-tangents).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.Dense(3, W_std=1.5, b_std=0.1)
      >>> _, params = init_fn(jax.random.PRNGKey(0), (2, 4))
      >>> apply_fn(params, jnp.ones((2, 4))).shape
      (2, 3)
      >>> x = jnp.array([[1., 0.], [0., 2.]])
      >>> kernel_fn(x, get='nngp').round(4).tolist()  # 1.5**2 * x @ x.T / 2 + 0.1**2
      [[1.135, 0.01], [0.01, 4.51]]
    """
    name = "Dense"
    out_dim = check_positive_int(out_dim, "out_dim", name)
    W_std = check_nonnegative(W_std, "W_std", name)
    b_std = check_nonnegative(b_std, "b_std", name, allow_none=True)
    rule = affine_rule(parameterization, W_std, b_std, s, name)
    if batch_axis not in (0,) or channel_axis not in (-1,):
        raise ValueError(
            f"{name}(batch_axis={batch_axis}, channel_axis={channel_axis}): infwidth keeps the "
            f"batch first and channels last; move the axes of your inputs with jnp.moveaxis."
        )
    width = rule.width(out_dim)

    def shape_fn(input_shape):
        return tuple(input_shape[:-1]) + (width,)

    def init_fn(key, input_shape):
        check_shape(input_shape, name, min_ndim=1)
        fan_in = input_shape[-1]
        scales = rule.scales(fan_in, width)
        k_w, k_b = jax.random.split(key)
        W = scales.w_init * jax.random.normal(k_w, (fan_in, width))
        b = None
        if b_std is not None:
            b = scales.b_init * jax.random.normal(k_b, (1,) * (len(input_shape) - 1) + (width,))
        return shape_fn(input_shape), (W, b)

    def apply_fn(params, x, **kwargs):
        W, b = params
        scales = rule.scales(x.shape[-1], width)
        out = scales.w_mult * jnp.tensordot(x, W, (-1, 0))
        return out if b is None else out + scales.b_mult * b

    def transform(k, **kwargs):
        rule.check_has_kernel(name)
        k = check_kernel_input(k, name)
        nngp, ntk = rule.kernels(k.nngp, k.ntk, k.shape1[-1])
        return k.replace(nngp=nngp, ntk=ntk, cov1=rule.cov(k.cov1), cov2=rule.cov(k.cov2),
                         is_gaussian=True)

    return make_layer(name, init_fn, apply_fn, transform, shape_fn, family="Dense",
                      hparams={"rule": rule})
