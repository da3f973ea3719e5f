"""`feature_fn`: random-feature and sketch maps of the NNGP and NTK of a stax network.

The map is derived from the same stax description as ``kernel_fn``: each layer's
`LayerInfo` names its family, and `infwidth.features._rules` holds one feature rule per family
(see that module for the formulas). For a network with one hidden layer the estimate
``phi(x1) @ phi(x2).T`` is unbiased for both the NNGP and the NTK; deeper, each layer is
unbiased given its inputs' features, so the estimate is consistent with a bias of order
``1 / n_features`` and an error that falls like ``n_features ** -0.5`` (Monte Carlo rate;
measured in tests/test_features.py and benchmarks/README.md).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive_int
from .._get import namedtuple_of, parse_get
from ..stax._layer import LayerInfo, inputs_to_kernel
from ._rules import Context, Feats, check_rules, make_draws, walk

METHODS = ("auto", "random")


class FeatureMap:
    """What `feature_fn` returns: ``phi(x)``, with fields ``get`` (the names returned),
    ``n_features`` and ``key``. The random weights are drawn on the first call for each input
    shape and dtype, then reused, so every batch of inputs sees the same map; maps of one
    architecture and width share their compiled code, whatever the key."""

    def __init__(self, compiled, key, get: tuple[str, ...], n_features: int):
        self._record, self._apply = compiled
        self._draws: dict = {}
        self.key = key
        self._seed = tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())
        self.get = get
        self.n_features = n_features

    def draws(self, x):
        """The random weights for inputs shaped like ``x`` (drawn once, then cached)."""
        sig = (tuple(x.shape[1:]), jnp.dtype(x.dtype).name)
        if sig not in self._draws:
            # concrete even when the first call is traced (phi inside jax.jit or eval_shape):
            # a cached tracer would leak into every later call
            with jax.ensure_compile_time_eval():
                self._draws[sig] = self._record(self._seed, sig)
        return self._draws[sig]

    def __call__(self, x):
        """The features of inputs ``x`` of shape ``(N, ...)``."""
        x = jnp.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"feature_fn: inputs need a batch and a feature axis, shape "
                             f"(N, ..., d); got shape {x.shape}.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        return self._apply(self.draws(x), x)


def _check_kernel_fn(kernel_fn_or_layer):
    kernel_fn = kernel_fn_or_layer
    if isinstance(kernel_fn_or_layer, tuple) and len(kernel_fn_or_layer) == 3:
        kernel_fn = kernel_fn_or_layer[2]
    if not callable(kernel_fn) or not isinstance(getattr(kernel_fn, "info", None), LayerInfo):
        raise TypeError(f"feature_fn(kernel_fn={type(kernel_fn_or_layer).__name__}): expected a "
                        f"stax layer (init_fn, apply_fn, kernel_fn) or its kernel_fn, e.g. "
                        f"stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1)).")
    return kernel_fn


def feature_fn(kernel_fn, key, n_features: int, get=("nngp", "ntk"),
               method: str = "auto") -> FeatureMap:
    """Random features ``phi`` with ``phi(x1) @ phi(x2).T`` estimating ``kernel_fn(x1, x2, get)``.

    The same ``key`` gives the same map, so features of different inputs (train and test, or
    tiles of one training set) combine. Affine layers (Dense, Conv) are exact; each activation
    is a random feature of the finite activation evaluated on an exactly Gaussian
    pre-activation (arc-cosine features for ReLU; Rahimi & Recht 2007, Cho & Saul 2009); the
    NTK's tensor products are sketched with a Gaussian product sketch (Kar & Karnick 2012; the
    NTK random features of Zandieh et al. 2021, arXiv:2106.07880). The error falls like
    ``n_features ** -0.5``.

    Args:
      kernel_fn: a stax layer or its ``kernel_fn`` (any nesting of serial, parallel, repeat,
        FanOut, FanInSum, FanInConcat over Dense, Conv (1-3D, shared weights), pooling, Flatten
        and elementwise activations). Other layers raise a ValueError naming the layer.
      key: a `jax.random` key.
      n_features: columns of each feature matrix, and the width of each random layer.
      get: ``'nngp'``, ``'ntk'`` or a tuple of them (a namedtuple of feature matrices).
      method: ``'auto'`` or ``'random'`` (the same: random features and a Gaussian sketch).

    Returns:
      A callable ``phi(x) -> (N, ..., n_features)`` array (or namedtuple) for inputs of the
      network's input shape.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.features import feature_fn
      >>> net = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
      >>> phi = feature_fn(net, jax.random.PRNGKey(0), 20000, get='nngp')
      >>> x = jnp.array([[1., 0.], [0.6, 0.8]])
      >>> f = phi(x)
      >>> f.shape
      (2, 20000)
      >>> exact = net.kernel_fn(x, get='nngp')
      >>> bool(jnp.abs(f @ f.T - exact).max() < 0.05)
      True
    """
    kernel_fn = _check_kernel_fn(kernel_fn)
    n_features = check_positive_int(n_features, "n_features", "feature_fn")
    names = parse_get(get, ("nngp", "ntk"), "feature_fn")
    if names is None:
        names = ("nngp", "ntk")
    if method not in METHODS:
        raise ValueError(f"feature_fn(method={method!r}): method must be one of {METHODS}.")
    if not (isinstance(key, jax.Array) and (key.shape == (2,) or jax.dtypes.issubdtype(
            key.dtype, jax.dtypes.prng_key))):
        raise TypeError(f"feature_fn(key={key!r}): key must be a jax.random key, e.g. "
                        f"jax.random.PRNGKey(0).")
    check_rules(kernel_fn)
    return FeatureMap(_compiled(kernel_fn, names, n_features, isinstance(get, str)), key,
                      names, n_features)


@functools.lru_cache(maxsize=64)
def _compiled(kernel_fn, names, n_features, single):
    """The jitted draw and apply functions of one architecture, width and ``get``."""
    compute_ntk = "ntk" in names

    def walk_fn(ctx, x):
        k_abs = jax.eval_shape(lambda a: inputs_to_kernel(a, compute_ntk=compute_ntk), x)
        f0 = Feats(x / math.sqrt(x.shape[-1]),
                   jnp.zeros(x.shape[:-1] + (0,), x.dtype) if compute_ntk else None)
        feats, _ = walk(kernel_fn, (0,), f0, k_abs, ctx)
        if isinstance(feats, list):
            raise ValueError("feature_fn: the network ends in several branches; merge them "
                             "with FanInSum() or FanInConcat() first.")
        out = {n: _to_width(getattr(feats, n), n_features, (1, i), ctx)
               for i, n in enumerate(names)}
        return out[names[0]] if single else namedtuple_of("Features", names)(
            *(out[n] for n in names))

    @functools.lru_cache(maxsize=16)
    def specs(sig):
        """What the map draws for inputs of one shape: an abstract walk, once."""
        ctx = Context(n_features)
        jax.eval_shape(lambda a: walk_fn(ctx, a), jax.ShapeDtypeStruct((1,) + sig[0], sig[1]))
        return tuple(ctx.specs)

    def record(seed, sig):
        return make_draws(specs(sig), seed)

    return record, jax.jit(lambda draws, x: walk_fn(Context(n_features, draws), x))


def _to_width(f, n, path, ctx):
    """Exactly ``n`` columns: zero columns appended, or a count sketch (each column added with
    a random sign to a random one of the ``n``; unbiased, ``E[P P^T] = I``, and cheap)."""
    c = f.shape[-1]
    if c == n:
        return f
    if c < n:
        return jnp.concatenate([f, jnp.zeros(f.shape[:-1] + (n - c,), f.dtype)], axis=-1)
    # the first n columns keep their place; the c - n others are hashed onto them
    where = ctx.draw("hash", path + (0,), (c, n), jnp.int32)
    sign = ctx.draw("sign", path + (1,), (c,), f.dtype)
    out = jnp.zeros(f.shape[:-1] + (n,), f.dtype)
    return out.at[..., where].add(f * sign.reshape((1,) * (f.ndim - 1) + (c,)))
