"""`from_flax`: the infinite-width NNGP and NTK of a Flax model (linen or nnx) or of a plain JAX
function ``f(params, x)``, read from the model itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..parameterization import check_has_kernel, resolve_parameterization
from ..stax._layer import Layer, make_layer
from ._models import as_model, linen_init
from ._values import python_branches_explained
from ._walk import Walker


def _trace(fn, specs, x_spec):
    with python_branches_explained():
        return jax.make_jaxpr(fn, return_shape=True)(specs, x_spec)


def from_flax(module, example_input, *, parameterization: str = "standard", params=None,
              initializers=None, attention_samples: int = 1024, **apply_kwargs) -> Layer:
    """The stax triple ``(init_fn, apply_fn, kernel_fn)`` of a Flax model, with the exact
    infinite-width NNGP and NTK of that model as ``kernel_fn``.

    The model is traced once with `jax.make_jaxpr` (no source parsing) and each of its
    operations is mapped onto the kernel map of an `infwidth.stax` layer: dense layers
    (``linen.Dense``, ``nnx.Linear``, ``x @ W``), convolutions (any spatial rank, strides,
    'SAME'/'VALID'/explicit/'CAUSAL' padding, filter dilation, transposed convolutions, feature
    groups of hidden layers), biases, elementwise activations (closed forms for ReLU-like, erf,
    sin, exp, sign and exact GELU, recognised from the traced function; Gauss-Hermite quadrature
    of the traced function for anything else: tanh, tanh-GELU, SiLU, softplus, ...), residual
    sums, concatenation, sum/average pooling, global mean pooling, flattening, and LayerNorm /
    RMSNorm of a dense/conv output (the mean and variance over the features are deterministic
    in the limit, so the normalisation scales each covariance entry as `stax.LayerNorm` does;
    Flax's learned scale and shift when a dense/conv layer or a ReLU-family activation reads
    them next), softmax
    self-attention with ``1/sqrt(head width)`` logits (``MultiHeadDotProductAttention``,
    ``nnx.MultiHeadAttention`` or the same with ``jnp.einsum``: `stax.GlobalSelfAttention`'s
    Monte Carlo rule over the Gaussian logits, heads and head width going to infinity), and
    stochastic
    dropout of hidden activations (``deterministic=False`` with ``rngs={'dropout': key}``,
    ``nnx.Dropout``: train-mode `stax.Dropout`, the expectation over masks). An operation
    without a rule raises `UnsupportedOperation` naming it and the model's source line.

    **Which axes go to infinity.** The hidden features (the last axis of every activation, the
    output dimension of every dense/conv layer) go to infinity; the input dimension, the spatial
    sizes, the batch and the readout width stay the model's. Outputs are independent across
    their channels in the limit, so kernels are per output channel: ``(N1, N2)``, times spatial
    axes for convolutional outputs.

    **How the initializers map onto W_std / b_std.** Each weight's variance ``var`` is read from
    its initializer (`jax.nn.initializers`: lecun/he/glorot/xavier normal, uniform and truncated
    normal, ``normal``, ``truncated_normal``, ``zeros``, ...; see `initializer_moments`) for the
    weight's own shape, and ``W_std = sqrt(var * fan_in)`` with ``fan_in`` the contracted size
    (``in_features``, times the filter size for a convolution); ``b_std = sqrt(var_b)``, so a
    zero-initialized bias is ``b_std=0.`` (which still trains) and ``use_bias=False`` is
    ``b_std=None``. LeCun initializers give ``W_std=1``, He ``W_std=sqrt(2)``; Glorot's
    ``2 / (fan_in + fan_out)`` depends on the ratio of the model's widths, which is kept.

    **Parameterization.** ``'standard'`` (default) is how Flax builds layers: the kernels of
    ``stax.Dense(..., parameterization='standard')``, whose NTK grows with the fan-in. ``'ntk'``
    gives the kernels of the same model rewritten in the NTK parameterization
    (``W = W_std / sqrt(fan_in) * w``, ``w ~ N(0, 1)``): the same NNGP and a width-independent
    NTK (``apply_fn`` stays the Flax model). ``'mup'`` has no kernel limit; ``kernel_fn`` raises.

    Args:
      module: a ``flax.linen.Module``, a ``flax.nnx.Module`` (already built; nnx modules do not
        keep their initializers, so each layer's default initializer is assumed and checked
        against the weights' statistics; pass ``initializers`` for others), or a function
        ``f(params, x)``.
      example_input: an input batch ``(N, ..., features)``; only its shape and dtype are used.
      parameterization: ``'standard'``, ``'ntk'`` or ``'mup'`` (see above).
      params: for a plain function only: its parameters (arrays or `jax.ShapeDtypeStruct`).
      initializers: for a plain function, the pytree of ``params`` with an initializer at each
        leaf (or a dict ``{'path/to/leaf': initializer}``); for a Flax module, a dict overriding
        the initializers read from it (paths as in ``'params/Dense_0/kernel'`` (linen) or
        ``'layers/0/kernel'`` (nnx)).
      attention_samples: draws of the Gaussian logits in the Monte Carlo kernel of softmax
        attention (`stax.GlobalSelfAttention`'s ``n_samples``: a multiple of 4; its error
        falls as ``1 / sqrt(attention_samples)``); unused without attention.
      **apply_kwargs: passed to the model's call (e.g. ``deterministic=True``).

    Returns:
      A `stax.Layer`: ``init_fn(key, input_shape) -> (output_shape, params)`` draws fresh
      parameters (``module.init`` for linen, the read initializers otherwise), ``apply_fn(params,
      x)`` is the model, and ``kernel_fn(x1, x2=None, get=None)`` its infinite-width kernels.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from infwidth import from_flax, stax
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         x = nn.relu(nn.Dense(512, kernel_init=nn.initializers.he_normal())(x))
      ...         return nn.Dense(1)(x)
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
      >>> init_fn, apply_fn, kernel_fn = from_flax(MLP(), x)
      >>> _, _, stax_kernel_fn = stax.serial(
      ...     stax.Dense(512, W_std=2**0.5, b_std=0., parameterization='standard'), stax.Relu(),
      ...     stax.Dense(1, W_std=1., b_std=0., parameterization='standard'))
      >>> bool(jnp.allclose(kernel_fn(x, get='ntk'), stax_kernel_fn(x, get='ntk'), rtol=1e-5))
      True

    The paper behind the mapping: the tensor-program view that any architecture built from
    these operations has a GP/NTK limit (Yang 2019, arXiv:1910.12478; Yang 2020,
    arXiv:2006.14548), with each operation's kernel map from neural-tangents' stax (Novak et al.
    2020, arXiv:1912.02803).
    """
    par = resolve_parameterization(parameterization, "from_flax")
    if (isinstance(attention_samples, bool) or not isinstance(attention_samples, int)
            or attention_samples < 4 or attention_samples % 4):
        raise ValueError(f"from_flax(attention_samples={attention_samples!r}): expected a "
                         f"positive multiple of 4 (the draws of softmax attention's logits "
                         f"come in groups of 4), e.g. 1024.")
    if not hasattr(example_input, "shape") or len(example_input.shape) < 2:
        shape = getattr(example_input, "shape", None)
        raise ValueError("from_flax(example_input): expected an array of shape (N, ..., "
                         f"features) with a batch axis; got shape {shape}.")
    x_spec = jax.ShapeDtypeStruct(tuple(example_input.shape), jnp.result_type(example_input))
    model = as_model(module, example_input, apply_kwargs, params, initializers)
    leaves, treedef = jax.tree_util.tree_flatten(model.params)
    specs = [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in leaves]

    def flat_apply(ls, x):
        return model.apply_fn(jax.tree_util.tree_unflatten(treedef, ls), x)

    closed, out_shapes = _trace(flat_apply, specs, x_spec)
    out_leaves, out_tree = jax.tree_util.tree_flatten(out_shapes)

    def init_fn(key, input_shape):
        if model.kind == "linen":
            p = linen_init(module, key, jnp.zeros(input_shape, x_spec.dtype), apply_kwargs)
            p = p["params"]
        else:
            p = model.init_fn(key)
        out = jax.eval_shape(model.apply_fn, p, jax.ShapeDtypeStruct(tuple(input_shape),
                                                                     x_spec.dtype))
        return jax.tree_util.tree_map(lambda o: tuple(o.shape), out), p

    def apply_fn(p, x, **kwargs):
        return model.apply_fn(p, x, **kwargs)

    memo = {}  # the activation found for each elementwise chain, kept across calls

    def kernel_map(k, **kwargs):
        check_has_kernel(par, "from_flax")
        kernels = Walker(model, par, memo, attention_samples).run(closed, len(leaves), k)
        return kernels[0] if len(kernels) == 1 else jax.tree_util.tree_unflatten(out_tree, kernels)

    layer = make_layer("from_flax", init_fn, apply_fn, kernel_map, shape_fn=None)
    if par in ("standard", "ntk"):  # every unsupported operation raises now, before real work
        jax.eval_shape(lambda x: layer.kernel_fn(x, get="nngp"), x_spec)
    return layer
