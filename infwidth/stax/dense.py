"""`Dense`: the fully connected layer and its kernel map."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from ..parameterization import ABC, affine_rule
from . import _masking
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
      batch_axis, channel_axis: where the batch and the features are in the inputs (as in
        neural-tangents: the first layer of a network that sets them fixes the axes of the
        input kernel; ``kernel_fn(..., channel_axis=...)`` sets them too). Only elementwise
        layers and Dense accept other axes than ``(0, -1)``.
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
    for key, v in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}({key}={v!r}): expected an int axis.")
    width = rule.width(out_dim)

    def axes(ndim):
        b, c = batch_axis % ndim, channel_axis % ndim
        if b == c:
            raise ValueError(f"{name}(batch_axis={batch_axis}, channel_axis={channel_axis}): "
                             f"the batch and channel axes of {ndim}-d inputs must differ.")
        return b, c

    def shape_fn(input_shape):
        c = channel_axis % len(input_shape)
        return tuple(input_shape[:c]) + (width,) + tuple(input_shape[c + 1:])

    def init_fn(key, input_shape):
        check_shape(input_shape, name, min_ndim=1)
        c = channel_axis % len(input_shape)
        fan_in = input_shape[c]
        scales = rule.scales(fan_in, width)
        k_w, k_b = jax.random.split(key)
        W = scales.w_init * jax.random.normal(k_w, (fan_in, width))
        b = None
        if b_std is not None:
            b_shape = [1] * len(input_shape)
            b_shape[c] = width
            b = scales.b_init * jax.random.normal(k_b, tuple(b_shape))
        return shape_fn(input_shape), (W, b)

    def apply_fn(params, x, **kwargs):
        W, b = params
        c = channel_axis % x.ndim
        scales = rule.scales(x.shape[c], width)
        out = scales.w_mult * jnp.moveaxis(jnp.tensordot(x, W, (c, 0)), -1, c)
        return out if b is None else out + scales.b_mult * b

    def kernel_map(k, **kwargs):
        rule.check_has_kernel(name)
        k = check_kernel_input(k, name)
        ndim = len(k.shape1)
        if ndim >= 2 and axes(ndim) != (k.batch_axis % ndim, k.channel_axis % ndim):
            raise ValueError(
                f"{name}(batch_axis={batch_axis}, channel_axis={channel_axis}): its input kernel "
                f"has batch_axis={k.batch_axis % ndim} and channel_axis={k.channel_axis % ndim}; "
                f"give every layer the axes of the inputs (or pass them to kernel_fn).")
        nngp, ntk = rule.kernels(k.nngp, k.ntk, k.shape1[k.channel_axis % ndim])
        return k.replace(nngp=nngp, ntk=ntk, cov1=rule.cov(k.cov1), cov2=rule.cov(k.cov2),
                         is_gaussian=True)

    declared = None if (batch_axis, channel_axis) == (0, -1) else (batch_axis, channel_axis)
    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn, input_axes=declared,
                      any_axes=True, family="Dense", hparams={"rule": rule},
                      mask_fn=_masking.reduce_channels(channel_axis))
