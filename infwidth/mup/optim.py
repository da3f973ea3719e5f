"""Per-layer learning rates that make an optax optimizer muP-correct (or follow any `ABC`).

The rates depend only on each parameter's shape, read as ``(..., fan_out)`` with
``fan_in = prod(shape[:-1])`` (a Dense weight ``(fan_in, width)``, a Conv filter
``(H, W, C_in, C_out)``, a bias ``(1, ..., width)`` with fan-in 1). Under muP (Yang et al. 2022,
"Tensor Programs V", arXiv:2203.03466, Table 3, in the shape-only form of Yang, Simon &
Bernstein 2023, arXiv:2310.17813):

* SGD: ``eta * fan_out / fan_in`` (input layer ~ width, hidden ~ 1, readout ~ 1 / width);
* Adam (and other sign-like optimizers): ``eta / fan_in``.

The scaling is an optax transform chained after the optimizer, not a fork of it.
"""

from __future__ import annotations

import math

import jax

from ..parameterization import ABC, AffineRule

_RULES = ("sgd", "adam")


def _optax():
    try:
        import optax
    except ImportError as e:  # pragma: no cover - optax is a declared extra
        raise ImportError("infwidth.mup needs optax for its optimizers: pip install "
                          "'infwidth[optax]' (or pip install optax).") from e
    return optax


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    return max(1, math.prod(shape[:-1])), shape[-1]


_MUP = AffineRule("mup", 1.0, None)


def _mup_scale(shape, optimizer):
    # the rule's formula; the fans come from the shape (a bias (1, ..., width) has fan-in 1)
    return _MUP.learning_rate(*_fans(shape), optimizer)


def mup_learning_rates(params, optimizer: str = "sgd", base_params=None):
    """Per-parameter learning-rate multipliers of muP, as a pytree shaped like ``params``.

    Args:
      params: the network's parameters (or anything with the same shapes, e.g. from
        ``jax.eval_shape``).
      optimizer: ``'sgd'`` (``fan_out / fan_in``) or ``'adam'`` (``1 / fan_in``).
      base_params: optional parameters of a base-width network of the same architecture. The
        multipliers are then divided by the base network's, so they are 1 at the base width
        and a learning rate tuned there transfers (Yang et al. 2022, arXiv:2203.03466).

    Example:
      >>> import jax
      >>> from infwidth import stax, mup
      >>> net = stax.serial(stax.Dense(256, parameterization='mup'), stax.Relu(),
      ...                   stax.Dense(256, parameterization='mup'), stax.Relu(),
      ...                   stax.Dense(1, parameterization='mup'))
      >>> _, params = net.init_fn(jax.random.PRNGKey(0), (1, 8))
      >>> rates = mup_learning_rates(params, 'sgd')
      >>> [r[0] for r in rates[::2]]  # weights: input, hidden, readout
      [32.0, 1.0, 0.00390625]
    """
    if optimizer not in _RULES:
        raise ValueError(f"mup_learning_rates(optimizer={optimizer!r}): optimizer must be one "
                         f"of {', '.join(map(repr, _RULES))} (Adam-like optimizers use 'adam').")
    rates = jax.tree_util.tree_map(lambda p: _mup_scale(p.shape, optimizer), params)
    if base_params is None:
        return rates
    base = mup_learning_rates(base_params, optimizer)
    if jax.tree_util.tree_structure(base) != jax.tree_util.tree_structure(rates):
        raise ValueError("mup_learning_rates(base_params=...): base_params must have the same "
                         "structure as params (the same architecture at another width).")
    return jax.tree_util.tree_map(lambda r, b: r / b, rates, base)


