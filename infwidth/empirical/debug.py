"""Which parameters the structured-derivatives NTK cannot exploit, and what that costs."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from . import _structured as sd
from ._axes import per_example_fn, resolve_vmap_axes
from ._flax import maybe_nnx


class Fallback(NamedTuple):
    """A parameter leaf differentiated by an ordinary Jacobian instead of a structured rule."""

    path: str  # the leaf's key path in params
    shape: tuple
    uses: tuple  # primitives that consume it (a structured leaf is used once, by one product)
    jacobian_entries: int  # entries of its Jacobian: outputs of f(x) x leaf size

    def __str__(self):
        return (f"{self.path} {self.shape}: used by {', '.join(self.uses) or 'nothing'}; "
                f"{self.jacobian_entries:,} Jacobian entries")


class FallbackReport(list):
    """A list of :class:`Fallback` (largest Jacobian first) that prints as a table."""

    structured: int  # number of leaves with a structured rule
    total_entries: int

    def __str__(self):
        lines = [f"{len(self)} of {len(self) + self.structured} parameter leaves fall back to "
                 f"a Jacobian ({self.total_entries:,} entries in all):"]
        return "\n".join(lines + [f"  {row}" for row in self])


def structured_fallbacks(f, params, x, vmap_axes=None, **apply_fn_kwargs) -> FallbackReport:
    """Lists the parameter leaves of ``f(params, x)`` that ``implementation=
    'structured_derivatives'`` differentiates by an ordinary Jacobian, with the operations
    that use them and the size of that Jacobian (per example under ``vmap_axes``).

    Structured rules apply to a leaf used exactly once, as the weight of a ``dot_general`` or
    ``conv_general_dilated`` (Novak et al. 2022, arXiv:2206.08720); every other leaf falls
    back, alone (never the whole model). Use it to find why a model is slow or large.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.empirical import structured_fallbacks
      >>> f = lambda p, x: jnp.tanh(x @ p['w']) * p['scale']
      >>> p = {'w': jnp.ones((3, 4)), 'scale': jnp.ones(4)}
      >>> report = structured_fallbacks(f, p, jnp.ones((2, 3)))
      >>> print(report)
      1 of 2 parameter leaves fall back to a Jacobian (32 entries in all):
        ['scale'] (4,): used by broadcast_in_dim; 32 Jacobian entries
    """
    f = maybe_nnx(f)
    vm = resolve_vmap_axes(vmap_axes, "structured_fallbacks")
    paths, p_def = jax.tree_util.tree_flatten_with_path(params)
    leaves = [l for _, l in paths]
    if vm is None:
        g, args = (lambda ls, a: f(jax.tree_util.tree_unflatten(p_def, ls), a,
                                   **apply_fn_kwargs)), (x,)
    else:
        g1, batched = per_example_fn(f, vm, apply_fn_kwargs)
        take = lambda a, ax: jax.numpy.take(a, 0, ax)
        args = (jax.tree_util.tree_map(lambda a: take(a, vm.x_axis), x),
                *[take(apply_fn_kwargs[b], vm.kw_axes[b]) for b in batched])
        g = lambda ls, *a: g1(jax.tree_util.tree_unflatten(p_def, ls), *a)
    closed = sd.trace_jaxpr(g, leaves, *args)
    why: dict = {}
    _, by_leaf = sd.analyse(closed.jaxpr, len(leaves), why)
    outs = sum(int(np.prod(v.aval.shape)) for v in closed.jaxpr.outvars)
    rows = [Fallback(jax.tree_util.keystr(path), tuple(np.shape(leaf)),
                     tuple(dict.fromkeys(why.get(i, []))), outs * int(np.size(leaf)))
            for i, (path, leaf) in enumerate(paths) if i not in by_leaf]
    report = FallbackReport(sorted(rows, key=lambda r: -r.jacobian_entries))
    report.structured = len(by_leaf)
    report.total_entries = sum(r.jacobian_entries for r in rows)
    return report
