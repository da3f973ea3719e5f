"""A minimal full-batch training loop shared by `infwidth.mup` and `infwidth.analysis`.

An optimizer is either a float (plain gradient descent with that learning rate; no optax
needed) or an optax ``GradientTransformation`` (anything with ``init`` and ``update``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def mse_loss(f, y):
    """Half the mean squared error, ``0.5 * mean((f - y)**2)``."""
    return 0.5 * jnp.mean((f - y) ** 2)


def check_optimizer(optimizer, caller: str):
    """Returns ``(init, update)`` functions for a float learning rate or an optax transform."""
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        return optimizer.init, optimizer.update
    if isinstance(optimizer, (int, float)) and not isinstance(optimizer, bool) and optimizer > 0:
        lr = float(optimizer)

        def update(grads, state, params=None):
            return jax.tree_util.tree_map(lambda g: -lr * g, grads), state

        return (lambda params: ()), update
    raise TypeError(f"{caller}(optimizer={optimizer!r}): optimizer must be a positive learning "
                    f"rate (plain gradient descent) or an optax GradientTransformation, e.g. "
                    f"optax.sgd(0.1) or infwidth.mup.sgd(0.1, params).")


def make_step(loss_fn: Callable, optimizer, caller: str):
    """``(init, step)``: ``step(params, state) -> (params, state, loss)``, jitted."""
    init, update = check_optimizer(optimizer, caller)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = update(grads, state, params)
        params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        return params, state, loss

    return init, step


def check_positive_int(value, arg: str, caller: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{caller}({arg}={value!r}): {arg} must be a positive integer.")
    return value
