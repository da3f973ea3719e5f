"""Output-axis bookkeeping shared by the empirical kernels: `trace_axes`, `diagonal_axes`,
`vmap_axes`, and the einsum subscripts that put a kernel in neural-tangents' layout.

Layout (the same as neural-tangents 0.6.5): for outputs ``f(x1)``, ``f(x2)`` of rank ``r``, the
kernel has, for each output axis ``i`` in order, nothing if ``i`` is in ``trace_axes`` (summed
over and divided by its size), one axis if ``i`` is in ``diagonal_axes``, and the pair
``(f(x1).shape[i], f(x2).shape[i])`` otherwise. So with the default ``trace_axes=(-1,)`` and
``(N, K)`` outputs the kernel is ``(N1, N2)``.
"""

from __future__ import annotations

import string
from typing import NamedTuple

import jax
import numpy as np

from .._random import dropout_keys
from ._contract import einsum

LETTERS = string.ascii_letters


class Letters:
    """Hands out fresh einsum letters."""

    def __init__(self):
        self._i = 0

    def __call__(self, n: int = 1) -> list[str]:
        if self._i + n > len(LETTERS):
            raise ValueError("empirical kernel: too many axes to contract (more than 52).")
        out = list(LETTERS[self._i:self._i + n])
        self._i += n
        return out


def _as_tuple(axes, arg: str, caller: str) -> tuple[int, ...]:
    if axes is None:
        return ()
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        return (int(axes),)
    try:
        out = tuple(axes)
    except TypeError:
        out = None
    if out is None or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                              for a in out):
        raise TypeError(f"{caller}({arg}={axes!r}): {arg} must be an int or a sequence of ints "
                        f"(output axes, negative counts from the end).")
    return tuple(int(a) for a in out)


def check_axes(trace_axes, diagonal_axes, caller: str):
    """Validates the types of ``trace_axes``/``diagonal_axes`` when the kernel fn is built."""
    return (_as_tuple(trace_axes, "trace_axes", caller),
            _as_tuple(diagonal_axes, "diagonal_axes", caller))


class OutputAxes(NamedTuple):
    """``trace_axes`` and ``diagonal_axes`` resolved against an output of rank ``ndim``."""

    ndim: int
    trace: tuple[int, ...]
    diag: tuple[int, ...]


def resolve_axes(trace_axes, diagonal_axes, shape1, shape2, caller: str) -> OutputAxes:
    """Canonical (non-negative, sorted) axes for outputs of shapes ``shape1`` and ``shape2``."""
    ndim = len(shape1)
    if len(shape2) != ndim:
        raise ValueError(f"{caller}: f(x1) has shape {tuple(shape1)} and f(x2) has shape "
                         f"{tuple(shape2)}; outputs must have the same rank.")
    out = []
    for arg, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"{caller}({arg}={axes}): axis {a} is out of range for outputs of f of shape "
                    f"{tuple(shape1)} (rank {ndim}); axes must lie in [{-ndim}, {ndim}).")
        out.append(tuple(sorted({a % ndim for a in axes})))
    trace, diag = out
    if set(trace) & set(diag):
        raise ValueError(f"{caller}(trace_axes={trace_axes}, diagonal_axes={diagonal_axes}): an "
                         f"axis cannot be both traced and diagonal.")
    for a in trace + diag:
        if shape1[a] != shape2[a]:
            raise ValueError(
                f"{caller}: output axis {a} is traced or diagonal, so f(x1) (shape "
                f"{tuple(shape1)}) and f(x2) (shape {tuple(shape2)}) must have the same size "
                f"there.")
    return OutputAxes(ndim, trace, diag)


def subscripts(ax: OutputAxes, letters: Letters):
    """Einsum letters of the output axes of side 1, side 2, and of the kernel."""
    s1, s2, out = [], [], []
    for i in range(ax.ndim):
        if i in ax.trace or i in ax.diag:
            (l,) = letters()
            s1.append(l)
            s2.append(l)
            if i in ax.diag:
                out.append(l)
        else:
            l1, l2 = letters(2)
            s1.append(l1)
            s2.append(l2)
            out += [l1, l2]
    return s1, s2, out


def kernel_shape(ax: OutputAxes, shape1, shape2) -> tuple[int, ...]:
    """Shape of the kernel of outputs of shapes ``shape1`` and ``shape2``."""
    out = []
    for i in range(ax.ndim):
        if i in ax.diag:
            out.append(shape1[i])
        elif i not in ax.trace:
            out += [shape1[i], shape2[i]]
    return tuple(out)


def trace_size(ax: OutputAxes, shape) -> int:
    return int(np.prod([shape[i] for i in ax.trace], dtype=np.int64))


def trace_and_diagonal(k, ax: OutputAxes, shape1):
    """A full kernel of shape ``shape1 + shape2`` put in the traced/diagonal layout."""
    s1, s2, out = subscripts(ax, Letters())
    spec = "".join(s1 + s2) + "->" + "".join(out)
    return jax.numpy.einsum(spec, k) / trace_size(ax, shape1)


# ----------------------------------------------------------------------------------------------
# vmap_axes


class VmapAxes(NamedTuple):
    x_axis: object  # int or pytree prefix of x, or None
    fx_axis: object  # int or pytree prefix of fx
    kw_axes: dict


