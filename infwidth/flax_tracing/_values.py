"""What the jaxpr walk knows about each value of a traced model, and the source lines.

* `Const`: a value that depends neither on the input nor on the parameters.
* `ParamRef`: a parameter leaf (possibly reshaped or broadcast, as biases are).
* `Act`: an activation, i.e. a value that depends on the input. Its infinite-width description
  is a `Kernel` of ``base`` (an activation with a known kernel) and an elementwise function
  ``fn`` still to be applied to it (``None`` for the identity): consecutive elementwise
  operations are fused and only turned into a kernel map when the activation is used otherwise.
  ``leaves`` are the parameters it depends on; ``fresh`` those of the affine layer that made it,
  when it is that layer's output (then it is uncorrelated in the limit with any activation that
  does not depend on them); ``rebuild(b_std)`` recomputes an affine layer's kernel with a bias.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ..kernel import Kernel


@dataclasses.dataclass(frozen=True)
class Const:
    value: Any


@dataclasses.dataclass(frozen=True)
class ParamRef:
    leaf: int
    shape: tuple
    leaf_shape: tuple
    caxis: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Act:
    kernel: Kernel | None
    shape: tuple
    leaves: frozenset = frozenset()
    fresh: frozenset = frozenset()
    rebuild: Callable | None = None
    base: Act | None = None
    fn: Callable | None = None
    where: Any = None
    # per-feature parameters whose gradients are in ``kernel.ntk`` only on average over the
    # features (LayerNorm's learned scale and shift): a dense/conv layer must read it next
    per_feature: str | None = None
    # with a learned per-feature scale: the squared mean of its initializer (its gradient, the
    # normalised feature itself, is in ``kernel.ntk`` as the normalised NNGP); NaN when a random
    # shift makes that gradient no longer a multiple of the activation
    gamma_c2: float | None = None
    # positions gathered from another activation (a slice, a piece of a wrap-around pad):
    # ``(root, indices per spatial axis)`` (-1: a zero), so that pieces of one activation
    # concatenated along a spatial axis keep their cross-covariances
    posmap: tuple | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Stat:
    """A statistic over the features of the Gaussian activation ``root`` (a mean of a function
    of its entries, as LayerNorm computes), which is deterministic in the limit:
    ``fn(var)`` of the root's per-input, per-position variances (elementwise). ``scale`` is
    a per-feature parameter multiplied in (LayerNorm's learned scale), or None."""
    fn: Callable
    root: Act
    shape: tuple
    scale: ParamRef | None = None


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Independent uniform draws on ``[lo, hi)`` (``jax.random.uniform``), of ``shape``."""
    lo: float
    hi: float
    shape: tuple


@dataclasses.dataclass(frozen=True)
class Mask:
    """A Bernoulli mask: 1 (True) with probability ``p``, independently per entry except along
    the ``shared`` axes (where one draw is broadcast); ``scale`` the value of a kept entry once
    the mask is a number (``None`` while it is boolean)."""
    p: float
    shape: tuple
    shared: frozenset = frozenset()
    scale: float | None = None


def shared_scalar(const: Const) -> float | None:
    """The value of a constant that is the same at every entry (a scalar), else None."""
    a = np.asarray(const.value, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.reshape(-1)[0]):
        return None
    return float(a.reshape(-1)[0])


_SKIP = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep,
         os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep, "<frozen")
_STDLIB = os.path.dirname(os.__file__)


def user_line(frames) -> str:
    """'file.py:12 (fn)' of the innermost frame outside jax, flax, infwidth and the stdlib."""
    for fr in frames:
        fname = fr[0]
        if any(s in fname for s in _SKIP) or fname.startswith(_STDLIB):
            continue
        return f"{fname}:{fr[1]} ({fr[2]})"
    return "an unknown line"


# the call equations (jit, custom_jvp) the walk is inside of: their lines stand in for those of
# inner equations, whose tracebacks stop at the jitted function (jnp.sort, jax.nn.relu, ...)
CALL_STACK: list = []


def _line(eqn) -> str:
    tb = getattr(eqn.source_info, "traceback", None)
    if tb is None:
        return "an unknown line"
    return user_line([(f.file_name, f.line_num, f.function_name) for f in tb.frames])


def eqn_line(eqn) -> str:
    """The model's source line that produced a jaxpr equation."""
    for e in [eqn] + CALL_STACK[::-1]:
        line = _line(e)
        if line != "an unknown line":
            return line
    return "an unknown line"


class UnsupportedOperation(NotImplementedError):
    """An operation of a traced model that has no infinite-width rule in infwidth."""


def unsupported(eqn, what: str, need: str) -> UnsupportedOperation:
    return UnsupportedOperation(
        f"from_flax: the operation '{eqn.primitive.name}' at {eqn_line(eqn)} {what}. {need} "
        f"(from_flax never approximates an operation silently.)")


_BRANCH_ERRORS = tuple(getattr(jax.errors, n) for n in
                       ("TracerBoolConversionError", "ConcretizationTypeError",
                        "TracerIntegerConversionError") if hasattr(jax.errors, n))


@contextlib.contextmanager
def python_branches_explained():
    """Turns JAX's error for Python control flow on traced values into one about kernels."""
    try:
        yield
    except _BRANCH_ERRORS as e:
        tb, frames = e.__traceback__, []
        while tb is not None:
            code = tb.tb_frame.f_code
            frames.append((code.co_filename, tb.tb_lineno, code.co_name))
            tb = tb.tb_next
        raise ValueError(
            f"from_flax: the model branches in Python on the value of an activation or "
            f"parameter at {user_line(frames[::-1])} ({type(e).__name__}). A kernel needs one "
            f"computation for every input and every width; write the branch with jnp.where (an "
            f"elementwise choice) or remove it.") from e
