"""Feature rules: one per layer family, keyed by `LayerInfo.family`, in one registry.

A rule maps the features of a layer's inputs to those of its outputs. Features are kept in the
*sum* convention: ``F`` of shape ``(N, ..., c)`` (any spatial axes of the activations) with
``F(x1)[s] . F(x2)[s'] = nngp(x1, x2)[s, s']``, and ``T`` likewise for the NTK. The raw inputs
are ``F = x / sqrt(d)``, ``T`` empty (``c = 0``), which is exactly the Kernel of the inputs.

* Affine layers (``Dense``, ``Conv``): the kernel map is ``nngp' = alpha L(nngp) + beta`` and
  ``ntk' = c_t L(ntk) + c_n L(nngp) + c_0``, with ``L`` the identity (Dense) or the filter's
  spatial averaging (Conv) and the five numbers read off the layer's own `AffineRule`
  (so every parameterization is covered by the one place that defines it). Both are exact:
  a concatenation with a constant column, and for Conv the patches of the features (the
  layer's own convolution, padding and strides, with an identity filter: ``taps * c``
  columns, which the next activation projects back to ``n_features``).
* The ReLU family ``a min(u, 0) + b max(u, 0)``: the linear half ``(a + b)/2 u`` exactly (the
  input features), the even half ``(b - a)/2 |u|`` as random features (arc-cosine features,
  Cho & Saul 2009), since ``E[u |v|] = 0``.
* Other elementwise activations: ``U = F G`` with ``G ~ N(0, 1)`` is, given ``F``, a Gaussian
  process with covariance ``nngp`` exactly, so ``phi(U) / sqrt(m)`` has
  ``E[F' . F'] = E[phi(u) phi(v)]`` (random features of the finite activation, Rahimi & Recht
  2007, which for ReLU are the arc-cosine features of Cho & Saul 2009) and
  ``phi'(U) / sqrt(m)`` estimates the derivative map. The NTK ``ntk * E[phi'(u) phi'(v)]`` is a
  tensor product of two feature maps, sketched to ``m`` columns as ``(T R) * phi'(U) / sqrt(m)``
  with ``R ~ N(0, 1)`` independent of ``G``: column ``j`` has expectation
  ``E[(t.r)(t'.r)] E[phi'(u) phi'(v)] = ntk * E[phi'(u) phi'(v)]``, a Gaussian product sketch of
  ``T (x) phi'(U)`` (Kar & Karnick 2012; the NTK random features of Zandieh et al. 2021,
  arXiv:2106.07880).
* Parameterless channel-wise linear layers (pooling, Flatten): the layer's own ``apply_fn``.
* Combinators and branches: ``serial``, ``parallel``, ``repeat``, ``Identity``, ``FanOut``,
  ``FanInSum`` (independent branches: concatenation), ``FanInConcat`` (channel weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..stax._layer import LayerInfo


class Feats(NamedTuple):
    """Features of one activation in the sum convention: ``nngp`` ``(N, ..., c)`` and ``ntk``
    ``(N, ..., c_t)`` (``None`` when the NTK is not asked for)."""

    nngp: Any
    ntk: Any


class Context:
    """The width ``n_features`` and the random draws of one feature map.

    The walk runs twice: once abstractly (`jax.eval_shape`) recording every draw, made with
    numpy from the map's seed and the draw's path in the network (so no random-number program
    is compiled), then, for every batch of inputs, replaying them: the weights are drawn once
    per map and input shape, not once per tile of inputs.
    """

    def __init__(self, n_features: int, draws: list | None = None):
        self.n_features = n_features
        self.recording = draws is None
        self.specs: list = []  # what each draw is: (kind, path, shape, dtype)
        self.draws: list = [] if draws is None else list(draws)
        self._next = 0

    def draw(self, kind: str, path: tuple[int, ...], shape: tuple[int, ...], dtype):
        """A random array: ``kind`` is 'normal' (standard normal), 'sign' (+-1) or 'hash'
        (the identity on the first ``shape[1]`` entries of ``shape[0]``, then uniform)."""
        if self.recording:
            self.specs.append((kind, path, tuple(shape), jnp.dtype(dtype).name))
            return jnp.zeros(shape[:1] if kind == "hash" else shape, dtype)
        self._next += 1
        return self.draws[self._next - 1]

    def normal(self, path, shape, dtype):
        return self.draw("normal", path, shape, dtype)


def make_draws(specs, seed) -> list:
    """The arrays of recorded draws, made with numpy from ``seed`` and each draw's path."""
    out = []
    for kind, path, shape, dtype in specs:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=path))
        if kind == "normal":
            arr = rng.standard_normal(shape)
        elif kind == "sign":
            arr = rng.choice(np.array([-1.0, 1.0]), shape)
        else:
            c, n = shape
            arr = np.concatenate([np.arange(n), rng.integers(0, n, c - n)])
        out.append(jnp.asarray(arr.astype(dtype)))
    return out


def split(path: tuple[int, ...], n: int) -> list[tuple[int, ...]]:
    """``n`` child paths of a draw path (as `jax.random.split` splits a key)."""
    return [path + (i,) for i in range(n)]


