"""Dot-product self-attention in a traced model (Flax's ``MultiHeadDotProductAttention``, or
the same computation written with ``jnp.einsum``), mapped onto `stax.GlobalSelfAttention`
with 1/sqrt(head width) logits (``linear_scaling=False``, softmax).

The walk follows the computation with four value types:

* `Proj`: a multi-head projection ``x @ W`` of an activation, ``W`` of shape ``(D, H, d)``
  (``DenseGeneral``), with its bias and a constant factor (Flax divides the queries by
  ``sqrt(d)``);
* `Logits`: the dot products of a query and a key projection over the head width, per head;
* `Weights`: any computation on the logits and constants (Flax's numerically stable softmax:
  max, subtract, exp, sum, divide), kept as a function of the logits and checked, when the
  weights are used, to be a softmax over the keys, possibly of scaled logits and with a fixed
  set of query-key pairs masked out (a causal mask, passed to the Monte Carlo rule);
* `Mixed`: the weights contracted with a value projection over the keys, with its axes
  named (``n`` batch, ``t`` query position, ``h`` head, ``d`` head width) through transposes.

Logits scaled other than by ``1 / sqrt(d)`` (``c / sqrt(d)``: e.g. the ``1 / d`` of muP) are
read as a temperature ``c`` at the model's head width, folded into ``W_query_std``: the kernel is
that of the model's own logit scale (with ``1 / d`` the logits vanish as ``d`` grows further).
The output projection, ``W_o`` of shape ``(H, d, D_out)`` contracting ``h`` and ``d``, closes
the pattern: its kernel is `GlobalSelfAttention`'s Gaussian-logit rule (Hron et al. 2020,
arXiv:2006.10540) on the kernel of the common input, with ``W_query_std``, ``W_key_std``
from the query and key initializers. Its NTK weighs each parameter's share as the model's
parameterization does (`AttentionShares`): under 'standard' the share of a weight of fan-in
``n`` and ``W_std`` is ``n / W_std**2`` times its share under 'ntk', and Flax's zero-initialized
query and value biases add ``OV**2 W_key_std**2 E[X(K)]`` and ``W_out_std**2`` (the key bias
shifts a whole row of logits, which a softmax ignores).

Which widths go to infinity: the head width ``d`` and the number of heads ``H`` (the output
is Gaussian only as ``H`` grows, Hron et al.; the kernel itself is the expectation over the
Gaussian logits at any ``H``). The kernel is a Monte Carlo average over
``attention_samples`` draws of the logits (`from_flax`'s argument), with fixed draws.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import stax
from ..empirical._structured import _bind
from ..parameterization import affine_rule
from ._values import Act, Const, ParamRef, shared_scalar, unsupported


@dataclasses.dataclass(frozen=True, eq=False)
class Proj:
    x: Act
    w: ParamRef
    shape: tuple
    names: tuple  # of each axis: 'n' batch, 't' position, 'h' head, 'd' head width, '1'
    bias: ParamRef | None = None
    scale: float = 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class Logits:
    q: Proj
    k: Proj
    shape: tuple
    names: tuple  # 'n', 'h', 'q' query position, 'k' key position, '1'
    dtype: object = np.float32


@dataclasses.dataclass(frozen=True, eq=False)
class Weights:
    logits: Logits
    fn: Callable  # logits -> this value
    shape: tuple
    names: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Mixed:
    weights: Weights
    v: Proj
    shape: tuple
    names: tuple  # 'n', 't', 'h', 'd', '1'


VALUES = (Proj, Logits, Weights, Mixed)


@dataclasses.dataclass(frozen=True)
class AttentionShares:
    """The NTK term of a pair (`attention_gaussian_logits.ntk_parameterization_terms`'s
    signature) with each parameter's share as the model trains it, for a layer built with
    ``W_value_std = W_out_std = 1`` (so the terms are not yet multiplied by ``OV**2``): fan-ins
    ``fan_qkv = D`` and ``fan_o = H d``, the variances ``s_*`` (``W_std**2``; ``s_q`` and ``s_k``
    times the logits' temperature squared), whether the query and value projections have
    (trained) biases."""

    standard: bool
    fan_qkv: int
    fan_o: int
    s_q: float
    s_k: float
    s_v: float
    s_o: float
    bias_q: bool
    bias_v: bool

    def __call__(self, nngp, values, x_k, x_kt, cab, tg, qk2):
        ov2 = self.s_v * self.s_o
        through_inputs = values - 2 * nngp + qk2 * (tg * x_k + cab * (x_kt - x_k))
        if not self.standard:
            return ov2 * (through_inputs + 2 * nngp + 2 * qk2 * cab * x_k)
        weights = ((self.fan_qkv * self.s_o + self.fan_o * self.s_v) * nngp
                   + ov2 * self.fan_qkv * (self.s_k + self.s_q) * cab * x_k)
        biases = (ov2 * self.s_k * x_k if self.bias_q else 0.0) + (
            self.s_o if self.bias_v else 0.0)
        return ov2 * through_inputs + weights + biases


def _no_rule(eqn, what):
    return unsupported(eqn, what, "Dot-product self-attention is mapped as Flax's "
                       "MultiHeadDotProductAttention computes it: query, key and value "
                       "projections of one activation to (..., heads, head width), logits "
                       "q.k / sqrt(head width) per head, a softmax over the keys, the weighted "
                       "sum of the values and an output projection over (heads, head width).")


def projection(walker, eqn, x, w, out_shape):
    """``dot_general(x, W)`` with a 3-D parameter ``W (D, H, d)``: a `Proj`."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    nd = len(x.shape)
    if lb or rb or tuple(lc) != (nd - 1,) or tuple(rc) != (0,) or w.shape != w.leaf_shape:
        raise _no_rule(eqn, f"contracts an activation of shape {x.shape} with a parameter of "
                       f"shape {w.shape}")
    if nd != 3:
        raise _no_rule(eqn, f"projects to heads an activation of shape {x.shape}, not a batch "
                       f"of sequences (N, T, D)")
    return Proj(walker.materialize(x, eqn), w, out_shape, ("n", "t", "h", "d"))


def _layout_names(eqn, a, out_shape):
    """The axis names after a layout operation on one value, or None."""
    name, names, shape = eqn.primitive.name, a.names, a.shape
    if name == "transpose":
        return tuple(names[i] for i in eqn.params["permutation"])
    if name in ("reshape", "squeeze", "expand_dims"):
        kept = [(n, d) for n, d in zip(names, shape) if d != 1]
        if [d for _, d in kept] != [d for d in out_shape if d != 1]:
            return None
        it = iter(kept)
        return tuple("1" if d == 1 else next(it)[0] for d in out_shape)
    if name in ("convert_element_type", "copy", "copy_p", "stop_gradient",
                "reduce_precision"):
        return names
    return None


def _weights_names(eqn, ins, out_shape):
    """Axis names of an operation of the logits (elementwise, reductions, broadcasts)."""
    name = eqn.primitive.name
    ours = [v for v in ins if isinstance(v, (Logits, Weights))]
    if name.startswith("reduce_") and len(ours) == 1:
        axes = {a % len(ours[0].names) for a in eqn.params["axes"]}
        return tuple(n for i, n in enumerate(ours[0].names) if i not in axes)
    if name == "broadcast_in_dim" and len(ours) == 1:
        dims = tuple(eqn.params["broadcast_dimensions"])
        out = ["1" if d == 1 else None for d in out_shape]
        for i, j in enumerate(dims):
            if ours[0].shape[i] == out_shape[j]:
                out[j] = ours[0].names[i]
        return None if None in out else tuple(out)
    layout = _layout_names(eqn, ours[0], out_shape) if len(ours) == 1 else None
    if layout is not None:
        return layout
    out = []
    for i, d in enumerate(out_shape):
        found = [v.names[i] for v in ours if len(v.shape) == len(out_shape)
                 and v.shape[i] == d and v.names[i] != "1"]
        out.append(found[0] if found else "1" if d == 1 else None)
    return None if None in out else tuple(out)


def step(walker, eqn, ins, out_shape):
    """One equation with a `Proj`, `Logits`, `Weights` or `Mixed` among its inputs."""
    name = eqn.primitive.name
    ours = [v for v in ins if isinstance(v, VALUES)]
    params = [v for v in ins if isinstance(v, ParamRef)]
    consts = [v for v in ins if isinstance(v, Const)]
    if any(isinstance(v, Act) for v in ins):
        raise _no_rule(eqn, "combines an attention intermediate with another activation")
    a = ours[0]
    if isinstance(a, (Proj, Mixed)) and len(ours) == 1 and not params and len(ins) == 1:
        names = _layout_names(eqn, a, out_shape)
        if names is not None:
            return dataclasses.replace(a, shape=out_shape, names=names)
        if isinstance(a, Proj) and name == "reshape" and _merges_heads(a, out_shape):
            return _as_dense(walker, eqn, a, out_shape)
    if isinstance(a, Proj) and len(ours) == 1:
        if name == "add" and len(params) == 1 and a.bias is None and a.scale == 1.0:
            b = params[0]
            heads = tuple(d for n, d in zip(a.names, a.shape) if n in ("h", "d"))
            if tuple(d for d in b.leaf_shape if d != 1) != tuple(d for d in heads if d != 1):
                raise _no_rule(eqn, f"adds the parameter {walker.model.paths[b.leaf]!r} of "
                               f"shape {b.leaf_shape} to a projection of shape {a.shape}")
            return dataclasses.replace(a, bias=b)
        if name in ("mul", "div") and len(consts) == 1 and (name == "mul" or ins[0] is a):
            c = shared_scalar(consts[0])
            if c is not None and c != 0:
                return dataclasses.replace(a, scale=a.scale * c if name == "mul" else a.scale / c)
    if name == "dot_general" and len(ours) == 2:
        return _contract(eqn, ins, out_shape)
    if isinstance(a, Mixed) and name == "dot_general" and len(params) == 1:
        return output_projection(walker, eqn, a, params[0], out_shape)
    if all(isinstance(v, (Logits, Weights)) for v in ours) and not params:
        roots = {id(v if isinstance(v, Logits) else v.logits) for v in ours}
        names = _weights_names(eqn, ins, out_shape)
        if len(roots) == 1 and names is not None:
            return _weights(eqn, ins, out_shape, names)
    raise _no_rule(eqn, "uses an attention intermediate in a way that has no kernel rule")


def _merges_heads(proj, out_shape) -> bool:
    """Whether a reshape of a projection ``(n, t, h, d)`` merges ``h`` and ``d`` into one
    feature axis: an einsum-style dense layer (``DenseGeneral(features=(h, d))``)."""
    return (proj.names == ("n", "t", "h", "d") and proj.scale == 1.0
            and tuple(out_shape) == proj.shape[:2] + (proj.shape[2] * proj.shape[3],))


def _as_dense(walker, eqn, proj, out_shape):
    """The projection as the `Dense` layer it is once its head axes are merged."""
    x, w = proj.x, proj.w
    m = walker._moments(w, eqn, "weight")
    W_std = math.sqrt(m.var * x.shape[-1])
    b_std = None
    if proj.bias is not None:
        b_std = math.sqrt(walker._moments(proj.bias, eqn, "bias").var)
    layer = stax.Dense(out_shape[-1], W_std=W_std, b_std=b_std, parameterization=walker.par)
    leaves = x.leaves | {w.leaf} | ({proj.bias.leaf} if proj.bias is not None else set())
    return Act(walker.call(layer, x.kernel, eqn), out_shape, frozenset(leaves),
               frozenset(leaves - x.leaves))


def _weights(eqn, ins, out_shape, names):
    """Any operation of the logits (and constants): a function of the logits."""
    logits = next(v if isinstance(v, Logits) else v.logits for v in ins
                  if isinstance(v, (Logits, Weights)))
    parts = [v.fn if isinstance(v, Weights) else None if isinstance(v, Logits) else v.value
             for v in ins]
    kinds = [type(v) for v in ins]
    prim, params = eqn.primitive, dict(eqn.params)

    def fn(L):
        args = [f(L) if kind is Weights else L if kind is Logits else jnp.asarray(f)
                for f, kind in zip(parts, kinds)]
        out = _bind(prim, params, args)
        return out[0] if prim.multiple_results else out

    return Weights(logits, fn, out_shape, names)


def _split(names, contract, batch, rename):
    """(contracted names, batch names, free names renamed) of one dot_general operand."""
    c = tuple(names[i] for i in contract)
    b = tuple(names[i] for i in batch)
    f = tuple(rename.get(n, n) for i, n in enumerate(names) if i not in contract + batch)
    return c, b, f


def _size(value, name) -> int:
    return value.shape[value.names.index(name)]


def _only(names, name) -> bool:
    """Whether ``names`` is ``name`` and size-1 axes."""
    return sorted(names) == sorted([name] + ["1"] * (len(names) - 1))


def _contract(eqn, ins, out_shape):
    (lc, rc), (lb, rb) = (tuple(map(tuple, d)) for d in eqn.params["dimension_numbers"])
    lhs, rhs = ins
    if isinstance(lhs, Proj) and isinstance(rhs, Proj):  # queries . keys over the head width
        cq, bq, fq = _split(lhs.names, lc, lb, {"t": "q"})
        ck, bk, fk = _split(rhs.names, rc, rb, {"t": "k"})
        if (cq == ck == ("d",) and bq == bk and {"n", "h"} <= set(bq)
                and _only(fq, "q") and _only(fk, "k")):
            return Logits(lhs, rhs, out_shape, bq + fq + fk, eqn.outvars[0].aval.dtype)
        raise _no_rule(eqn, "multiplies two projections other than as queries . keys over the "
                       "head width, per head")
    if isinstance(lhs, Logits):
        lhs = Weights(lhs, lambda L: L, lhs.shape, lhs.names)
    if isinstance(rhs, Logits):
        rhs = Weights(rhs, lambda L: L, rhs.shape, rhs.names)
    for v, w, vc, wc, vb, wb in ((lhs, rhs, lc, rc, lb, rb), (rhs, lhs, rc, lc, rb, lb)):
        if isinstance(v, Proj) and isinstance(w, Weights):  # weights . values over the keys
            c_v, b_v, f_v = _split(v.names, vc, vb, {})
            c_w, b_w, f_w = _split(w.names, wc, wb, {"q": "t"})
            if (c_v == ("t",) and c_w == ("k",) and b_v == b_w and {"n", "h"} <= set(b_v)
                    and _only(f_v, "d") and _only(f_w, "t")):
                free = f_v + f_w if v is lhs else f_w + f_v
                return Mixed(w, v, out_shape, b_v + free)
    raise _no_rule(eqn, "contracts attention intermediates other than queries . keys and "
                   "weights . values")


def _softmax_scale(eqn, weights):
    """The attention weights must be ``softmax(c * logits)`` over the keys, possibly with a
    fixed set of query-key pairs masked out (a causal mask: weight exactly 0, the same for
    every input and head): returns ``(c, mask or None)``; ``c`` is a scaling of the logits
    applied after the dot products (``q.k / sqrt(d)`` written on the logits)."""
    logits = weights.logits
    with jax.ensure_compile_time_eval():
        probe = np.random.default_rng(0).normal(size=logits.shape)
        got = np.asarray(weights.fn(jnp.asarray(probe, logits.dtype)), np.float64)

    def squeezed(x, names):  # drop the size-1 axes, order the rest as n, h, q, k
        keep = [i for i, n in enumerate(names) if n != "1"]
        kept = [names[i] for i in keep]
        x = x.reshape([x.shape[i] for i in keep])
        return np.transpose(x, [kept.index(n) for n in ("n", "h", "q", "k")])

    c = mask = None
    if sorted(n for n in weights.names if n != "1") == ["h", "k", "n", "q"]:
        probe, got = squeezed(probe, logits.names), squeezed(got, weights.names)
    if got.shape == probe.shape and got.ndim == 4 and np.all(got >= 0):
        mask = got[0, 0] == 0
        if np.all((got == 0) == mask) and not np.any(np.all(mask, -1)):
            keep = ~mask
            counts = keep.sum(-1, keepdims=True)
            log = np.where(keep, np.log(np.where(keep, got, 1.0)), 0.0)
            dl = np.where(keep, log - log.sum(-1, keepdims=True) / counts, 0.0)
            dp = np.where(keep, probe - np.where(keep, probe, 0).sum(-1, keepdims=True) / counts,
                          0.0)
            c = float(np.sum(dl * dp) / max(np.sum(dp * dp), 1e-300))
            z = np.where(keep, c * probe, -np.inf)
            expected = np.exp(z - z.max(-1, keepdims=True))
            expected /= expected.sum(-1, keepdims=True)
            # a structural check: float32 parts of a float64 model (Flax's constants) are fine
            if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
                c = None
    if c is None or c <= 0:
        raise unsupported(eqn, "mixes the values with attention weights that are not a softmax "
                          "of the logits over the keys", "Softmax attention (Flax's default, "
                          "or with a fixed mask such as a causal one; no padding masks that "
                          "differ between inputs, no bias terms on the logits) is mapped.")
    return c, (mask if mask.any() else None)


def output_projection(walker, eqn, mixed, w_o, out_shape):
    """``dot_general(mixed, W_o)`` over ('h', 'd'): the whole attention layer."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    names = tuple(mixed.names[i] for i in lc)
    free = tuple(a for i, a in enumerate(mixed.names) if i not in lc)
    if lb or rb or names != ("h", "d") or tuple(rc) != (0, 1) or free != ("n", "t") or len(
            w_o.shape) != 3:
        raise _no_rule(eqn, "projects the attention output other than over (heads, head "
                       "width) of a (batch, position, heads, head width) array")
    weights, v = mixed.weights, mixed.v
    q, k = weights.logits.q, weights.logits.k
    if not (q.x is k.x is v.x):
        raise _no_rule(eqn, "attends between different activations (cross-attention)")
    c, mask = _softmax_scale(eqn, weights)
    scale = q.scale * k.scale * c
    n_heads, d_key, d_val = _size(q, "h"), _size(q, "d"), _size(v, "d")
    tau2 = (scale * math.sqrt(d_key)) ** 2  # the logits' temperature**2 (1 for 1/sqrt(d))
    if abs(tau2 - 1) < 1e-6:  # 1/sqrt(d), read through float32 parts of the model
        tau2 = 1.0
    x = q.x
    fan = x.shape[-1]
    var = {}
    for role, p in (("query", q.w), ("key", k.w), ("value", v.w), ("output", w_o)):
        var[role] = walker._moments(p, eqn, f"{role} weight").var
    biases = {}
    for role, proj in (("query", q), ("key", k), ("value", v)):
        if proj.bias is not None:
            m = walker._moments(proj.bias, eqn, f"{role} bias")
            if m.var != 0:
                raise unsupported(eqn, f"adds a random {role} bias "
                                  f"{walker.model.paths[proj.bias.leaf]!r}", "Attention's "
                                  "query/key/value biases are mapped with a zero initializer "
                                  "(Flax's default).")
            biases[role] = True
    s_q, s_k = var["query"] * fan, var["key"] * fan
    s_v, s_o = var["value"] * fan, var["output"] * n_heads * d_val
    standard = walker.par == "standard"
    shares = AttentionShares(standard, fan, n_heads * d_val, tau2 * s_q, tau2 * s_k, s_v, s_o,
                             "query" in biases and standard, "value" in biases and standard)
    layer = stax.GlobalSelfAttention(
        w_o.shape[-1], d_key, d_val, n_heads, linear_scaling=False, W_key_std=math.sqrt(s_k),
        W_query_std=math.sqrt(tau2 * s_q), W_value_std=1.0, W_out_std=1.0, b_std=None,
        n_samples=walker.attention_samples, _ntk_terms=shares,
        _logit_mask=None if mask is None else tuple(map(tuple, mask.tolist())))
    base = walker.call(layer, x.kernel, eqn)
    ov2 = s_v * s_o
    base = base.replace(nngp=ov2 * base.nngp, cov1=ov2 * base.cov1,
                        cov2=None if base.cov2 is None else ov2 * base.cov2)

    def rebuild(b_std):
        if b_std is None:
            return base
        ntk_bias = affine_rule(walker.par, 1.0, b_std, (1, 1), "from_flax").bias_ntk()
        return base.replace(nngp=base.nngp + b_std**2,
                            ntk=None if base.ntk is None else base.ntk + ntk_bias,
                            cov1=base.cov1 + b_std**2,
                            cov2=None if base.cov2 is None else base.cov2 + b_std**2)

    leaves = x.leaves | {p.leaf for p in (q.w, k.w, v.w, w_o)} | {
        p.bias.leaf for p in (q, k, v) if p.bias is not None}
    return Act(base, out_shape, frozenset(leaves), frozenset({w_o.leaf}), rebuild)
