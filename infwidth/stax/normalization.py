"""`LayerNorm` and `Dropout`, with neural-tangents' semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import safe_divide
from . import _masking
from ._layer import Layer, check_kernel_input, make_layer
from ._layout import expand as _expand
from ._layout import variances
from ._layouts import axis_index, check_layout, is_default_layout, relaid


def _canonical_axes(axis, ndim: int, name: str) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"{name}: axis {a!r} is not an axis of inputs of rank {ndim}.")
        out.append(int(a) % ndim)
    return tuple(sorted(set(out)))


def _relaid_layer_norm(axis, eps, batch_axis, channel_axis) -> Layer:
    """`LayerNorm` on inputs of any layout: the channel-last layer normalising the same axes of
    the moved inputs (`_layouts`), one per input rank."""
    name = "LayerNorm"
    batch_axis, channel_axis = check_layout(batch_axis, channel_axis, name)
    layers: dict = {}

    def canonical(ndim) -> Layer:
        if ndim not in layers:
            b = axis_index(batch_axis, ndim, "batch_axis", name)
            c = axis_index(channel_axis, ndim, "channel_axis", name)
            spatial = [i for i in range(ndim) if i not in (b, c)]
            axes = _canonical_axes(axis, ndim, f"{name}(axis={axis!r})")
            moved = tuple(ndim - 1 if a == c else 0 if a == b else 1 + spatial.index(a)
                          for a in axes)
            layers[ndim] = LayerNorm(moved, eps)
        return layers[ndim]

    return relaid(name, canonical, batch_axis, channel_axis)


def LayerNorm(axis=-1, eps: float = 1e-12, batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Layer normalisation (Ba et al. 2016, arXiv:1607.06450) without learned scale and shift.

    ``apply_fn`` computes ``(x - mean) / sqrt(eps + var)`` over ``axis``, which must include the
    channel axis. In the infinite-width limit the channel mean vanishes and the channel variance
    is the input variance, so every covariance is divided by the square roots of the (``eps`` +)
    variances of its two members, averaged over the other normalised axes (spatial, or even the
    batch axis) as neural-tangents does. The input must be Gaussian (follow an affine layer).

    Args:
      axis: an axis or axes to normalise over; must contain the channel axis.
      eps: added to the variance.
      batch_axis, channel_axis: the inputs' batch and channel axes (any layout).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=2.), stax.LayerNorm())
      >>> kernel_fn(jnp.array([[1., 0.], [1., 1.]]), get='nngp').round(4).tolist()
      [[1.0, 0.7071], [0.7071, 1.0]]
    """
    name = f"LayerNorm(axis={axis!r})"
    if not is_default_layout(batch_axis, channel_axis):
        return _relaid_layer_norm(axis, eps, batch_axis, channel_axis)
    if not isinstance(axis, (int, np.integer)):
        if isinstance(axis, str) or not all(
                isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axis):
            raise TypeError(f"{name}: axis must be an int or a tuple of ints, e.g. axis=-1 or "
                            f"axis=(1, 2, 3) to normalise over an image's positions and "
                            f"channels.")
        axis = tuple(axis)
        if not axis:
            raise ValueError(f"{name}: axis must contain the channel axis (-1).")

    def norm_axes(ndim):
        axes = _canonical_axes(axis, ndim, name)
        if ndim - 1 not in axes:
            raise ValueError(f"{name}: the channel axis ({ndim - 1}, or -1) must be normalised "
                             f"for the layer to have an infinite-width limit; got axes {axes}. "
                             f"Use axis=-1 (or include -1).")
        return axes

    def init_fn(key, input_shape):
        norm_axes(len(input_shape))
        return tuple(input_shape), ()

    def apply_fn(params, x, mask=None, **kwargs):
        axes = norm_axes(x.ndim)
        if mask is not None:  # statistics of the present entries only (masked inputs)
            absent = jnp.broadcast_to(mask, x.shape)
            mean = _masking.masked_mean(x, absent, axes, keepdims=True)
            var = _masking.masked_mean((x - mean) ** 2, absent, axes, keepdims=True)
            return (x - mean) / jnp.sqrt(eps + var)
        mean = jnp.mean(x, axes, keepdims=True)
        var = jnp.var(x, axes, keepdims=True)
        return (x - mean) / jnp.sqrt(eps + var)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name, gaussian=True)
        axes = norm_axes(len(k.shape1))
        # axes of the per-position variances (N, *spatial) to average over
        avg = tuple(a for a in axes if a < len(k.shape1) - 1)

        p1, p2 = _masking.position_masks(k)  # absent positions of masked inputs, or None

        def var(cov, absent):
            v = variances(cov, k) + eps
            if avg and absent is not None:  # average over the present positions only
                return _masking.masked_mean(v, absent, avg, keepdims=True)
            return jnp.mean(v, avg, keepdims=True) if avg else v

        v1 = var(k.cov1, p1)
        v2 = v1 if k.cov2 is None else var(k.cov2, p2)

        def normalise(cov, a, b, n_lead):
            if cov is None:
                return None
            den = jnp.sqrt(_expand(a, 1, n_lead, k.diagonal_spatial)
                           * _expand(b, 2, n_lead, k.diagonal_spatial))
            return safe_divide(cov, den)

        n_cov = 1 if k.diagonal_batch else 2
        return k.replace(nngp=normalise(k.nngp, v1, v2, 2), ntk=normalise(k.ntk, v1, v2, 2),
                         cov1=normalise(k.cov1, v1, v1, n_cov),
                         cov2=None if k.cov2 is None else normalise(k.cov2, v2, v2, n_cov))

    return make_layer("LayerNorm", init_fn, apply_fn, kernel_map, shape_fn=lambda s: s,
                      uses_mask=True)