RULES: dict[str, Callable] = {}


def rule(*families: str):
    """Registers a feature rule for the layer families given."""

    def register(fn):
        for f in families:
            RULES[f] = fn
        return fn

    return register


def _mm(a, b):
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _ones(f, scale):
    return jnp.full(f.shape[:-1] + (1,), scale, f.dtype)


def _cat(parts):
    return jnp.concatenate(parts, axis=-1)


def check_rules(kernel_fn):
    """Raises, before any work, if a layer of the network has no feature rule."""
    info = LayerInfo.of(kernel_fn)
    _rule_of(info)
    for child in info.children:
        check_rules(child)


def _rule_of(info: LayerInfo) -> Callable:
    fn = RULES.get(info.family)
    if fn is None:
        raise ValueError(
            f"feature_fn: the layer {info.name!r} has no feature rule. infwidth.features covers "
            f"{', '.join(sorted(RULES))} (elementwise: every activation built on "
            f"stax.elementwise, e.g. Relu, LeakyRelu, Abs, Erf, Gelu); for other layers "
            f"compute the kernel itself (kernel_fn with infwidth.batch).")
    return fn


def walk(kernel_fn, key, feats, k_abs, ctx: Context):
    """Applies the feature rule of ``kernel_fn`` (and of its children); returns the features
    and the abstract Kernel (shapes only) after the layer."""
    info = LayerInfo.of(kernel_fn)
    return _rule_of(info)(kernel_fn, info, key, feats, k_abs, ctx)


def _abstract(kernel_fn, k_abs):
    """The Kernel after the layer, shapes only: the layer checks its input here (the errors
    of kernel_fn, before any feature is computed)."""
    return jax.eval_shape(lambda k: kernel_fn(k), k_abs)


# ----------------------------------------------------------------------------------------------
# combinators and branches


@rule("serial")
def _serial(kernel_fn, info, key, feats, k_abs, ctx):
    keys = split(key, len(info.children))
    for child, kk in zip(info.children, keys):
        feats, k_abs = walk(child, kk, feats, k_abs, ctx)
    return feats, k_abs


@rule("repeat")
def _repeat(kernel_fn, info, key, feats, k_abs, ctx):
    (child,) = info.children
    for kk in split(key, info.hparams["n"]):
        feats, k_abs = walk(child, kk, feats, k_abs, ctx)
    return feats, k_abs


@rule("parallel")
def _parallel(kernel_fn, info, key, feats, k_abs, ctx):
    k_out = _abstract(kernel_fn, k_abs)  # checks the number of inputs
    keys = split(key, len(info.children))
    out = [walk(c, kk, f, k, ctx)[0] for c, kk, f, k in zip(info.children, keys, feats, k_abs)]
    return out, k_out


@rule("Identity")
def _identity(kernel_fn, info, key, feats, k_abs, ctx):
    return feats, k_abs


@rule("FanOut")
def _fan_out(kernel_fn, info, key, feats, k_abs, ctx):
    return [feats] * info.hparams["num"], _abstract(kernel_fn, k_abs)


def _distinct(feats):
    order, counts = [], {}
    for f in feats:
        if id(f) not in counts:
            order.append(f)
            counts[id(f)] = 0
        counts[id(f)] += 1
    return order, [counts[id(f)] for f in order]


@rule("FanInSum")
def _fan_in_sum(kernel_fn, info, key, feats, k_abs, ctx):
    # independent zero-mean branches: the kernels add, so the features concatenate; the same
    # activations m times are m h (kernel times m**2), as in the kernel map
    k_out = _abstract(kernel_fn, k_abs)
    order, counts = _distinct(feats)
    nngp = _cat([m * f.nngp for f, m in zip(order, counts)])
    ntk = None if order[0].ntk is None else _cat([m * f.ntk for f, m in zip(order, counts)])
    return Feats(nngp, ntk), k_out


@rule("FanInConcat")
def _fan_in_concat(kernel_fn, info, key, feats, k_abs, ctx):
    k_out = _abstract(kernel_fn, k_abs)
    if info.hparams["axis"] not in (-1, len(k_abs[0].shape1) - 1):
        raise ValueError(f"feature_fn: {info.name} concatenates along a non-channel axis; only "
                         f"FanInConcat(axis=-1) has a feature rule.")
    widths = [k.shape1[-1] for k in k_abs]
    weights = [math.sqrt(w / sum(widths)) for w in widths]
    nngp = _cat([w * f.nngp for f, w in zip(feats, weights)])
    ntk = None if feats[0].ntk is None else _cat([w * f.ntk for f, w in zip(feats, weights)])
    return Feats(nngp, ntk), k_out


# ----------------------------------------------------------------------------------------------
# layers


def _affine_coefficients(affine, fan_in):
    """``(alpha, beta, c_t, c_n, c_0)`` of the layer's kernel map, from its `AffineRule`."""
    n0, t0 = affine.kernels(0.0, 0.0, fan_in)
    n1, t1 = affine.kernels(1.0, 0.0, fan_in)
    _, t2 = affine.kernels(0.0, 1.0, fan_in)
    return n1 - n0, n0, t2 - t0, t1 - t0, t0


