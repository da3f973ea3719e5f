"""Branching layers: `FanOut`, `FanInSum`, `FanInProd`, `FanInConcat` (and `Scale`, the branch
multiplier, which lives with `OutputScale` in `output_scale.py`).

A branch point copies its input (`FanOut`); `parallel` then applies one layer per branch and a
fan-in layer merges the branches again. In the infinite-width limit, branches that each contain
an affine layer (Dense, Conv, attention, ...) are independent Gaussian processes, so the kernel of
a sum is the sum of the kernels, the kernel of a channel-wise concatenation is the width-weighted
average, and the kernel of a product is the product of the kernels (Yang 2019, "Tensor Programs
I", arXiv:1910.12478; Novak et al. 2020, "Neural Tangents", arXiv:1912.02803). As in
neural-tangents, this independence is assumed, not checked: put an affine layer in every branch
that is summed with another one (an `Identity` branch is fine when the other branch starts with
one).

One dependence is recognised: the same activations reaching a fan-in more than once (``FanOut``
followed by several `Identity` branches, which neural-tangents treats as independent). Then
``h + h = 2 h`` (kernel times 4, not 2), ``h * h = h**2`` (``var1 var2 + 2 cov12**2``, not
``cov12**2``) and a spatial concatenation ``[h, h]`` keeps the covariance between the copies.
Elementwise functions of one Gaussian (``Relu(h) + h``, ``Relu(h) * h``) are `DependentFanIn`.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from ..kernel import Kernel
from . import _masking
from ._layer import Layer, check_positive_int, make_layer
from .activations_poly import Monomial
from .output_scale import Scale  # noqa: F401  (its historical import path)


def _as_list(ks, layer: str) -> list[Kernel]:
    if isinstance(ks, Kernel) or not isinstance(ks, (list, tuple)):
        raise ValueError(f"{layer}: expects a list of inputs (one per branch), got a single "
                         f"input. Put it after FanOut(n) and parallel(...).")
    if not ks:
        raise ValueError(f"{layer}: got an empty list of inputs.")
    return list(ks)


def _check_same_shapes(ks: list[Kernel], layer: str):
    if any(k.shape1 != ks[0].shape1 or k.shape2 != ks[0].shape2 for k in ks[1:]):
        raise ValueError(f"{layer}: all inputs must have the same shape; got shapes "
                         f"{[k.shape1 for k in ks]} (x1) and {[k.shape2 for k in ks]} (x2). "
                         f"Make the branches end in the same width (e.g. Dense(n) in each).")


def _fan_in_shapes(shapes, layer):
    if not isinstance(shapes, (list, tuple)) or not shapes or isinstance(shapes[0], int):
        raise ValueError(f"{layer}: init_fn expects a list of input shapes (one per branch), "
                         f"got {shapes!r}.")
    return [tuple(s) for s in shapes]


def _distinct(ks: list[Kernel]):
    """The distinct inputs (the same `Kernel` object means the same activations, e.g. Identity
    branches of one FanOut) and how many times each appears, in order of first appearance."""
    order, counts = [], {}
    for k in ks:
        if id(k) not in counts:
            order.append(k)
            counts[id(k)] = 0
        counts[id(k)] += 1
    return order, [counts[id(k)] for k in order]


_DEPENDENT_HINT = ("For elementwise functions of one Gaussian input (Relu(h) + h, Relu(h) * h) "
                   "use stax.DependentFanIn(...); otherwise end each branch in an affine layer "
                   "(Dense, Conv) so that the branches are independent, zero-mean Gaussians.")


def FanOut(num: int) -> Layer:
    """Copies its input into ``num`` branches (a list), to be followed by `parallel`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, apply_fn, kernel_fn = stax.FanOut(3)
      >>> len(apply_fn((), jnp.ones((2, 4))))
      3
      >>> [k.shape for k in kernel_fn(jnp.ones((2, 4)), get='nngp')]
      [(2, 2), (2, 2), (2, 2)]
    """
    num = check_positive_int(num, "num", "FanOut")

    def init_fn(key, input_shape):
        return [tuple(input_shape)] * num, ()

    def apply_fn(params, x, **kwargs):
        return [x] * num

    def kernel_map(k, **kwargs):
        if isinstance(k, (list, tuple)):
            raise ValueError(f"FanOut({num}): got a list of {len(k)} inputs; FanOut copies a "
                             f"single input. Merge branches first with a FanIn layer.")
        return [k] * num

    return make_layer("FanOut", init_fn, apply_fn, kernel_map, shape_fn=None, any_axes=True,
                      hparams={"num": num})


def _same_shape_init(name: str):
    """``init_fn`` of a parameterless fan-in layer whose inputs must all have one shape."""

    def init_fn(key, input_shapes):
        shapes = _fan_in_shapes(input_shapes, name)
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{name}: all inputs must have the same shape; got {shapes}.")
        return shapes[0], ()

    return init_fn


def FanInSum() -> Layer:
    """Sums a list of inputs of the same shape; the kernels of independent branches add up.

    With more than one distinct input every input must be Gaussian (end in an affine layer or be
    an `Identity` of an affine layer's output), as in neural-tangents: the sum of non-Gaussian
    activations covaries through their means and through their dependence, which a kernel does
    not record, so it raises. The same input summed ``m`` times is ``m h`` (kernel times
    ``m**2``), Gaussian or not.

    Example (a residual block, He et al. 2016, arXiv:1512.03385):
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> block = stax.serial(stax.Relu(), stax.Dense(8))
      >>> _, _, kernel_fn = stax.serial(
      ...     stax.Dense(8), stax.FanOut(2), stax.parallel(stax.Identity(), block),
      ...     stax.FanInSum())
      >>> x = jnp.array([[1., 0.], [0., 1.]])
      >>> kernel_fn(x, get='nngp').tolist()  # 0.5 * I + 0.5 * 0.5 * I
      [[0.75, 0.0], [0.0, 0.75]]
    """
    name = "FanInSum"

    init_fn = _same_shape_init(name)

    def apply_fn(params, xs, **kwargs):
        return functools.reduce(jnp.add, xs)

    def kernel_map(ks, **kwargs):
        ks = _as_list(ks, name)
        _check_same_shapes(ks, name)
        if len(_distinct(ks)[0]) > 1 and not all(k.is_gaussian for k in ks):
            raise ValueError(
                f"{name}: every summed input must be Gaussian (the output of an affine layer "
                f"such as Dense or Conv, possibly through Identity); got is_gaussian="
                f"{[k.is_gaussian for k in ks]}. A sum of non-Gaussian activations has no "
                f"kernel limit computable from their kernels: it depends on their means and "
                f"their dependence. {_DEPENDENT_HINT}")
        distinct, counts = _distinct(ks)
        ks = [k if m == 1 else k.scale(m) for k, m in zip(distinct, counts)]

        def add(field):
            vals = [getattr(k, field) for k in ks]
            return None if any(v is None for v in vals) else functools.reduce(jnp.add, vals)

        return ks[0].replace(nngp=add("nngp"), ntk=add("ntk"), cov1=add("cov1"),
                             cov2=add("cov2"), is_gaussian=all(k.is_gaussian for k in ks))

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None, any_axes=True)


def FanInProd() -> Layer:
    """Multiplies a list of inputs of the same shape elementwise.

    For independent branches ``E[f g f' g'] = E[f f'] E[g g']``, so the NNGPs multiply and the
    NTK follows the product rule: ``ntk = sum_i ntk_i prod_{j != i} nngp_j``. The output is not
    Gaussian. The same Gaussian input ``m`` times is its power ``h**m``, whose kernel is that of
    `Monomial` (``E[u**2 v**2] = var1 var2 + 2 cov12**2``, Isserlis' theorem); a repeated
    non-Gaussian input raises.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(
      ...     stax.FanOut(2), stax.parallel(stax.Dense(4, W_std=2.), stax.Dense(4)),
      ...     stax.FanInProd())
      >>> x = jnp.array([[1., 1.]])
      >>> k = kernel_fn(x)
      >>> k.nngp.tolist(), k.ntk.tolist()  # 4 * 1 and 4 * 1 + 1 * 4
      ([[4.0]], [[8.0]])
    """
    name = "FanInProd"

    init_fn = _same_shape_init(name)

    def apply_fn(params, xs, **kwargs):
        return functools.reduce(jnp.multiply, xs)

    def kernel_map(ks, **kwargs):
        ks = _as_list(ks, name)
        _check_same_shapes(ks, name)
        distinct, counts = _distinct(ks)
        ks = []
        for k, m in zip(distinct, counts):
            if m > 1:
                if not k.is_gaussian:
                    raise ValueError(
                        f"{name}: the same non-Gaussian input is multiplied {m} times; the "
                        f"kernel of its power is not determined by its kernel. Multiply "
                        f"Gaussian inputs, or write the power as an activation: "
                        f"{_DEPENDENT_HINT}")
                k = Monomial(m).kernel_fn(k)  # h**m
            ks.append(k)
        nngp, ntk = ks[0].nngp, ks[0].ntk
        for k in ks[1:]:
            if ntk is not None:
                ntk = ntk * k.nngp + nngp * k.ntk
            nngp = nngp * k.nngp

        def prod(field):
            vals = [getattr(k, field) for k in ks]
            return None if any(v is None for v in vals) else functools.reduce(jnp.multiply, vals)

        return ks[0].replace(nngp=nngp, ntk=ntk, cov1=prod("cov1"), cov2=prod("cov2"),
                             is_gaussian=len(ks) == 1 and counts[0] == 1 and ks[0].is_gaussian)

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None, any_axes=True)


def _block_matrix(mats, same, axis: int):
    """The block matrix over axes (axis, axis + 1) with block (i, j) ``mats[i]`` where inputs i
    and j are the same activations (``same[i] == same[j]``) and zeros (independent) elsewhere."""
    rows = []
    for i, m in enumerate(mats):
        blocks = []
        for j, n in enumerate(mats):
            if same[i] == same[j]:
                blocks.append(m)
            else:
                shape = list(m.shape)
                shape[axis + 1] = n.shape[axis + 1]
                blocks.append(jnp.zeros(shape, m.dtype))
        rows.append(jnp.concatenate(blocks, axis + 1))
    return jnp.concatenate(rows, axis)


def _concat_cov(mats, kernel_axis: int, batch_diagonal: bool, spatial_diagonal: bool, widths,
                same):
    """Covariance of the concatenation of independent activations with covariances ``mats``.

    ``kernel_axis``: -1 for the channel axis, 0 for the batch axis, ``1 + i`` for spatial axis
    ``i``. ``batch_diagonal``/``spatial_diagonal`` say whether that axis is stored once
    (concatenate) or as a pair (a block matrix: independent branches do not covary, copies of
    the same input, ``same[i] == same[j]``, covary as the input does with itself).
    """
    if mats[0] is None:
        return None
    if kernel_axis == -1:
        if all(w == widths[0] for w in widths):
            return sum(mats) / len(mats)
        return sum(w * m for w, m in zip(widths, mats)) / sum(widths)
    n_batch = 1 if batch_diagonal else 2
    if kernel_axis == 0:
        return jnp.concatenate(mats, 0) if batch_diagonal else _block_matrix(mats, same, 0)
    i = kernel_axis - 1
    if spatial_diagonal:
        return jnp.concatenate(mats, n_batch + i)
    return _block_matrix(mats, same, n_batch + 2 * i)


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenates a list of inputs along ``axis`` (channels by default).

    Along channels the kernel is the channel-weighted average of the branch kernels (the plain
    average when the widths agree) and the output is not treated as Gaussian (as in
    neural-tangents: put an affine layer next). Along a spatial or the batch axis the covariances
    are concatenated, with zero covariance between positions of different branches; this needs
    Gaussian inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(
      ...     stax.FanOut(2), stax.parallel(stax.Dense(1, W_std=2.), stax.Dense(3)),
      ...     stax.FanInConcat())
      >>> kernel_fn(jnp.array([[1., 1.]]), get='nngp').tolist()  # (1 * 4 + 3 * 1) / 4
      [[1.75]]
    """
    name = f"FanInConcat(axis={axis})"
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{name}: axis must be an integer.")

    def _axis(ndim):
        if not -ndim <= axis < ndim:
            raise ValueError(f"{name}: axis {axis} is out of range for inputs of rank {ndim}; "
                             f"use an axis in [-{ndim}, {ndim}).")
        return axis % ndim

    def _concat_shape(shapes):
        shapes = [tuple(s) for s in shapes]
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(f"{name}: all inputs must have the same rank; got shapes {shapes}.")
        a = _axis(len(shapes[0]))
        rest = [s[:a] + s[a + 1:] for s in shapes]
        if any(r != rest[0] for r in rest):
            raise ValueError(f"{name}: the inputs' shapes may differ only along axis {axis}; "
                             f"got {shapes}.")
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out)

    def init_fn(key, input_shapes):
        return _concat_shape(_fan_in_shapes(input_shapes, name)), ()

    def apply_fn(params, xs, **kwargs):
        return jnp.concatenate(xs, axis)

    def kernel_map(ks, **kwargs):
        ks = _as_list(ks, name)
        shape1 = _concat_shape([k.shape1 for k in ks])
        shape2 = _concat_shape([k.shape2 for k in ks])
        ndim = len(shape1)
        a = _axis(ndim)
        if a == ndim - 1:
            kernel_axis, is_gaussian = -1, False
        else:
            kernel_axis = a  # 0: batch, 1 + i: spatial axis i
            if not all(k.is_gaussian for k in ks):
                raise ValueError(
                    f"{name}: concatenating along a non-channel axis needs Gaussian inputs "
                    f"(outputs of affine layers); got is_gaussian="
                    f"{[k.is_gaussian for k in ks]}. Positions from different non-Gaussian "
                    f"branches covary through the branches' means, which a kernel does not "
                    f"record. {_DEPENDENT_HINT}")
            is_gaussian = True
        k0 = ks[0]
        widths = [k.shape1[-1] for k in ks]
        db, ds = k0.diagonal_batch, k0.diagonal_spatial
        same = [id(k) for k in ks]

        def cat(field, batch_diagonal):
            return _concat_cov([getattr(k, field) for k in ks], kernel_axis, batch_diagonal, ds,
                               widths, same)

        return k0.replace(nngp=cat("nngp", False), ntk=cat("ntk", False), cov1=cat("cov1", db),
                          cov2=cat("cov2", db), shape1=shape1, shape2=shape2,
                          is_gaussian=is_gaussian)

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None, family="FanInConcat",
                      hparams={"axis": axis}, mask_fn=_masking.concatenate(axis))