def resolve_vmap_axes(vmap_axes, caller: str) -> VmapAxes | None:
    """``None``, an int (batch axis of inputs and outputs), ``(x_axis, fx_axis, kw_axes)``, or
    any other pytree of axes, used for both inputs and outputs (neural-tangents' rule)."""
    if vmap_axes is None:
        return None
    if isinstance(vmap_axes, (int, np.integer)) and not isinstance(vmap_axes, bool):
        return VmapAxes(int(vmap_axes), int(vmap_axes), {})
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        x_axis, fx_axis, kw_axes = vmap_axes
        if kw_axes is None:
            kw_axes = {}
        if not isinstance(kw_axes, dict):
            raise TypeError(f"{caller}(vmap_axes={vmap_axes!r}): the third entry must be a dict "
                            f"from keyword-argument name to batch axis.")
        if x_axis is None and fx_axis is None and not kw_axes:
            return None
        return VmapAxes(x_axis, fx_axis, kw_axes)
    leaves = jax.tree_util.tree_leaves(vmap_axes)
    if isinstance(vmap_axes, (list, tuple, dict)) and all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in leaves):
        # as neural-tangents: anything but a triple is the axes of both inputs and outputs
        return VmapAxes(vmap_axes, vmap_axes, {})
    raise TypeError(f"{caller}(vmap_axes={vmap_axes!r}): vmap_axes must be None, an int (the batch "
                    f"axis of inputs and outputs), a triple (x_axis, fx_axis, kw_axes), or a "
                    f"pytree of ints (or None) giving the batch axes of both the inputs and the "
                    f"outputs.")


def leaf_axes(axis, tree) -> list:
    """The batch axis of every leaf of ``tree`` (``axis`` is an int, None or a pytree prefix)."""
    leaves = jax.tree_util.tree_leaves(tree)
    full = jax.tree_util.tree_leaves(_full_axes(axis, tree), is_leaf=lambda a: a is None)
    return [None if a is None else int(a) % max(np.ndim(l), 1) for a, l in zip(full, leaves)]


def per_example_fn(f, vm: VmapAxes, kwargs: dict):
    """``g(params, x_i, kw_i)``: ``f`` on one example (batch axis of size 1 added, then removed).

    Returns ``g`` and the names of the keyword arguments that are batched.
    """
    batched = sorted(vm.kw_axes)

    def expand(v, axis):
        if axis is None:
            return v
        return jax.tree_util.tree_map(lambda a, ax: a if ax is None else jax.numpy.expand_dims(
            a, ax), v, _full_axes(axis, v), is_leaf=lambda a: a is None)

    def g(params, xi, *kwi):
        kw = dict(kwargs)
        for name, v in zip(batched, kwi):
            kw[name] = expand(v, vm.kw_axes[name])
        fx = f(params, expand(xi, vm.x_axis), **kw)
        axes = _full_axes(vm.fx_axis, fx)
        return jax.tree_util.tree_map(lambda a, ax: a if ax is None else jax.numpy.squeeze(a, ax),
                                      fx, axes, is_leaf=lambda a: a is None)

    return g, batched


def _full_axes(axis, tree):
    """``axis`` (an int, None, or a pytree prefix of ``tree``) broadcast to every leaf of
    ``tree``. Lists and tuples match each other, as in neural-tangents (stax returns lists,
    users write tuples)."""
    if axis is None or isinstance(axis, (int, np.integer)):
        return jax.tree_util.tree_map(lambda _: axis, tree)
    if isinstance(axis, (list, tuple)) and isinstance(tree, (list, tuple)) \
            and len(axis) == len(tree):
        return type(tree)(_full_axes(a, t) for a, t in zip(axis, tree))
    if isinstance(axis, dict) and isinstance(tree, dict) and set(axis) == set(tree):
        return type(tree)((k, _full_axes(axis[k], tree[k])) for k in tree)
    if tree is None:
        return None
    return jax.tree_util.tree_map(lambda a, t: jax.tree_util.tree_map(lambda _: a, t), axis, tree,
                                  is_leaf=lambda a: a is None)


def split_kwargs(kwargs: dict, x1, x2):
    """Keyword arguments for ``f(x1)`` and ``f(x2)``, as neural-tangents splits them: an ``rng``
    key becomes two keys (`infwidth._random.dropout_keys`: equal exactly when the inputs are
    equal) when x2 is given, a pair ``(a, b)`` gives ``a`` to x1 and ``b`` to x2, anything else
    goes to both."""
    k1, k2 = {}, {}
    for k, v in kwargs.items():
        if k == "rng" and x2 is not None and v is not None:
            k1[k], k2[k] = dropout_keys(v, x1, x2)
        elif isinstance(v, tuple) and len(v) == 2:
            k1[k], k2[k] = v
        else:
            k1[k] = k2[k] = v
    return k1, k2


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _contract_pair(j1, j2, s1, s2, out, size):
    """sum over trailing (parameter) axes of j1[s1 + p] j2[s2 + p], divided by size."""
    p = Letters()
    p._i = 52 - (j1.ndim - len(s1))
    lp = p(j1.ndim - len(s1))
    spec = "".join(s1 + lp) + "," + "".join(s2 + lp) + "->" + "".join(out)
    return einsum(spec, j1, j2) / size


# ----------------------------------------------------------------------------------------------
# the three implementations: each returns a list (one kernel per output leaf)
