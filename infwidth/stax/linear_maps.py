"""Fixed linear maps over positions: `DotGeneral` (a constant ``lax.dot_general`` factor) and
`ImageResize` (``jax.image.resize``), with neural-tangents' arguments.

Both act on each input ``x`` of shape ``(N, *spatial, C)`` by the same linear map ``T`` of its
positions, channel by channel, without parameters. The outputs stay jointly Gaussian, with
covariance ``T K T^T``: ``T`` is applied to the first and to the second position of every
position pair of the NNGP, the NTK and ``cov1``/``cov2`` (Novak et al. 2019, arXiv:1810.05148,
where pooling and strided readouts are such maps). The map is applied with the finite layer's
own function, so the kernel uses exactly the arithmetic of ``apply_fn``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from . import _masking
from ._layer import Layer, check_kernel_input, make_layer
from ._spatial import n_lead, no_diagonal_spatial


def _map_pairs(cov, lead: int, n_spatial: int, fn):
    """``T cov T^T`` for ``cov`` laid out ``(lead..., S1, S1', S2, S2', ...)``; ``fn`` maps an
    array ``(B, S1, S2, ..., C)`` to ``(B, S1o, S2o, ..., C)``."""
    lead_shape = cov.shape[:lead]
    sp = cov.shape[lead:]
    left, right = sp[0::2], sp[1::2]
    # (lead, L..., R...) -> (prod lead, L..., prod R): map the first positions
    perm = (tuple(range(lead)) + tuple(lead + 2 * i for i in range(n_spatial))
            + tuple(lead + 2 * i + 1 for i in range(n_spatial)))
    c = jnp.transpose(cov, perm).reshape((math.prod(lead_shape),) + left + (math.prod(right),))
    c = fn(c)
    left_out = c.shape[1:-1]  # the map may drop (contract) spatial axes
    n_out = len(left_out)
    # -> (prod lead, R..., prod Lo): map the second positions
    c = c.reshape((math.prod(lead_shape),) + left_out + right)
    c = jnp.moveaxis(c, tuple(range(1, 1 + n_out)), tuple(range(c.ndim - n_out, c.ndim)))
    c = c.reshape((math.prod(lead_shape),) + right + (math.prod(left_out),))
    c = fn(c)
    right_out = c.shape[1:-1]
    c = c.reshape(lead_shape + right_out + left_out)
    # (lead, Ro..., Lo...) -> (lead, Lo1, Ro1, Lo2, Ro2, ...)
    perm = tuple(range(lead))
    for i in range(n_out):
        perm += (lead + n_out + i, lead + i)
    return jnp.transpose(c, perm)


def _linear_position_layer(name: str, fn, shape_fn, scale=None) -> Layer:
    """A parameter-free layer applying ``fn`` (positions only) to inputs and covariances.

    ``scale`` (a number) replaces the map when the layer only multiplies by a constant, which
    also works on diagonal kernels."""

    def init_fn(key, input_shape):
        return shape_fn(tuple(input_shape)), ()

    def apply_fn(params, x, **kwargs):
        return fn(x)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        if scale is not None:
            out = k.scale(scale)
        else:
            no_diagonal_spatial(k, name)
            n = k.n_spatial

            def one(c):
                return None if c is None else _map_pairs(c, n_lead(c, k, n), n, fn)

            out = k.replace(nngp=one(k.nngp), ntk=one(k.ntk), cov1=one(k.cov1),
                            cov2=one(k.cov2))
        return out.replace(shape1=shape_fn(k.shape1), shape2=shape_fn(k.shape2))

    def mask_fn(mask, input_shape):  # an output is present if a present input reaches it
        present = ~_masking.reduce_channels(-1)(mask, input_shape)
        return fn(present.astype(jnp.result_type(float))) == 0

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None,
                      mask_fn=None if scale is not None else mask_fn)


def DotGeneral(*, lhs=None, rhs=None, dimension_numbers=(((), ()), ((), ())), precision=None,
               batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Multiplies the inputs by a constant with ``jax.lax.dot_general``, as neural-tangents'
    `stax.DotGeneral`.

    ``apply_fn`` computes ``lax.dot_general(x, rhs, dimension_numbers, precision)`` (or
    ``lax.dot_general(lhs, x, ...)``); ``lhs=rhs=None`` is the identity. The kernel is
    ``T K T^T`` with ``T`` the map on positions (module docstring). infwidth supports the
    factors that keep the layout batch-first and channels-last: every axis of the constant is
    contracted with a spatial axis of the inputs (weighting, summing or differencing positions),
    or the constant is a scalar (a multiplication, which also works with
    ``diagonal_spatial=True``); other factors raise NotImplementedError.

    Args:
      lhs, rhs: the constant factor (at most one), an array or a number.
      dimension_numbers: ``((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))``.
      precision: passed to ``lax.dot_general``.
      batch_axis, channel_axis: only the default layout (batch first, channels last).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> # the first minus the second of two stacked series (x: (N, 2, T, C))
      >>> diff = stax.DotGeneral(rhs=jnp.array([1., -1.]),
      ...                        dimension_numbers=(((1,), (0,)), ((), ())))
      >>> x = jnp.ones((3, 2, 5, 4))
      >>> diff.apply_fn((), x).shape, diff.kernel_fn(x, get='nngp').shape
      ((3, 5, 4), (3, 3, 5, 5))
      >>> float(stax.DotGeneral(rhs=2.).kernel_fn(jnp.ones((1, 4)), get='nngp')[0, 0])
      4.0
    """
    name = "DotGeneral"
    if lhs is not None and rhs is not None:
        raise ValueError(f"{name}(lhs=..., rhs=...): give at most one constant factor; the "
                         f"inputs are the other one.")
    if batch_axis != 0 or channel_axis not in (-1,):
        raise ValueError(f"{name}(batch_axis={batch_axis}, channel_axis={channel_axis}): "
                         f"infwidth keeps the batch first and channels last; move the axes of "
                         f"your inputs with jnp.moveaxis.")
    if lhs is None and rhs is None:
        return _linear_position_layer(name, lambda x: x, lambda s: s, scale=1.0)
    is_lhs = rhs is None
    other = jnp.asarray(lhs if is_lhs else rhs)
    try:
        (lc, rc), (lb, rb) = dimension_numbers
        lc, rc, lb, rb = (tuple(int(a) for a in d) for d in (lc, rc, lb, rb))
    except (TypeError, ValueError):
        raise ValueError(f"{name}(dimension_numbers={dimension_numbers!r}): expected "
                         f"((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch)).") from None
    input_c, other_c = (rc, lc) if is_lhs else (lc, rc)
    other_b = lb if is_lhs else rb
    other_c = tuple(a % max(other.ndim, 1) for a in other_c)
    if other_b or (len(set(other_c)) != other.ndim):
        raise NotImplementedError(
            f"{name}: infwidth supports constant factors whose axes are all contracted with "
            f"spatial axes of the inputs (or scalars), which keep the output batch-first and "
            f"channels-last; got a factor of shape {other.shape} with "
            f"dimension_numbers={dimension_numbers!r}. Reshape or transpose around the layer.")

    def fn(x):
        args = (other.astype(x.dtype), x) if is_lhs else (x, other.astype(x.dtype))
        return lax.dot_general(*args, dimension_numbers, precision)

    def shape_fn(shape):
        ndim = len(shape)
        axes = {a % ndim for a in input_c}
        if 0 in axes or ndim - 1 in axes:
            raise NotImplementedError(
                f"{name}: dimension_numbers={dimension_numbers!r} contracts the batch (0) or "
                f"channel ({ndim - 1}) axis of inputs of shape {tuple(shape)}; only spatial "
                f"axes can be contracted.")
        return jax.eval_shape(fn, jax.ShapeDtypeStruct(tuple(shape), jnp.float32)).shape

    return _linear_position_layer(name, fn, shape_fn,
                                  scale=other if other.ndim == 0 else None)


