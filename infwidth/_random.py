"""The random stream of infwidth's finite networks: neural-tangents' (and jax's classic) one.

jax 0.5 changed the default of ``jax_threefry_partitionable`` to ``True``, which changes the
numbers ``jax.random.split`` and ``jax.random.normal`` draw from a key. neural-tangents 0.6.5
ran on the classic stream, so its users' seeds would give other parameters on current jax.
Every ``init_fn`` and ``apply_fn`` of `infwidth.stax` and the Monte Carlo sampler therefore
draw with the classic stream (the public ``jax.threefry_partitionable(False)`` context), and a
key gives neural-tangents' parameters wherever the parameter layout is the same.

Example:
  >>> import jax
  >>> from infwidth._random import classic_stream
  >>> draw = classic_stream(lambda key: jax.random.normal(key, (2,)))
  >>> with jax.threefry_partitionable(False):
  ...     expected = jax.random.normal(jax.random.PRNGKey(0), (2,))
  >>> bool((draw(jax.random.PRNGKey(0)) == expected).all())
  True
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["classic_stream", "dropout_keys"]


def classic_stream(fn: Callable) -> Callable:
    """``fn`` evaluated under jax's classic (non-partitionable) threefry stream."""
    if getattr(fn, "_classic_stream", False):
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.threefry_partitionable(False):
            return fn(*args, **kwargs)

    wrapped._classic_stream = True  # type: ignore[attr-defined]
    return wrapped


def _same_inputs(x1, x2):
    """neural-tangents' test for "x2 is x1": the same object, or equal shapes and entries
    within 1e-12 (a traced boolean when the inputs are traced)."""
    if x1 is x2:
        return True
    l1, l2 = jax.tree_util.tree_leaves(x1), jax.tree_util.tree_leaves(x2)
    if len(l1) != len(l2) or any(np.shape(a) != np.shape(b) for a, b in zip(l1, l2)):
        return False
    same = jnp.array(True)
    for a, b in zip(l1, l2):
        same = same & jnp.all(jnp.abs(jnp.asarray(a) - jnp.asarray(b)) < 1e-12)
    return same


def dropout_keys(key, x1, x2):
    """The keys ``apply_fn(..., rng=...)`` gets for ``x1`` and ``x2``, as neural-tangents'
    empirical kernels derive them: ``x1`` keeps ``key``; ``x2`` gets the same key when it equals
    ``x1`` (so a copy gives the ``x2=None`` kernel) and ``fold_in(key, 1)`` otherwise. A pair of
    keys ``(k1, k2)`` is used as given, except that ``k2`` is made equal to ``k1`` exactly when
    the inputs are equal."""
    same = _same_inputs(x1, x2)
    with jax.threefry_partitionable(False):
        if isinstance(key, tuple) and len(key) == 2:
            k1, k2 = key
            distinct = jnp.where(jnp.all(k1 == k2), jax.random.fold_in(k2, 1), k2)
            return k1, jnp.where(same, k1, distinct)
        if same is True:
            return key, key
        return key, jnp.where(same, key, jax.random.fold_in(key, 1))