def abc_learning_rates(params, parameterizations):
    """Learning-rate multipliers ``n**-c`` for layers in abc-parameterizations (Yang & Hu 2021).

    Args:
      params: the network's parameters.
      parameterizations: a prefix of ``params`` holding, for each layer's ``(W, b)``, the
        `ABC` it was built with (or ``None`` for a multiplier of 1), e.g. the list of the
        layers of a `serial`, with ``None`` for parameterless layers. ``n`` is the weight's
        fan-in or fan-out as the `ABC` says; a bias uses its width.

    Example:
      >>> import jax
      >>> from infwidth import stax
      >>> from infwidth.parameterization import ABC
      >>> layers = [ABC(0.5, 0.0, -1.0), None, ABC(1.0, 0.0, -1.0)]
      >>> net = stax.serial(stax.Dense(64, parameterization=layers[0]), stax.Relu(),
      ...                   stax.Dense(1, parameterization=layers[2]))
      >>> _, params = net.init_fn(jax.random.PRNGKey(0), (1, 4))
      >>> abc_learning_rates(params, layers)
      [(4.0, None), (), (64.0, None)]
    """

    def scale(abc, sub):
        if abc is None:
            return jax.tree_util.tree_map(lambda p: 1.0, sub)
        if not (isinstance(sub, (tuple, list)) and len(sub) == 2):
            raise ValueError(f"abc_learning_rates: {abc!r} must sit over a layer's (W, b) "
                             f"parameters; got {jax.tree_util.tree_structure(sub)}.")
        W, b = sub
        fan_in, fan_out = _fans(W.shape)
        rule = AffineRule(abc, 1.0, None)
        return (rule.learning_rate(fan_in, fan_out),
                None if b is None else rule.learning_rate(fan_in, fan_out, bias=True))

    def walk(prefix, sub):
        if prefix is None or isinstance(prefix, ABC):
            return scale(prefix, sub)
        if isinstance(prefix, (list, tuple)) and isinstance(sub, (list, tuple)) \
                and len(prefix) == len(sub):
            return type(sub)(walk(p, s) for p, s in zip(prefix, sub))
        raise ValueError("abc_learning_rates(parameterizations=...): must be a prefix of params: "
                         "one ABC (or None) per layer, in the same nesting as params.")

    return walk(parameterizations, params)


def scale_learning_rates(rates):
    """An optax ``GradientTransformation`` multiplying each update by a fixed per-leaf rate.

    Chain it after an optimizer: ``optax.chain(optax.adam(lr), scale_learning_rates(rates))``.

    Example:
      >>> import jax.numpy as jnp
      >>> t = scale_learning_rates({'w': 2.0, 'b': 0.5})
      >>> updates, _ = t.update({'w': jnp.ones(2), 'b': jnp.ones(2)}, t.init(None))
      >>> updates['w'].tolist(), updates['b'].tolist()
      ([2.0, 2.0], [0.5, 0.5])
    """
    optax = _optax()

    def init_fn(params):
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        return jax.tree_util.tree_map(lambda u, r: u * r, updates, rates), state

    return optax.GradientTransformation(init_fn, update_fn)


def sgd(learning_rate, params, base_params=None, **kwargs):
    """``optax.sgd`` with muP's per-layer learning rates ``learning_rate * fan_out / fan_in``.

    ``kwargs`` go to ``optax.sgd`` (momentum, nesterov). Build the network with
    ``parameterization='mup'``. See `mup_learning_rates` for ``base_params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax, mup
      >>> net = stax.serial(stax.Dense(128, parameterization='mup'), stax.Relu(),
      ...                   stax.Dense(1, parameterization='mup'))
      >>> _, params = net.init_fn(jax.random.PRNGKey(0), (1, 4))
      >>> opt = mup.sgd(0.5, params)
      >>> grads = jax.grad(lambda p: net.apply_fn(p, jnp.ones((1, 4))).sum())(params)
      >>> updates, _ = opt.update(grads, opt.init(params), params)
      >>> bool(jnp.allclose(updates[2][0], -0.5 / 128 * grads[2][0]))  # readout: 1 / 128
      True
    """
    optax = _optax()
    rates = mup_learning_rates(params, "sgd", base_params)
    return optax.chain(optax.sgd(learning_rate, **kwargs), scale_learning_rates(rates))


def adam(learning_rate, params, base_params=None, **kwargs):
    """``optax.adam`` with muP's per-layer learning rates ``learning_rate / fan_in``.

    ``kwargs`` go to ``optax.adam``. Build the network with ``parameterization='mup'``.

    Example:
      >>> import jax
      >>> from infwidth import stax, mup
      >>> net = stax.serial(stax.Dense(128, parameterization='mup'), stax.Relu(),
      ...                   stax.Dense(1, parameterization='mup'))
      >>> _, params = net.init_fn(jax.random.PRNGKey(0), (1, 4))
      >>> opt = mup.adam(1e-2, params)
      >>> state = opt.init(params)
    """
    optax = _optax()
    rates = mup_learning_rates(params, "adam", base_params)
    return optax.chain(optax.adam(learning_rate, **kwargs), scale_learning_rates(rates))