def _affine(info, feats, k_abs, linear, fan_in):
    alpha, beta, c_t, c_n, c_0 = _affine_coefficients(info.hparams["rule"], fan_in)
    lin_f = linear(feats.nngp)
    nngp = [math.sqrt(alpha) * lin_f] + ([_ones(lin_f, math.sqrt(beta))] if beta else [])
    ntk = None
    if feats.ntk is not None:
        ntk = [math.sqrt(c_n) * lin_f] + ([_ones(lin_f, math.sqrt(c_0))] if c_0 else [])
        if feats.ntk.shape[-1] and c_t:
            ntk = [math.sqrt(c_t) * linear(feats.ntk)] + ntk
        ntk = _cat(ntk)
    return Feats(_cat(nngp), ntk)


@rule("Dense")
def _dense(kernel_fn, info, key, feats, k_abs, ctx):
    k_out = _abstract(kernel_fn, k_abs)
    return _affine(info, feats, k_abs, lambda f: f, k_abs.shape1[-1]), k_out


@rule("Conv")
def _conv(kernel_fn, info, key, feats, k_abs, ctx):
    k_out = _abstract(kernel_fn, k_abs)
    filter_shape = tuple(info.hparams["filter_shape"])
    taps = math.prod(filter_shape)

    def patches(f):  # exact: the layer's own convolution (padding, strides) with the identity
        c = f.shape[-1]  # filter, so that column (o, i) at s holds f[s + o, i] / sqrt(taps)
        if c == 0:
            return jnp.zeros(f.shape[:1] + tuple(k_out.shape1[1:-1]) + (0,), f.dtype)
        lin = info.hparams["linear"](taps * c)
        eye = jnp.eye(taps * c, dtype=f.dtype).reshape(filter_shape + (c, taps * c))
        return lin.apply_fn((eye, None), f * math.sqrt(c))

    return _affine(info, feats, k_abs, patches, k_abs.shape1[-1] * taps), k_out


@rule("elementwise")
def _elementwise(kernel_fn, info, key, feats, k_abs, ctx):
    k_out = _abstract(kernel_fn, k_abs)
    fn, m = info.hparams["fn"], ctx.n_features
    f = feats.nngp
    k_g, k_r = split(key, 2)
    u = _mm(f, ctx.normal(k_g, (f.shape[-1], m), f.dtype))
    if feats.ntk is None:
        return Feats(fn(u) / math.sqrt(m), None), k_out
    out, deriv = jax.jvp(fn, (u,), (jnp.ones_like(u),))
    t = feats.ntk
    # column j: (T . r_j) phi'(u_j), with r_j independent of u_j: E[(T.r)(T'.r)] E[phi' phi'']
    sketch = _mm(t, ctx.normal(k_r, (t.shape[-1], m), t.dtype)) * deriv
    return Feats(out / math.sqrt(m), sketch / math.sqrt(m)), k_out


@rule("ABRelu")
def _ab_relu(kernel_fn, info, key, feats, k_abs, ctx):
    """``a min(u, 0) + b max(u, 0) = (a + b)/2 u + (b - a)/2 |u|``, and ``E[u |v|] = 0``: the
    linear half is exact (the input features themselves), only ``|u|`` is sampled."""
    k_out = _abstract(kernel_fn, k_abs)
    a, b, m = info.hparams["a"], info.hparams["b"], ctx.n_features
    even, odd = (b - a) / 2, (a + b) / 2
    f = feats.nngp
    k_g, k_r, k_t = split(key, 3)
    u = _mm(f, ctx.normal(k_g, (f.shape[-1], m), f.dtype))
    # The linear half is carried exactly while it is at most n_features wide; wider (a
    # convolution multiplies the width by its taps, so exact halves would grow geometrically
    # with depth) it is sampled too, from the same projection u: E[u u'^T] / m = f f'^T.
    linear = odd * f if f.shape[-1] <= m else odd * u / math.sqrt(m)
    nngp = _cat([linear, even * jnp.abs(u) / math.sqrt(m)])
    if feats.ntk is None:
        return Feats(nngp, None), k_out
    t = feats.ntk  # phi' = (a + b)/2 + (b - a)/2 sign(u)
    sketch = _mm(t, ctx.normal(k_r, (t.shape[-1], m), t.dtype)) * jnp.sign(u)
    linear_t = (odd * t if t.shape[-1] <= m else
                odd * _mm(t, ctx.normal(k_t, (t.shape[-1], m), t.dtype)) / math.sqrt(m))
    return Feats(nngp, _cat([linear_t, even * sketch / math.sqrt(m)])), k_out


@rule("linear")
def _linear(kernel_fn, info, key, feats, k_abs, ctx):
    k_out = _abstract(kernel_fn, k_abs)
    apply = info.hparams["apply_fn"]

    def lin(f):  # apply_fn keeps the channel average: rescale by the change in channel count
        out = apply((), f)
        return out * math.sqrt(f.shape[-1] / out.shape[-1]) if out.shape[-1] else out

    return Feats(lin(feats.nngp), None if feats.ntk is None else lin(feats.ntk)), k_out
