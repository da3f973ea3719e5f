"""Checks of the inputs of the empirical kernels that run before any derivative is formed:
the batch axes named by ``vmap_axes`` exist and agree in size, and the model's outputs are
finite (a NaN output would give a NaN kernel after all the work)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._axes import _full_axes


def _sizes(tree, axis, what: str, caller: str, vmap_axes) -> list[int]:
    sizes = []
    for leaf, ax in zip(jax.tree_util.tree_leaves(tree),
                        jax.tree_util.tree_leaves(_full_axes(axis, tree),
                                                  is_leaf=lambda a: a is None)):
        if ax is None:
            continue
        ndim = np.ndim(leaf)
        if not -ndim <= int(ax) < max(ndim, 1) or ndim == 0:
            raise ValueError(
                f"{caller}(vmap_axes={vmap_axes!r}): {what} has shape {tuple(np.shape(leaf))}, "
                f"which has no axis {ax}; vmap_axes names the batch axis of (x, f(x), "
                f"batched keyword arguments). Pass the right axis, or vmap_axes=None.")
        sizes.append(int(np.shape(leaf)[int(ax)]))
    return sizes


def check_vmap_axes(vm, x, fx, kw: dict, caller: str, vmap_axes) -> None:
    """The batch axes of ``x``, ``f(x)`` and the batched keyword arguments exist and have one
    size (the number of examples)."""
    if vm is None:
        return
    found = {"x": _sizes(x, vm.x_axis, "x", caller, vmap_axes),
             "f(x)": _sizes(fx, vm.fx_axis, "f(x)", caller, vmap_axes)}
    for name, axis in vm.kw_axes.items():
        if name not in kw:
            raise ValueError(f"{caller}(vmap_axes={vmap_axes!r}): keyword argument {name!r} "
                             f"has a batch axis but was not passed; passed: {sorted(kw)}.")
        found[name] = _sizes(kw[name], axis, f"keyword argument {name!r}", caller, vmap_axes)
    sizes = {k: sorted(set(v)) for k, v in found.items() if v}
    if len({s for v in sizes.values() for s in v}) > 1:
        listed = ", ".join(f"{k}: {v if len(v) > 1 else v[0]}" for k, v in sizes.items())
        raise ValueError(
            f"{caller}(vmap_axes={vmap_axes!r}): the batch axes do not agree in size ({listed}). "
            f"vmap_axes promises one axis of examples shared by inputs, outputs and batched "
            f"keyword arguments; fix the axes (e.g. vmap_axes=(x_axis, fx_axis, kw_axes)) or "
            f"pass vmap_axes=None.")


def concrete(tree) -> bool:
    """Whether every leaf has a value (outside ``jit``), so that values can be checked."""
    return all(not isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(tree))


def check_finite(out, caller: str, which: str = "x1") -> None:
    """Raises if an output ``f(params, x)`` of the model has NaN or infinite entries."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(out):
        leaf = jnp.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            continue
        bad = int(jnp.sum(~jnp.isfinite(leaf)))
        if bad:
            where = jax.tree_util.keystr(path) or "the output"
            raise ValueError(
                f"{caller}: f(params, {which}) has {bad} non-finite (NaN or inf) entries in "
                f"{where} (shape {leaf.shape}), so its kernel would be NaN. Check the inputs "
                f"and parameters (a log or division by zero, an overflow, uninitialised "
                f"parameters) before computing kernels.")
