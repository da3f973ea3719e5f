"""flax support (optional): flax.nnx modules as ``f(state, x)`` functions."""

from __future__ import annotations

import inspect
import sys


def _is_nnx_module(obj) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Module)


def maybe_nnx(f):
    """``f`` itself, or for a flax.nnx Module the function ``(state, x) -> module(x)``."""
    return nnx_apply_fn(f)[0] if _is_nnx_module(f) else f


def nnx_apply_fn(module, *filters):
    """Splits a ``flax.nnx`` module into ``apply_fn(params, x, **kwargs)`` and ``params``.

    ``params`` is the module's state (of the given nnx filters, default ``nnx.Param``); any other
    state is held fixed. The pair plugs into every function of `infwidth.empirical`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from infwidth.empirical import empirical_ntk_fn, nnx_apply_fn
      >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> apply_fn, params = nnx_apply_fn(model)
      >>> empirical_ntk_fn(apply_fn)(jnp.ones((4, 3)), None, params).shape
      (4, 4)
    """
    try:
        from flax import nnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("infwidth.empirical.nnx_apply_fn needs flax: pip install "
                          "'infwidth[flax]'.") from e
    if not isinstance(module, nnx.Module):
        raise TypeError(f"nnx_apply_fn(module={type(module).__name__}): expected a flax.nnx "
                        f"Module.")
    graphdef, params, rest = nnx.split(module, *(filters or (nnx.Param,)), ...)
    # a copy (flax >= 0.11): stateful layers (the rng count of nnx.Dropout) update the copy,
    # so the function can be traced and stays a function of (params, x)
    copy = {"copy": True} if "copy" in inspect.signature(nnx.merge).parameters else {}

    def apply_fn(p, x, **kwargs):
        return nnx.merge(graphdef, p, rest, **copy)(x, **kwargs)

    return apply_fn, params
