"""The jaxpr walk: each equation of a traced model mapped onto a stax layer's kernel map.

The walk is an abstract interpretation of the model's jaxpr (traced once by `jax.make_jaxpr`):
every value is a `Const`, a `ParamRef` or an `Act` (see `_values`), and every equation that
touches an activation is replaced by the kernel map of the matching `infwidth.stax` layer:

=============================================  ===========================================
jaxpr                                          stax kernel map
=============================================  ===========================================
``dot_general(x, W)`` (+ a bias ``b``)         `Dense` (`Conv` with a 1x1 filter on images)
``conv_general_dilated(x, W)`` (+ ``b``)       `Conv`'s map with any padding, strides,
                                               dilations and (hidden) feature groups
``pad`` of spatial axes with zeros             zero covariance at the padded positions
``slice`` of spatial axes, pieces of one        the covariance at the gathered positions
activation concatenated along a spatial axis   (a wrap-around pad)
a chain of elementwise operations of ``x``     closed-form activation or quadrature
                                               (see `_activations`), or `Scale`
``x1 + x2``, ``x1 - x2``                       `FanInSum` (uncorrelated branches only)
``concatenate`` along the features             `FanInConcat`
``reduce_sum`` over all spatial axes           `GlobalSumPool`
``reduce_window_sum``                          `SumPool`
``reshape`` to ``(N, -1)``                     `Flatten`
a mean over the features of a Gaussian ``x``   a deterministic `Stat` of ``x``'s variances;
and the elementwise maps of such means         ``x - mean`` (mean 0), ``x * s`` (LayerNorm,
                                               RMSNorm: each covariance scaled per input)
``x * scale + bias`` after such a scaling      LayerNorm's learned scale and shift
a Bernoulli mask applied to an activation      `Dropout` in train mode (`_dropout`)
q/k/v projections, softmax(q.k / sqrt(d)), the  `GlobalSelfAttention` with Gaussian logits
weighted values and their output projection    (`_attention`)
=============================================  ===========================================

A parameter's distribution comes from its initializer (`_initializers`). Anything else raises
`UnsupportedOperation` naming the operation and the model's source line.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Literal

from .. import stax
from ..empirical._structured import _bind, _inner
from ..stax import _layout
from ..stax._layer import LayerInfo
from ..stax.conv import conv_general_dilated, spatial_gather
from ..stax.conv import spatial_zero_padding as _spatial_padding
from . import _attention, _dropout
from ._activations import activation_layer, linear_factor
from ._models import leaf_moments
from ._values import (
    CALL_STACK,
    Act,
    Const,
    Mask,
    ParamRef,
    Stat,
    Uniform,
    eqn_line,
    unsupported,
)

_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "remat", "checkpoint")
_ELEMENTWISE = frozenset("""
    add sub mul div neg max min abs sign tanh logistic exp exp2 log log1p expm1 erf erfc erf_inv
    sin cos tan asin acos atan sinh cosh asinh acosh atanh sqrt rsqrt cbrt pow integer_pow square
    select_n gt lt ge le eq ne and or not clamp convert_element_type copy copy_p floor ceil round
    is_finite nextafter atan2 rem reduce_precision
""".split())
_PARAM_LAYOUT = ("reshape", "broadcast_in_dim", "convert_element_type", "squeeze",
                 "expand_dims", "copy", "copy_p", "rev", "transpose")


def _uniform_scalar(value, eqn):
    v = np.asarray(value)
    if v.ndim and v.size and not np.all(v == v.flat[0]):
        raise unsupported(eqn, "combines an activation with a constant that differs across "
                          "positions or features", "Only constants shared by every unit keep the "
                          "units exchangeable; fold such a constant into a parameter.")
    return v.reshape(-1)[0] if v.size else v


def _is_elementwise(jaxpr) -> bool:
    """Whether every equation of ``jaxpr`` (and of the calls inside it) is elementwise."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _CALLS:
            inner, _ = _inner(eqn)
            if inner is None or not _is_elementwise(inner):
                return False
        elif eqn.primitive.name not in _ELEMENTWISE:
            return False
    return True


def _chunked(fn, shape):
    """``fn`` (defined on arrays of the traced ``shape``) on arrays of any shape, elementwise."""
    size = math.prod(shape)

    def on_any_shape(t):
        t = jnp.asarray(t)
        flat = t.reshape(-1)
        pad = (-flat.size) % size
        chunks = jnp.pad(flat, (0, pad)).reshape((-1,) + tuple(shape))
        out = jax.vmap(fn)(chunks).reshape(-1)
        return out[:flat.size].reshape(t.shape)

    return on_any_shape


