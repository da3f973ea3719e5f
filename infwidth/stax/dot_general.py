"""`DotGeneral`: a constant, parameter-free ``lax.dot_general`` factor, with neural-tangents'
arguments and kernel conventions.

The layer computes ``lax.dot_general(x, rhs, dimension_numbers)`` (or ``(lhs, x)``) for a
constant array. Its outputs are linear in the inputs, so they stay jointly Gaussian and their
covariance is the input covariance with the constant applied to both members of every pair
(Novak et al. 2019, arXiv:1810.05148, sec. 2.3: any fixed linear map ``T`` sends ``K`` to
``T K T^T``). Each axis of the constant is one of

* contracted with an input axis: a spatial axis (weighting, summing, differencing positions;
  needs the covariances of position pairs, ``diagonal_spatial=False``) or the batch axis (the
  output mixes inputs and has no batch axis; needs ``diagonal_batch=False``);
* a batch dimension of the product, paired with an input axis (the batch axis: a different
  constant for each input; or a spatial axis: a weight per position);
* free: a new spatial axis of the output (outer product).

The channel axis is never contracted (its size goes to infinity). The output keeps
``lax.dot_general``'s axis order (batch dimensions, then the free axes of the left operand,
then the right's), so the batch and channel axes may move; the kernel records where they go
(``Kernel.batch_axis``/``channel_axis``), and later layers take those as their
``batch_axis``/``channel_axis`` arguments, as in neural-tangents.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax

from ._layer import Layer, check_kernel_input, make_layer
from ._layouts import axis_index, check_layout

__all__ = ["DotGeneral"]

_NAME = "DotGeneral"


def _parse_dimension_numbers(dimension_numbers, is_lhs: bool, other):
    """``(input_contracting, other_contracting, input_batch, other_batch)`` as tuples of
    ints (input axes as given; other axes non-negative), checked against the constant."""
    try:
        (lc, rc), (lb, rb) = dimension_numbers
        lc, rc, lb, rb = (tuple(int(a) for a in d) for d in (lc, rc, lb, rb))
    except (TypeError, ValueError):
        raise ValueError(f"{_NAME}(dimension_numbers={dimension_numbers!r}): expected "
                         f"((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch)), "
                         f"tuples of ints.") from None
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise ValueError(f"{_NAME}(dimension_numbers={dimension_numbers!r}): the lhs and rhs "
                         f"contracting (and batch) dimensions must come in pairs of equal "
                         f"length.")
    in_c, o_c, in_b, o_b = (rc, lc, rb, lb) if is_lhs else (lc, rc, lb, rb)
    m = other.ndim
    side = "lhs" if is_lhs else "rhs"
    for a in o_c + o_b:
        if not -m <= a < m:
            raise ValueError(f"{_NAME}(dimension_numbers={dimension_numbers!r}): axis {a} of "
                             f"the constant {side} is out of range for its shape "
                             f"{tuple(other.shape)}.")
    o_c, o_b = tuple(a % m for a in o_c), tuple(a % m for a in o_b)
    if len(set(o_c + o_b)) != len(o_c + o_b):
        raise ValueError(f"{_NAME}(dimension_numbers={dimension_numbers!r}): an axis of the "
                         f"constant {side} is used twice.")
    return in_c, o_c, in_b, o_b


def axis_after_dot(axis: int, contracting_dims, batch_dims, lhs_ndim: int | None = None) -> int:
    """Where input axis ``axis`` lands in the output of ``lax.dot_general`` (batch dimensions
    first, then the free axes of the left operand, then the right's); ``lhs_ndim`` is the
    rank of the constant when it is the left operand (neural-tangents' ``axis_after_dot``)."""
    if axis in batch_dims:
        return list(batch_dims).index(axis)
    shift = 0 if lhs_ndim is None else lhs_ndim - len(batch_dims) - len(contracting_dims)
    return (axis - sum(i < axis for i in contracting_dims) + sum(i > axis for i in batch_dims)
            + shift)


class _Plan:
    """Where every axis of the inputs, of the constant and of the output goes, for inputs of
    a given rank and layout."""

    def __init__(self, n, batch_axis, channel_axis, in_c, o_c, in_b, o_b, m, is_lhs):
        self.b = axis_index(batch_axis, n, "batch_axis", _NAME)
        self.c = axis_index(channel_axis, n, "channel_axis", _NAME)
        in_c = tuple(axis_index(a, n, "dimension_numbers", _NAME) for a in in_c)
        in_b = tuple(axis_index(a, n, "dimension_numbers", _NAME) for a in in_b)
        if len(set(in_c + in_b)) != len(in_c + in_b):
            raise ValueError(f"{_NAME}: an input axis is both contracted and a batch dimension "
                             f"(or listed twice) in dimension_numbers.")
        if self.c in in_c + in_b:
            raise ValueError(
                f"{_NAME}: dimension_numbers contract or batch the channel axis {self.c} of the "
                f"{n}-axis inputs; the channels are the infinitely wide axis and must stay free "
                f"(give the layer's channel_axis, or move the channels elsewhere).")
        self.in_c, self.in_b, self.o_c, self.o_b = in_c, in_b, o_c, o_b
        self.spatial = [i for i in range(n) if i not in (self.b, self.c)]
        in_free = [i for i in range(n) if i not in in_c + in_b]
        o_free = [j for j in range(m) if j not in o_c + o_b]
        free = ([("other", j) for j in o_free] + [("in", i) for i in in_free] if is_lhs else
                [("in", i) for i in in_free] + [("other", j) for j in o_free])
        self.out = [("in", i) for i in in_b] + free  # lax.dot_general's output order
        self.o_free = o_free
        self.contracts_batch = self.b in in_c
        self.out_c = self.out.index(("in", self.c))
        self.out_b = None if self.contracts_batch else self.out.index(("in", self.b))
        self.out_spatial = [d for p, d in enumerate(self.out) if p not in (self.out_b,
                                                                           self.out_c)]

    def out_batch_axis(self, lhs_ndim):
        """The output's batch axis; where the batch is contracted, neural-tangents' value
        (`axis_after_dot`), which no later layer reads."""
        if self.out_b is not None:
            return self.out_b
        return axis_after_dot(self.b, self.in_c, self.in_b, lhs_ndim)

    def apply(self, other, cov, lead: int, diagonal_spatial: bool):
        """``T cov T^T`` by one einsum: ``cov`` has ``lead`` batch axes (1: each input with
        itself) and the spatial axes of the inputs, pairs or (diagonal) single positions."""
        labels = itertools.count()
        left, right, cov_labels = {}, {}, []
        for axis in [self.b] + self.spatial:
            single = lead == 1 if axis == self.b else diagonal_spatial
            left[axis] = next(labels)
            right[axis] = left[axis] if single else next(labels)
            cov_labels += [left[axis]] if single else [left[axis], right[axis]]
        other_l, other_r = [0] * other.ndim, [0] * other.ndim
        for i, j in zip(self.in_c + self.in_b, self.o_c + self.o_b):
            other_l[j], other_r[j] = left[i], right[i]
        for j in self.o_free:
            other_l[j] = next(labels)
            other_r[j] = other_l[j] if diagonal_spatial else next(labels)
        out = []
        if not self.contracts_batch:
            out += [left[self.b]] if lead == 1 else [left[self.b], right[self.b]]
        for kind, a in self.out_spatial:
            pair = (left[a], right[a]) if kind == "in" else (other_l[a], other_r[a])
            out += [pair[0]] if diagonal_spatial else list(pair)
        other = other.astype(cov.dtype)
        return jnp.einsum(other, other_l, cov, cov_labels, other, other_r, out,
                          precision=lax.Precision.HIGHEST, optimize=True)


def DotGeneral(*, lhs=None, rhs=None, dimension_numbers=(((), ()), ((), ())), precision=None,
               batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Multiplies the inputs by a constant with ``jax.lax.dot_general``, as neural-tangents'
    `stax.DotGeneral`.

    ``apply_fn`` computes ``lax.dot_general(x, rhs, dimension_numbers, precision)`` (or
    ``lax.dot_general(lhs, x, ...)``); ``lhs=rhs=None`` is the identity. The kernel is the input
    kernel with the constant applied to both members of every pair (module docstring): each
    axis of the constant may be contracted with a spatial axis of the inputs (needs
    ``diagonal_spatial=False``) or with the batch axis (needs ``diagonal_batch=False``; the
    output has no batch axis), paired with an input axis as a batch dimension, or free (a new
    spatial axis). The output axes are in ``lax.dot_general``'s order, so the batch and channel
    axes may move; give later layers the new axes, e.g. ``Dense(batch_axis=1, ...)``.

    Args:
      lhs, rhs: the constant factor (at most one), an array or a number.
      dimension_numbers: ``((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))``.
      precision: passed to ``lax.dot_general`` in ``apply_fn``.
      batch_axis, channel_axis: the axes of the inputs (the channel axis can be neither
        contracted nor a batch dimension).

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
      >>> # a free axis of the constant is a new spatial axis: out[n, c, j] = x[n, c] * w[j]
      >>> outer = stax.DotGeneral(rhs=jnp.array([[1., 2.]]),
      ...                         dimension_numbers=(((), ()), ((), ())))
      >>> k = outer.kernel_fn(jnp.ones((2, 3)), get='nngp')   # (N1, N2, J, J')
      >>> k.shape, k[0, 0].tolist()
      ((2, 2, 1, 1, 2, 2), [[[[1.0, 2.0], [2.0, 4.0]]]])
    """
    if lhs is not None and rhs is not None:
        raise ValueError(f"{_NAME}(lhs=..., rhs=...): give at most one constant factor; the "
                         f"inputs are the other one.")
    batch_axis, channel_axis = check_layout(batch_axis, channel_axis, _NAME)
    if lhs is None and rhs is None:
        return _scaling(1.0, batch_axis, channel_axis)
    is_lhs = rhs is None
    other = jnp.asarray(lhs if is_lhs else rhs)
    if not jnp.issubdtype(other.dtype, jnp.number) or jnp.iscomplexobj(other):
        raise TypeError(f"{_NAME}({'lhs' if is_lhs else 'rhs'}=...): expected a real array or "
                        f"number, got dtype {other.dtype}.")
    in_c, o_c, in_b, o_b = _parse_dimension_numbers(dimension_numbers, is_lhs, other)
    if other.ndim == 0:
        if in_c or in_b:
            raise ValueError(f"{_NAME}(dimension_numbers={dimension_numbers!r}): a scalar "
                             f"constant has no axes to contract or batch.")
        return _scaling(other, batch_axis, channel_axis)
    lhs_ndim = other.ndim if is_lhs else None

    def dot_fn(x, factor=other):
        factor = factor.astype(x.dtype)
        args = (factor, x) if is_lhs else (x, factor)
        return lax.dot_general(*args, dimension_numbers, precision)

    def out_shape(shape):
        try:
            return tuple(jax.eval_shape(dot_fn, jax.ShapeDtypeStruct(tuple(shape),
                                                                     jnp.float32)).shape)
        except TypeError as e:
            raise ValueError(f"{_NAME}: inputs of shape {tuple(shape)} do not match the "
                             f"constant of shape {tuple(other.shape)} with dimension_numbers="
                             f"{dimension_numbers!r}: {str(e).splitlines()[0]}") from None

    def init_fn(key, input_shape):  # the channel axis is checked by kernel_fn (as in NT)
        return out_shape(input_shape), ()

    def apply_fn(params, x, **kwargs):
        return dot_fn(x)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, _NAME)
        # the axes of the kernel (set by the first layer that declares them, or by the call's
        # keywords); the layer's own only set those of raw inputs, as in neural-tangents
        p = _Plan(len(k.shape1), k.batch_axis, k.channel_axis, in_c, o_c, in_b, o_b, other.ndim,
                  is_lhs)
        if k.diagonal_spatial and any(i != p.b for i in p.in_c):
            raise ValueError(
                f"{_NAME}: dimension_numbers={dimension_numbers!r} sum over spatial positions, "
                f"which needs the covariance of every pair of positions; call kernel_fn with "
                f"diagonal_spatial=False.")
        if p.contracts_batch and k.diagonal_batch:
            raise ValueError(
                f"{_NAME}: dimension_numbers={dimension_numbers!r} sum over the batch axis "
                f"{p.b}, which needs the covariance of every pair of inputs; call kernel_fn "
                f"with diagonal_batch=False.")
        if p.b in p.in_b and k.shape1[p.b] != k.shape2[p.b]:
            raise ValueError(
                f"{_NAME}: the batch axis is a batch dimension of the product (one constant "
                f"slice per input), so x1 and x2 need the same batch size; got "
                f"{k.shape1[p.b]} and {k.shape2[p.b]}.")
        shape1, shape2 = out_shape(k.shape1), out_shape(k.shape2)
        lead = 1 if k.diagonal_batch else 2
        ds = k.diagonal_spatial

        def cov(c, n_lead):
            return None if c is None else p.apply(other, c, n_lead, ds)

        return k.replace(nngp=cov(k.nngp, 2), ntk=cov(k.ntk, 2), cov1=cov(k.cov1, lead),
                         cov2=cov(k.cov2, lead), shape1=shape1, shape2=shape2,
                         batch_axis=p.out_batch_axis(lhs_ndim), channel_axis=p.out_c,
                         mask1=None, mask2=None)

    def mask_fn(mask, input_shape):
        """An output is absent when no present input reaches it (NT: ``~dot(~mask)``)."""
        n = len(input_shape)
        if batch_axis % n in {a % n for a in in_c}:  # no batch axis left to carry a mask
            return None
        present = (~jnp.broadcast_to(mask, tuple(input_shape))).astype(jnp.float32)
        return ~(dot_fn(present, jnp.abs(other).astype(jnp.float32)) > 0)

    # a constant slice per input, or a sum over inputs: an input's kernel depends on its index
    mixes_batch = any(_may_be(a, batch_axis) for a in in_c + in_b)
    return make_layer(_NAME, init_fn, apply_fn, kernel_map, shape_fn=None,
                      mixes_batch=mixes_batch, input_axes=(batch_axis, channel_axis),
                      any_axes=True, sets_axes=True, mask_fn=mask_fn)


def _may_be(axis: int, batch_axis: int) -> bool:
    """Whether input axis ``axis`` can be the batch axis for some input rank (axes of the
    same sign are equal or not; a negative and a non-negative one coincide for one rank)."""
    return axis == batch_axis or (axis < 0) != (batch_axis < 0)


def _scaling(factor, batch_axis: int, channel_axis: int) -> Layer:
    """``DotGeneral`` by a scalar (or the identity): every covariance times ``factor**2``; any
    layout, and ``diagonal_spatial=True`` too."""
    factor = jnp.asarray(factor)

    def init_fn(key, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, x, **kwargs):
        return x * factor.astype(x.dtype)

    def kernel_map(k, **kwargs):
        return check_kernel_input(k, _NAME).scale(factor)

    return make_layer(_NAME, init_fn, apply_fn, kernel_map, shape_fn=None, any_axes=True,
                      input_axes=(batch_axis, channel_axis))
