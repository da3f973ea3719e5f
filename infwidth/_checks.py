"""The small argument checks every layer and function shares, each naming the argument, the
function and the fix, and raised when a layer is built or a function called, before any work.

>>> check_positive_int(0, 'out_dim', 'Dense')
Traceback (most recent call last):
...
ValueError: Dense(out_dim=0): out_dim must be a positive integer.
"""

from __future__ import annotations

import jax
import numpy as np


def _is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def check_positive_int(value, arg: str, caller: str) -> int:
    """``value`` as an int, or a ValueError: ``caller(arg=value): arg must be ...``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{caller}({arg}={value!r}): {arg} must be a positive integer.")
    return int(value)


def check_nonnegative_int(value, arg: str, caller: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{caller}({arg}={value!r}): {arg} must be a non-negative integer.")
    return int(value)


def check_nonnegative(value, arg: str, caller: str, allow_none: bool = False):
    """A non-negative number (or None where allowed); traced values (hyperparameters under
    ``jax.grad``) and arrays of non-negative numbers pass through unchanged."""
    if value is None and allow_none:
        return None
    if _is_traced(value):
        return value
    try:
        arr = np.asarray(value, dtype=float)
        ok = bool(np.all(arr >= 0) and np.all(np.isfinite(arr))) and not np.iscomplexobj(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        none = " or None" if allow_none else ""
        raise ValueError(f"{caller}({arg}={value!r}): {arg} must be a non-negative "
                         f"number{none}, and finite.")
    return value


def check_number(value, arg: str, caller: str):
    """A real number; traced values pass through."""
    if _is_traced(value):
        return value
    if isinstance(value, bool) or np.iscomplexobj(value):
        raise TypeError(f"{caller}({arg}={value!r}): {arg} must be a real number.")
    try:
        float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{caller}({arg}={value!r}): {arg} must be a real number.") from None
    return value


def check_bool(value, arg: str, caller: str) -> bool:
    """``True`` or ``False`` (numpy booleans too); anything else is a TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{caller}({arg}={value!r}): {arg} must be True or False.")
    return bool(value)


def check_default_layout(batch_axis, channel_axis, caller: str):
    """Only the default layout, batch first and channels last, is accepted here."""
    if batch_axis != 0 or channel_axis != -1:
        raise ValueError(
            f"{caller}(batch_axis={batch_axis!r}, channel_axis={channel_axis!r}): this layer "
            f"keeps the batch first and channels last; move the axes of your inputs with "
            f"jnp.moveaxis.")


def none_if_all_none(x):
    """``None`` for ``None`` or a (nested) list/tuple of ``None`` (neural-tangents' ``x2`` of a
    multi-input network evaluated on ``x1`` alone), else ``x``."""
    if isinstance(x, (list, tuple, dict)) and not jax.tree_util.tree_leaves(x):
        return None
    return x