def ImageResize(shape, method, antialias: bool = True, precision=lax.Precision.HIGHEST,
                batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Resizes the spatial axes with ``jax.image.resize``, as neural-tangents'
    `stax.ImageResize`.

    ``shape`` is the full output shape, ``-1`` keeping an axis unchanged; the batch and channel
    entries must be ``-1``. Every method of ``jax.image.resize`` (``'nearest'``, ``'linear'``,
    ``'cubic'``, ``'lanczos3'``, ``'lanczos5'``) is a linear map of the positions, so the kernel
    is ``T K T^T`` for all of them (neural-tangents computes the kernel only for 'nearest' and
    'linear'). The kernel needs ``diagonal_spatial=False``.

    Args:
      shape: output shape, e.g. ``(-1, 16, 16, -1)`` for NHWC images.
      method: a ``jax.image.ResizeMethod`` or its name.
      antialias: antialiasing when downsampling (as ``jax.image.resize``).
      precision: passed to ``jax.image.resize``.
      batch_axis, channel_axis: only the default layout (batch first, channels last).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> up = stax.ImageResize((-1, 4, -1), 'nearest')
      >>> up.apply_fn((), jnp.array([[[1.], [2.]]]))[0, :, 0].tolist()
      [1.0, 1.0, 2.0, 2.0]
      >>> up.kernel_fn(jnp.array([[[1.], [2.]]]), get='nngp')[0, 0].tolist()[0]
      [1.0, 1.0, 2.0, 2.0]
    """
    name = "ImageResize"
    if batch_axis != 0 or channel_axis not in (-1,):
        raise ValueError(f"{name}(batch_axis={batch_axis}, channel_axis={channel_axis}): "
                         f"infwidth keeps the batch first and channels last; move the axes of "
                         f"your inputs with jnp.moveaxis.")
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name}(shape={shape!r}): shape must be a sequence of integers, one "
                         f"per input axis (-1 keeps an axis).") from None
    if len(shape) < 2 or shape[0] != -1 or shape[-1] != -1:
        raise ValueError(f"{name}(shape={shape!r}): the batch (first) and channel (last) "
                         f"entries must be -1; only the spatial axes are resized.")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{name}(shape={shape!r}): entries must be positive sizes or -1.")
    method_name = method if isinstance(method, str) else getattr(method, "name", method)
    try:
        jax.image.ResizeMethod.from_string(str(method_name).lower())
    except ValueError as e:
        raise ValueError(f"{name}(method={method!r}): {e}") from None

    def shape_fn(in_shape):
        if len(in_shape) != len(shape):
            raise ValueError(f"{name}(shape={shape}): inputs have shape {tuple(in_shape)}; "
                             f"give one entry per input axis.")
        return tuple(i if s == -1 else s for i, s in zip(in_shape, shape))

    def fn(x):
        out = (x.shape[0],) + shape_fn((1,) + x.shape[1:-1] + (1,))[1:-1] + (x.shape[-1],)
        return jax.image.resize(x, out, method=method, antialias=antialias, precision=precision)

    return _linear_position_layer(name, fn, shape_fn)