def _diagonal_mask(shape, n_lead: int, diagonal_spatial: bool, shared=()):
    """Boolean mask of the entries of a covariance where both members are the same unit
    (the same input and, for full spatial layouts, the same position along each spatial axis
    not in ``shared``)."""
    mask = np.ones((), bool)
    if n_lead == 2:
        mask = np.eye(shape[0], shape[1], dtype=bool).reshape(shape[:2] + (1,) * (len(shape) - 2))
    if not diagonal_spatial:
        for i in range((len(shape) - n_lead) // 2):
            if i in shared:
                continue
            a = n_lead + 2 * i
            eye = np.eye(shape[a], shape[a + 1], dtype=bool)
            mask = mask & eye.reshape((1,) * a + eye.shape + (1,) * (len(shape) - a - 2))
    return np.broadcast_to(mask, shape)


def Dropout(rate: float, mode: str = "train", *, broadcast_dims=()) -> Layer:
    """Dropout (Srivastava et al. 2014) with neural-tangents' conventions: ``rate`` is the *keep*
    probability.

    In ``'train'`` mode ``apply_fn(params, x, rng=key)`` keeps each unit with probability
    ``rate`` and scales it by ``1 / rate``; in ``'test'`` mode it is the identity. In the
    infinite-width limit (train mode) the masks of distinct units are independent, so only the
    variance of each unit with itself grows by ``1 / rate``: the diagonal of ``cov1``/``cov2``
    and, when ``x2`` is ``x1``, the diagonal of ``nngp`` and ``ntk`` (Schoenholz et al. 2017,
    arXiv:1611.01232; Huang et al. 2020, arXiv:2006.10540). The output is not Gaussian. As in
    neural-tangents, every ``kernel_fn`` call draws one mask per input, so ``kernel_fn(x1, x2)``
    with distinct arrays is the covariance under independent masks.

    Args:
      rate: keep probability, in (0, 1].
      mode: ``'train'`` or ``'test'``.
      broadcast_dims: spatial axes of ``(N, *spatial, C)`` inputs along which one mask value
        is shared, as Flax's ``Dropout(broadcast_dims=...)`` (``(1, 2)`` drops whole channels
        of an image, "spatial dropout"): positions along those axes keep the ``1 / rate``
        factor between each other. Not in neural-tangents (keyword-only).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(4), stax.Dropout(0.5))
      >>> kernel_fn(jnp.array([[1., 1.], [1., -1.]]), get='nngp').tolist()
      [[2.0, 0.0], [0.0, 2.0]]
      >>> _, params = init_fn(jax.random.PRNGKey(0), (2, 2))
      >>> apply_fn(params, jnp.ones((2, 2)), rng=jax.random.PRNGKey(1)).shape
      (2, 4)
    """
    name = f"Dropout(rate={rate!r}, mode={mode!r})"
    traced = isinstance(rate, jax.core.Tracer)  # a traced rate passes, for jax.grad
    try:
        ok = traced or 0 < float(rate) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: rate is the keep probability and must be in (0, 1]; "
                         f"got {rate!r}.")
    if mode not in ("train", "test"):
        raise ValueError(f"{name}: mode must be 'train' or 'test'.")
    rate = rate if traced else float(rate)
    try:
        dims = tuple(sorted({int(d) for d in broadcast_dims}))
    except (TypeError, ValueError):
        raise TypeError(f"{name}(broadcast_dims={broadcast_dims!r}): expected a tuple of spatial "
                        f"axes (ints), e.g. (1, 2) for images.") from None
    if any(isinstance(d, bool) or not float(d).is_integer() for d in broadcast_dims):
        raise TypeError(f"{name}(broadcast_dims={broadcast_dims!r}): expected a tuple of spatial "
                        f"axes (ints), e.g. (1, 2) for images.")
    if not dims == tuple(d for d in dims if d > 0):
        raise ValueError(f"{name}(broadcast_dims={broadcast_dims!r}): expected positive spatial "
                         f"axes of (N, *spatial, C) inputs, e.g. (1, 2) for images; the batch "
                         f"axis cannot share a mask.")

    def check_dims(ndim):
        if dims and dims[-1] >= ndim - 1:
            raise ValueError(f"{name}(broadcast_dims={dims}): the inputs have {ndim - 2} "
                             f"spatial axes (1..{ndim - 2}); the channel axis cannot share a "
                             f"mask, which would keep or drop a whole input in the limit.")

    def init_fn(key, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, x, rng=None, **kwargs):
        if mode == "test" or (not traced and rate == 1):
            return x
        if rng is None:
            raise ValueError(f"{name}: apply_fn needs a PRNG key in train mode: "
                             f"apply_fn(params, x, rng=jax.random.PRNGKey(0)).")
        check_dims(x.ndim)
        shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape))
        keep = jax.random.bernoulli(rng, rate, shape)
        return jnp.where(keep, x / rate, 0)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name)
        if mode == "test":
            return k
        check_dims(len(k.shape1))
        shared = {d - 1 for d in dims}

        def scale_diagonal(cov, n_lead, same_units):
            if cov is None or not same_units:
                return cov
            mask = _diagonal_mask(cov.shape, n_lead, k.diagonal_spatial, shared)
            return jnp.where(mask, cov / rate, cov)

        n_cov = 1 if k.diagonal_batch else 2
        return k.replace(nngp=scale_diagonal(k.nngp, 2, k.x1_is_x2),
                         ntk=scale_diagonal(k.ntk, 2, k.x1_is_x2),
                         cov1=scale_diagonal(k.cov1, n_cov, True),
                         cov2=scale_diagonal(k.cov2, n_cov, True), is_gaussian=False)

    return make_layer("Dropout", init_fn, apply_fn, kernel_map, shape_fn=lambda s: s)