class Walker:
    """Interprets a closed jaxpr on `Kernel`s. One walker per kernel evaluation."""

    def __init__(self, model, parameterization, memo=None, attention_samples=1024):
        self.model = model
        self.attention_samples = attention_samples
        self.memo = {} if memo is None else memo  # (equation, dtype) -> activation's kernel map
        self.par = parameterization
        self.used = {}
        self.cache = {}

    # ------------------------------------------------------------------------------------------
    def run(self, closed, n_leaves, k_in):
        jaxpr = closed.jaxpr
        ins = [ParamRef(i, tuple(v.aval.shape), tuple(v.aval.shape), self._caxis0(v.aval.shape))
               for i, v in enumerate(jaxpr.invars[:n_leaves])]
        ins.append(Act(k_in, tuple(jaxpr.invars[n_leaves].aval.shape)))
        outs = self.walk(jaxpr, closed.consts, ins)
        kernels = []
        for o, v in zip(outs, jaxpr.outvars):
            if not isinstance(o, Act):
                raise ValueError(f"from_flax: an output of the model (shape {v.aval.shape}) does "
                                 f"not depend on the input, so it has no kernel.")
            if o.per_feature:
                raise ValueError(f"from_flax: the model's output is a LayerNorm output with its "
                                 f"learned {o.per_feature}, whose gradient makes each output "
                                 f"channel's NTK random in the limit; end with a dense layer.")
            kernels.append(self.materialize(o, None).kernel)
        return kernels

    @staticmethod
    def _caxis0(shape):
        if len(shape) == 1:
            return 0
        big = [i for i, s in enumerate(shape) if s != 1]
        return big[0] if len(big) == 1 else None

    def walk(self, jaxpr, consts, ins):
        env = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = Const(c)
        for v, a in zip(jaxpr.invars, ins):
            env[v] = a

        def read(v):
            return Const(v.val) if isinstance(v, Literal) else env[v]

        for eqn in jaxpr.eqns:
            outs = self.step(eqn, [read(v) for v in eqn.invars])
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    # ------------------------------------------------------------------------------------------
    def step(self, eqn, ins):
        name = eqn.primitive.name
        held = [a.per_feature for a in ins if isinstance(a, Act) and a.per_feature]
        acts_in = [v for v in ins if isinstance(v, Act)]
        one_root = len({id(a.base if a.fn is not None else a) for a in acts_in}) == 1
        chain = one_root and not any(isinstance(v, ParamRef) for v in ins) and (
            name in _ELEMENTWISE or name == "custom_jvp_call")  # an activation: see materialize
        if held and not chain and (name not in _CALLS or name == "custom_jvp_call") and (
                name not in ("dot_general", "conv_general_dilated")) and not (
                name == "add" and any(isinstance(v, ParamRef) for v in ins)):
            raise unsupported(eqn, f"uses a LayerNorm output with its learned {held[0]} "
                              f"before a dense/conv layer", "The gradient of a per-feature "
                              "scale or shift correlates with that feature, so only a "
                              "dense/conv layer may read the output (as in pre-LN blocks); "
                              "use use_scale=False, use_bias=False otherwise.")
        acts = [v for v in ins if isinstance(v, Act)]
        roots = {id(a.base if a.fn is not None else a) for a in acts}
        if (name == "custom_jvp_call" and len(roots) == 1
                and not any(isinstance(v, ParamRef) for v in ins)
                and _is_elementwise(_inner(eqn)[0])):
            # kept whole, so that its own derivative rule gives the NTK (relu'(0), softplus...)
            return [self.elementwise(eqn, ins, tuple(eqn.outvars[0].aval.shape))]
        if name in _CALLS:
            uniform = _dropout.uniform_call(eqn, ins)
            if uniform is not None:
                return [uniform]
            inner, consts = _inner(eqn)
            if inner is not None and len(inner.invars) == len(ins):
                CALL_STACK.append(eqn)
                try:
                    return self.walk(inner, consts, ins)
                finally:
                    CALL_STACK.pop()
        if name.startswith("custom_vjp_call"):
            raise unsupported(eqn, "calls a jax.custom_vjp function", "Its derivative is "
                              "user-defined, so its kernel and NTK cannot be read from its "
                              "operations; write it with jnp/lax operations (or custom_jvp).")
        if _dropout.is_random_primitive(name) and not (
                name in _dropout.KEY_OPS and all(isinstance(v, Const) for v in ins)):
            raise unsupported(eqn, "draws random numbers other than a dropout mask",
                              "Stochastic dropout (jax.random.bernoulli, or jax.random.uniform "
                              "compared with a constant) is mapped; other noise has no kernel "
                              "rule. Run the model deterministically otherwise.")
        if any(isinstance(v, (Uniform, Mask)) for v in ins):
            return [_dropout.random_step(self, eqn, ins, tuple(eqn.outvars[0].aval.shape))]
        if any(isinstance(v, Stat) for v in ins):
            return [self.statistic(eqn, ins, tuple(eqn.outvars[0].aval.shape))]
        if any(isinstance(v, _attention.VALUES) for v in ins):
            return [_attention.step(self, eqn, ins, tuple(eqn.outvars[0].aval.shape))]
        if all(isinstance(v, Const) for v in ins):
            with jax.ensure_compile_time_eval():
                out = _bind(eqn.primitive, eqn.params, [v.value for v in ins])
            return [Const(o) for o in (out if eqn.primitive.multiple_results else [out])]
        params = [v for v in ins if isinstance(v, ParamRef)]
        out_shape = tuple(eqn.outvars[0].aval.shape)
        if not acts:
            return [self.param_layout(eqn, ins, params, out_shape)]
        rule = getattr(self, "rule_" + name, None)
        if name in _ELEMENTWISE and not params and len(roots) == 1:
            return [self.elementwise(eqn, ins, out_shape)]
        if rule is None:
            raise unsupported(eqn, "has no infinite-width rule in infwidth",
                              "Supported are dense and convolution layers with their biases, "
                              "elementwise activations, sums of uncorrelated branches, "
                              "concatenation, sum/mean pooling and flattening.")
        return [rule(eqn, ins, acts, params, out_shape)]

    def param_layout(self, eqn, ins, params, out_shape):
        name = eqn.primitive.name
        if len(params) == 1 and name in _PARAM_LAYOUT:
            p = params[0]
            caxis = None
            if name == "broadcast_in_dim" and p.caxis is not None:
                caxis = eqn.params["broadcast_dimensions"][p.caxis]
            elif name in ("convert_element_type", "copy", "copy_p", "rev"):
                caxis = p.caxis
            elif name == "transpose":
                perm = tuple(eqn.params["permutation"])
                caxis = None if p.caxis is None else perm.index(p.caxis)
            elif math.prod(out_shape) == math.prod(p.leaf_shape) == out_shape[-1]:
                caxis = len(out_shape) - 1
            else:
                caxis = self._caxis0(out_shape)
            return ParamRef(p.leaf, out_shape, p.leaf_shape, caxis)
        path = self.model.paths[params[0].leaf] if params else "?"
        raise unsupported(eqn, f"transforms the parameter {path!r} before using it",
                          "from_flax reads a parameter's distribution from its initializer, so "
                          "a parameter must enter as the weight of a dense/conv layer or as a "
                          "bias added to its output.")

    # ------------------------------------------------------------------------------------------
    def call(self, layer, kernel, eqn):
        """``layer.kernel_fn(kernel)``, with the model's source line on errors."""
        try:
            return layer.kernel_fn(kernel)
        except ValueError as e:
            raise ValueError(f"from_flax: at {eqn_line(eqn)} ('{eqn.primitive.name}'): {e}") from e

    def materialize(self, act, eqn):
        """An `Act` whose pending elementwise function has been turned into a kernel map."""
        if act.fn is None:
            return act
        if id(act) in self.cache:
            return self.cache[id(act)]
        root, where = act.base, act.where
        dtype = root.kernel.nngp.dtype
        key = (id(where), str(dtype))
        if key not in self.memo:
            fn = _chunked(act.fn, root.shape)
            c = linear_factor(fn, dtype)
            self.memo[key] = (c, None if c is not None else activation_layer(fn, dtype)[0])
        c, layer = self.memo[key]
        if c is not None:
            k = self.call(stax.Scale(c), root.kernel, where)
            out = Act(k, act.shape, root.leaves, root.fresh if c != 0 else frozenset())
        else:
            if not root.kernel.is_gaussian:
                raise unsupported(where, "applies a nonlinearity to an activation that is not "
                                  "Gaussian in the limit (raw inputs, or two nonlinearities "
                                  "separated by something other than a dense/conv layer)",
                                  "Put a dense or convolution layer before it.")
            k = self.call(layer, root.kernel, where)
            if root.gamma_c2 is not None:
                k = self._scaled_feature_ntk(where, root, layer, k)
            out = Act(k, act.shape, root.leaves)
        self.cache[id(act)] = out
        return out

    def _scaled_feature_ntk(self, eqn, root, layer, k):
        """The NTK after an activation of ``y = gamma * x^ + beta`` (LayerNorm's learned
        scale): gamma_i's gradient ``phi'(y_i) x^_i`` is a function of the feature itself, so
        its share is ``E[phi'(u) phi'(v) u v] / c2`` rather than ``x^ x^' E[phi' phi']``. For
        the ReLU family ``phi'(u) u = phi(u)``, so that share is the activation's NNGP / c2."""
        c2 = root.gamma_c2
        family = LayerInfo.of(getattr(layer, "kernel_fn", None)).family
        if family != "ABRelu" or c2 != c2:
            what = ("a random shift" if c2 != c2 else "a nonlinearity outside the ReLU family")
            raise unsupported(eqn, f"applies {what} to a LayerNorm output with its learned "
                              f"{root.per_feature}", "The scale's gradient is the normalised "
                              "feature itself; its share of the NTK is exact for the ReLU "
                              "family (phi'(u) u = phi(u)) with a constant-initialized shift. "
                              "Use a ReLU-family activation, or use_scale=False.")
        base = root.kernel
        if k.ntk is None:
            return k
        n_hat = base.nngp / c2  # the normalised NNGP: gamma's tangent covariance
        naive = self.call(layer, base.replace(ntk=n_hat), eqn).ntk  # x^ x^' E[phi' phi']
        return k.replace(ntk=k.ntk - naive + k.nngp / c2)

    def elementwise(self, eqn, ins, out_shape):
        acts = [v for v in ins if isinstance(v, Act)]
        roots = {id(a.base if a.fn is not None else a): (a.base if a.fn is not None else a)
                 for a in acts}
        if len(roots) > 1:
            raise unsupported(eqn, "combines two different activations elementwise",
                              "Only sums of uncorrelated branches (residual connections) have a "
                              "kernel rule; products of branches are not mapped.")
        root = next(iter(roots.values()))
        prim, params = eqn.primitive, dict(eqn.params)
        parts = [("act", a.fn) if isinstance(a, Act) else ("const", _uniform_scalar(a.value, eqn))
                 for a in ins]
        in_shapes = [tuple(v.aval.shape) for v in eqn.invars]

        def fn_traced_shape(t):
            vals = []
            for kind, f in parts:
                if kind == "act":
                    vals.append(t if f is None else f(t))
            args, it = [], iter(vals)
            for (kind, f), shape in zip(parts, in_shapes):
                if kind == "act":
                    args.append(next(it))
                else:
                    c = jnp.asarray(f)
                    if jnp.issubdtype(c.dtype, jnp.floating):
                        c = c.astype(jnp.result_type(t))
                    args.append(jnp.broadcast_to(c, shape))
            if prim.name == "convert_element_type" and jnp.issubdtype(
                    params["new_dtype"], jnp.floating):
                return args[0].astype(jnp.result_type(t))
            out = _bind(prim, params, args)
            return out[0] if prim.multiple_results else out

        return Act(None, out_shape, root.leaves, base=root, fn=fn_traced_shape, where=eqn)

    # ------------------------------------------------------------------------------------------
    def _moments(self, p, eqn, role):
        path = self.model.paths[p.leaf]
        m = leaf_moments(self.model, p.leaf, p.leaf_shape)
        if m is None:
            raise unsupported(eqn, f"uses the parameter {path!r} as a {role}, but its initializer "
                              f"is unknown", f"Pass initializers={{{path!r}: ...}} (one of "
                              f"jax.nn.initializers) to from_flax.")
        if m.mean != 0:
            raise unsupported(eqn, f"uses the parameter {path!r} as a {role}, but its initializer "
                              f"has mean {m.mean:g}", "The infinite-width limit here needs "
                              "zero-mean weights and biases.")
        if p.leaf in self.used:
            raise unsupported(eqn, f"uses the parameter {path!r} a second time (it was used at "
                              f"{self.used[p.leaf]})", "Shared weights correlate the layers "
                              "that use them; stax rules assume independent layers.")
        self.used[p.leaf] = eqn_line(eqn)
        return m

    def _affine(self, eqn, x, w, make, out_shape):
        x = self.materialize(x, eqn)

        def rebuild(b_std):
            return self.call(make(b_std), x.kernel, eqn)

        return Act(rebuild(None), out_shape, x.leaves | {w.leaf}, frozenset({w.leaf}), rebuild)

    def rule_dot_general(self, eqn, ins, acts, params, out_shape):
        if len(acts) != 1 or len(params) != 1 or not isinstance(ins[0], Act):
            raise unsupported(eqn, "multiplies two activations, or a parameter by an activation "
                              "from the left", "Dense layers compute x @ W with the activation "
                              "first; products of activations (attention) are not mapped yet.")
        x, w = ins
        if len(w.shape) == 3:  # a multi-head projection (attention)
            return _attention.projection(self, eqn, x, w, out_shape)
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        nd = len(x.shape)
        if (lb or rb or tuple(lc) != (nd - 1,) or len(w.shape) != 2 or w.shape != w.leaf_shape):
            raise unsupported(eqn, f"contracts axes {tuple(lc)} of an activation of shape "
                              f"{x.shape} with a parameter of shape {w.shape}", "A dense layer "
                              "must contract the last (features) axis with a 2-D weight.")
        fan_in, out_dim = w.shape[rc[0]], w.shape[1 - rc[0]]
        m = self._moments(w, eqn, "weight")
        W_std = math.sqrt(m.var * fan_in)
        n_spatial = nd - 2

        def make(b_std):
            if n_spatial >= 2:
                return stax.Conv(out_dim, (1,) * n_spatial, W_std=W_std, b_std=b_std,
                                 parameterization=self.par)
            return stax.Dense(out_dim, W_std=W_std, b_std=b_std, parameterization=self.par)

        return self._affine(eqn, x, w, make, out_shape)

    def rule_conv_general_dilated(self, eqn, ins, acts, params, out_shape):
        if len(acts) != 1 or len(params) != 1 or not isinstance(ins[0], Act):
            raise unsupported(eqn, "convolves with something other than a parameter filter",
                              "A convolution layer takes the activation first and a parameter "
                              "filter second.")
        x, w = ins
        p = eqn.params
        n = len(x.shape) - 2
        dn = p["dimension_numbers"]
        lhs = (0, n + 1) + tuple(range(1, n + 1))
        rhs = (n + 1, n) + tuple(range(n))
        if tuple(dn.lhs_spec) != lhs or tuple(dn.out_spec) != lhs or tuple(dn.rhs_spec) != rhs:
            raise unsupported(eqn, "is a convolution with a layout other than channels-last "
                              "(NHWC, HWIO)", "Flax's convolutions are channels-last; transpose "
                              "the input instead of the convolution.")
        if p["batch_group_count"] != 1:
            raise unsupported(eqn, "is a convolution with batch groups (a filter gradient)",
                              "Only feature groups are mapped.")
        groups = p["feature_group_count"]
        if groups > 1:
            if not x.leaves:
                raise unsupported(eqn, f"convolves the model's input in {groups} feature "
                                  f"groups", "Each group sees its own input channels, whose "
                                  "covariances differ; the kernel of a grouped convolution is "
                                  "mapped for hidden layers, whose channels are exchangeable.")
            if x.shape[-1] == groups:
                raise unsupported(eqn, "is a depthwise convolution (one input channel per "
                                  "group)", "The group size stays 1 as the width grows, so no "
                                  "average over channels makes its output Gaussian; use groups "
                                  "of several channels.")
        filt = tuple(w.shape[:n])
        geometry = (tuple(tuple(q) for q in p["padding"]), tuple(p["lhs_dilation"]),
                    tuple(p["rhs_dilation"]), groups)
        m = self._moments(w, eqn, "filter")
        W_std = math.sqrt(m.var * w.shape[n] * math.prod(filt))

        def make(b_std):
            return conv_general_dilated(w.shape[n + 1], filt, tuple(p["window_strides"]),
                                        *geometry, W_std=W_std, b_std=b_std,
                                        parameterization=self.par)

        return self._affine(eqn, x, w, make, out_shape)

    def rule_pad(self, eqn, ins, acts, params, out_shape):
        """Zero padding of the spatial axes (Flax's 'CAUSAL' convolutions, ``jnp.pad``)."""
        x = self.materialize(acts[0], eqn)
        config = tuple(tuple(c) for c in eqn.params["padding_config"])
        value = ins[1]
        if (not isinstance(ins[0], Act) or not isinstance(value, Const)
                or np.any(np.asarray(value.value) != 0)
                or config[0] != (0, 0, 0) or config[-1] != (0, 0, 0)):
            raise unsupported(eqn, "pads an activation along its batch or feature axis, or with "
                              "a non-zero value", "Zero padding of the spatial axes is mapped.")
        k = self.call(_spatial_padding(config[1:-1]), x.kernel, eqn)
        return Act(k, out_shape, x.leaves)

    def rule_add(self, eqn, ins, acts, params, out_shape, sign=1.0):
        if len(acts) == 1 and len(params) == 1:
            x, b = acts[0], params[0]
            if x.rebuild is None and x.fn is None and x.where == "normalised":
                return self.shift(eqn, x, b, out_shape)
            if x.rebuild is None or x.fn is not None:
                raise unsupported(eqn, f"adds the parameter {self.model.paths[b.leaf]!r} to an "
                                  f"activation that is not the output of a dense/conv layer",
                                  "A bias must directly follow its layer.")
            if (b.caxis != len(x.shape) - 1 or math.prod(b.leaf_shape) != x.shape[-1]):
                raise unsupported(eqn, f"adds the parameter {self.model.paths[b.leaf]!r} of "
                                  f"shape {b.leaf_shape} to an activation of shape {x.shape}",
                                  "A bias holds one value per output feature.")
            m = self._moments(b, eqn, "bias")
            return Act(x.rebuild(math.sqrt(m.var)), out_shape, x.leaves | {b.leaf},
                       x.fresh | {b.leaf})
        if len(acts) == 2 and not params:
            a, c = (self.materialize(v, eqn) for v in acts)
            independent = (a.fresh and not (a.fresh & c.leaves)) or (
                c.fresh and not (c.fresh & a.leaves))
            if not independent:
                raise unsupported(eqn, "adds two activations that are correlated in the limit",
                                  "A sum has a kernel rule when one summand is the fresh output "
                                  "of a dense/conv layer that the other does not depend on (a "
                                  "residual branch).")
            k2 = c.kernel if sign > 0 else c.kernel.scale(-1.0)
            k = self.call(stax.FanInSum(), [a.kernel, k2], eqn)
            return Act(k, out_shape, a.leaves | c.leaves)
        raise unsupported(eqn, "adds values it cannot map", "Supported: a bias after its layer, "
                          "a sum of uncorrelated branches, a constant shift.")

    def rule_sub(self, eqn, ins, acts, params, out_shape):
        if params:
            raise unsupported(eqn, "subtracts a parameter", "Add biases instead.")
        return self.rule_add(eqn, ins, acts, params, out_shape, sign=-1.0)

    def rule_reduce_sum(self, eqn, ins, acts, params, out_shape):
        axes = tuple(sorted(a % len(acts[0].shape) for a in eqn.params["axes"]))
        if axes == (len(acts[0].shape) - 1,) and len(acts[0].shape) > 1:
            return self.feature_sum(eqn, acts[0], out_shape)
        x = self.materialize(acts[0], eqn)
        nd = len(x.shape)
        if 0 in axes:
            raise unsupported(eqn, "sums over the batch axis (BatchNorm in training mode, or "
                              "statistics over the batch)", "Kernels are computed input pair by "
                              "input pair; run BatchNorm with use_running_average=True, or "
                              "describe the network with stax (stax.BatchNorm has the "
                              "batch-statistics kernel; from_flax has no rule for it).")
        if nd - 1 in axes:
            raise unsupported(eqn, "sums over the features axis together with other axes",
                              "Only a sum over the features alone (LayerNorm's statistics) or "
                              "over all spatial axes (global pooling) is mapped.")
        if axes != tuple(range(1, nd - 1)):
            raise unsupported(eqn, f"sums over the spatial axes {axes} only", "Only global "
                              "pooling over all spatial axes is mapped.")
        return Act(self.call(stax.GlobalSumPool(), x.kernel, eqn), out_shape, x.leaves)

    def rule_reduce_window_sum(self, eqn, ins, acts, params, out_shape):
        x = self.materialize(acts[0], eqn)
        p = eqn.params
        win, st = tuple(p["window_dimensions"]), tuple(p["window_strides"])
        pads = tuple(tuple(q) for q in p["padding"])
        ok = (win[0] == win[-1] == 1 and st[0] == st[-1] == 1
              and all(d == 1 for d in p["base_dilation"])
              and all(d == 1 for d in p["window_dilation"]))
        padding = None
        if ok:
            if all(q == (0, 0) for q in pads):
                padding = "VALID"
            elif pads == ((0, 0),) + tuple(tuple(q) for q in lax.padtype_to_pads(
                    x.shape[1:-1], win[1:-1], st[1:-1], "SAME")) + ((0, 0),):
                padding = "SAME"
        if padding is None:
            raise unsupported(eqn, f"pools with window {win}, strides {st}, padding {pads}",
                              "Pooling must act on the spatial axes only, without dilation, "
                              "with 'SAME' or 'VALID' padding.")
        layer = stax.SumPool(win[1:-1], st[1:-1], padding)
        return Act(self.call(layer, x.kernel, eqn), out_shape, x.leaves)

    def rule_reshape(self, eqn, ins, acts, params, out_shape):
        x = self.materialize(acts[0], eqn)
        if out_shape[1:] == x.shape[1:]:
            return Act(x.kernel, out_shape, x.leaves, x.fresh, x.rebuild)
        if len(out_shape) == 2 and len(x.shape) > 2 and out_shape[0] == x.shape[0]:
            return Act(self.call(stax.Flatten(), x.kernel, eqn), out_shape, x.leaves, x.fresh)
        raise unsupported(eqn, f"reshapes an activation from {x.shape} to {out_shape}",
                          "Only flattening to (batch, -1) is mapped.")

    @staticmethod
    def _positions(x):
        """``(root, indices per spatial axis)`` of an activation."""
        if x.posmap is not None:
            return x.posmap
        return x, tuple(np.arange(n) for n in x.shape[1:-1])

    def _gathered(self, eqn, root, idx, out_shape, fresh):
        k = self.call(spatial_gather(idx), root.kernel, eqn)
        return Act(k, out_shape, root.leaves, fresh, posmap=(root, idx))

    def rule_slice(self, eqn, ins, acts, params, out_shape):
        """A slice of the spatial axes: the covariance at the kept positions."""
        x = self.materialize(acts[0], eqn)
        start, limit = eqn.params["start_indices"], eqn.params["limit_indices"]
        strides = eqn.params["strides"] or (1,) * len(start)
        nd = len(x.shape)
        for a in (0, nd - 1):
            if (start[a], limit[a], strides[a]) != (0, x.shape[a], 1):
                raise unsupported(eqn, "slices the batch or feature axis of an activation",
                                  "Slices of the spatial axes are mapped; a subset of the "
                                  "features is not exchangeable with the rest.")
        root, idx = self._positions(x)
        idx = tuple(i[start[1 + a]:limit[1 + a]:strides[1 + a]] for a, i in enumerate(idx))
        return self._gathered(eqn, root, idx, out_shape, x.fresh)

    def rule_concatenate(self, eqn, ins, acts, params, out_shape):
        nd = len(out_shape)
        dim = eqn.params["dimension"] % nd
        if not params and len(acts) == len(ins) and 0 < dim < nd - 1:
            return self._spatial_concatenate(eqn, acts, dim - 1, out_shape)
        if params or len(acts) != len(ins) or dim != nd - 1:
            raise unsupported(eqn, "concatenates along an axis other than the features, or "
                              "with non-activations", "Only concatenation of activations along "
                              "the last axis is mapped.")
        xs = [self.materialize(a, eqn) for a in acts]
        k = self.call(stax.FanInConcat(axis=-1), [a.kernel for a in xs], eqn)
        return Act(k, out_shape, frozenset().union(*(a.leaves for a in xs)))

    def _spatial_concatenate(self, eqn, acts, axis, out_shape):
        """Pieces of one activation joined along spatial axis ``axis`` (a wrap-around pad)."""
        pieces = [self._positions(self.materialize(a, eqn)) for a in acts]
        root = pieces[0][0]
        same = all(r is root for r, _ in pieces) and all(
            len(i) == len(pieces[0][1]) and all(np.array_equal(i[a], pieces[0][1][a])
                                                for a in range(len(i)) if a != axis)
            for _, i in pieces)
        if not same:
            raise unsupported(eqn, "concatenates different activations along a spatial axis",
                              "Pieces of one activation (slices, as in a wrap-around pad) may "
                              "be joined along a spatial axis; different activations only "
                              "along the features.")
        idx = tuple(np.concatenate([i[a] for _, i in pieces]) if a == axis else
                    pieces[0][1][a] for a in range(len(pieces[0][1])))
        return self._gathered(eqn, root, idx, out_shape, root.fresh)

    # ------------------------------------------------------------------------------------------
    # LayerNorm / RMSNorm: means over the features of a Gaussian activation are deterministic
    # in the limit (a function of its variance per input and position), so normalising by them
    # scales each covariance entry by the two inputs' factors.
    _GAUSS_HERMITE = np.polynomial.hermite_e.hermegauss(64)

    def feature_sum(self, eqn, a, out_shape):
        """``sum_i f(x_i)`` over the features of ``x`` (Gaussian): ``n E[f(x)]``, with
        ``f`` the elementwise function pending on ``x`` (the identity: 0)."""
        root, f = (a.base, a.fn) if a.fn is not None else (a, None)
        if root.kernel is None or not root.kernel.is_gaussian or root.fn is not None:
            raise unsupported(eqn, "averages over the features of an activation that is not "
                              "Gaussian in the limit (LayerNorm after a nonlinearity)",
                              "The statistic is mapped for the Gaussian output of a dense/conv "
                              "layer (pre-LN blocks, Dense -> LayerNorm -> activation).")
        n = a.shape[-1]
        if f is None:
            def fn(var):
                return jnp.zeros_like(var)
        else:
            nodes, weights = self._GAUSS_HERMITE
            f_any = _chunked(f, root.shape)

            def fn(var):
                lead = (1,) * var.ndim  # explicit ranks (jax_numpy_rank_promotion='raise')
                x = jnp.asarray(nodes, var.dtype).reshape(lead + (-1,))
                w = jnp.asarray(weights / weights.sum(), var.dtype).reshape(lead + (-1,))
                t = jnp.sqrt(jnp.maximum(var, 0))[..., None] * x
                return n * jnp.sum(f_any(t) * w, -1)
        return Stat(fn, root, out_shape)

    def statistic(self, eqn, ins, out_shape):
        name = eqn.primitive.name
        stats = [v for v in ins if isinstance(v, Stat)]
        roots = {id(v.root) for v in stats}
        acts = [v for v in ins if isinstance(v, Act)]
        params = [v for v in ins if isinstance(v, ParamRef)]
        if len(roots) > 1:
            raise unsupported(eqn, "combines statistics of two different activations",
                              "Only the statistics of one activation (LayerNorm's mean and "
                              "variance) are mapped.")
        stat = stats[0]
        if acts:
            return self.normalise(eqn, ins, acts, stat, out_shape)
        if params:
            if name != "mul" or len(params) != 1 or len(stats) != 1 or stat.scale is not None:
                raise unsupported(eqn, "combines a feature statistic with a parameter",
                                  "Only LayerNorm's learned scale (a per-feature parameter "
                                  "multiplied into the normalisation) is mapped.")
            return Stat(stat.fn, stat.root, out_shape, params[0])
        if name not in _ELEMENTWISE and name not in _PARAM_LAYOUT:
            raise unsupported(eqn, "applies a non-elementwise operation to a feature statistic",
                              "Statistics may be combined elementwise (as LayerNorm's mean and "
                              "variance are).")
        if any(v.scale is not None for v in stats):
            raise unsupported(eqn, "transforms a statistic after its learned scale",
                              "Multiply the scale in last, as LayerNorm does.")
        parts = [("stat", v.fn) if isinstance(v, Stat) else ("const", _uniform_scalar(v.value,
                                                                                      eqn))
                 for v in ins]
        prim, p = eqn.primitive, dict(eqn.params)

        def fn(var):
            args = [f(var) if kind == "stat" else jnp.asarray(f, var.dtype)
                    for kind, f in parts]
            if name in _PARAM_LAYOUT:  # layout or dtype of a per-input scalar: nothing to do
                return args[0]
            out = _bind(prim, p, [jnp.broadcast_to(a, var.shape) for a in args])
            return out[0] if prim.multiple_results else out

        return Stat(fn, stat.root, out_shape)

    def normalise(self, eqn, ins, acts, stat, out_shape):
        name = eqn.primitive.name
        x = acts[0]
        if x.fn is not None and x.base is stat.root:
            raise unsupported(eqn, "normalises an activation that is not Gaussian in the limit "
                              "(LayerNorm after a nonlinearity)", "The statistics are mapped "
                              "for the Gaussian output of a dense/conv layer (pre-LN blocks, "
                              "Dense -> LayerNorm -> activation).")
        if len(acts) != 1 or x is not stat.root or len(ins) != 2:
            raise unsupported(eqn, "combines an activation with a statistic of another one",
                              "An activation may be centred or scaled by its own statistics "
                              "only.")
        if name == "sub" and isinstance(ins[0], Act) and stat.scale is None:
            with jax.ensure_compile_time_eval():
                zero = bool(np.all(np.asarray(stat.fn(jnp.asarray([0.5, 1.0, 2.0]))) == 0))
            if not zero:
                raise unsupported(eqn, "subtracts a non-zero statistic from an activation",
                                  "A Gaussian activation's mean over its features is 0 in the "
                                  "limit; other shifts are not mapped.")
            return x
        if name != "mul":
            raise unsupported(eqn, f"combines an activation with a statistic by '{name}'",
                              "Centring (x - mean) and scaling (x * s) are mapped.")
        k = self.materialize(x, eqn).kernel
        var1 = _layout.variances(k.cov1, k)
        var2 = var1 if k.cov2 is None else _layout.variances(k.cov2, k)
        s1, s2 = stat.fn(var1), stat.fn(var2)
        ds = k.diagonal_spatial

        def pair(c, a, b, lead):
            return None if c is None else (c * _layout.expand(a, 1, lead, ds)
                                           * _layout.expand(b, 2, lead, ds))

        lead = 1 if k.diagonal_batch else 2
        nngp, ntk = pair(k.nngp, s1, s2, 2), pair(k.ntk, s1, s2, 2)
        cov1 = pair(k.cov1, s1, s1, lead)
        cov2 = pair(k.cov2, s2, s2, lead)
        if stat.scale is not None:
            g = stat.scale
            path = self.model.paths[g.leaf]
            m = leaf_moments(self.model, g.leaf, g.leaf_shape)
            if m is None or m.var != 0 or g.caxis != len(out_shape) - 1:
                raise unsupported(eqn, f"scales a normalised activation by {path!r}, which is "
                                  f"not a per-feature parameter with a constant initializer",
                                  "LayerNorm's scale (initialised to ones) is mapped.")
            if self.par != "standard":
                raise unsupported(eqn, f"trains LayerNorm's scale {path!r} under "
                                  f"parameterization={self.par!r}", "Only the standard "
                                  "parameterization of LayerNorm's scale and bias is mapped.")
            self.used[g.leaf] = eqn_line(eqn)
            c2 = float(m.mean) ** 2
            # d y_i / d gamma_i = x^_i: the scale's gradient adds the normalised NNGP
            ntk = None if ntk is None else c2 * ntk + nngp
            nngp, cov1 = c2 * nngp, c2 * cov1
            cov2 = None if cov2 is None else c2 * cov2
        out = k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)
        leaves = x.leaves | ({stat.scale.leaf} if stat.scale is not None else set())
        held = None if stat.scale is None else f"scale {self.model.paths[stat.scale.leaf]!r}"
        return Act(out, out_shape, frozenset(leaves), where="normalised", per_feature=held,
                   gamma_c2=None if stat.scale is None else c2)

    def shift(self, eqn, x, b, out_shape):
        """LayerNorm's learned shift: a per-feature parameter added to a normalised
        activation (standard parameterization: its gradient adds 1 to the NTK)."""
        path = self.model.paths[b.leaf]
        if b.caxis != len(x.shape) - 1 or math.prod(b.leaf_shape) != x.shape[-1]:
            raise unsupported(eqn, f"adds the parameter {path!r} of shape {b.leaf_shape} to an "
                              f"activation of shape {x.shape}", "A shift holds one value per "
                              "feature.")
        if self.par != "standard":
            raise unsupported(eqn, f"trains LayerNorm's bias {path!r} under "
                              f"parameterization={self.par!r}", "Only the standard "
                              "parameterization of LayerNorm's scale and bias is mapped.")
        m = self._moments(b, eqn, "bias")
        k = x.kernel
        out = k.replace(nngp=k.nngp + m.var, ntk=None if k.ntk is None else k.ntk + 1.0,
                        cov1=k.cov1 + m.var, cov2=None if k.cov2 is None else k.cov2 + m.var)
        gamma_c2 = x.gamma_c2 if (x.gamma_c2 is None or m.var == 0) else float("nan")
        held = f"shift {path!r}" if x.per_feature is None else f"{x.per_feature} and shift"
        return Act(out, out_shape, x.leaves | {b.leaf}, x.fresh | {b.leaf}, per_feature=held,
                   gamma_c2=gamma_c2)
