"""The shared helper behind every elementwise nonlinearity.

An activation ``phi`` is described to the helper by its *dual kernel* (Cho & Saul 2009; Daniely
et al. 2016, arXiv:1602.05897): for a centred Gaussian pair (u, v) with variances ``var1``,
``var2`` and covariance ``cov12``,

* ``nngp_fn(cov12, var1, var2) = E[phi(u) phi(v)]`` (the NNGP map), and
* ``d_nngp_fn(cov12, var1, var2) = E[phi'(u) phi'(v)]`` (the map the NTK needs; by Price's
  theorem it is the derivative of ``nngp_fn`` in ``cov12``, which is what autodiff supplies
  when it is omitted).

The helper applies them to every covariance a `Kernel` stores (``nngp``, ``cov1``, ``cov2``,
full or diagonal over the batch and over positions) and multiplies the NTK by the derivative
map (Jacot et al. 2018, arXiv:1806.07572; Lee et al. 2019, arXiv:1902.06720).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .._numerics import consistent_covariance
from ..kernel import Kernel
from . import _layout
from ._layer import Layer, check_kernel_input, make_layer


def _map_cov(cov, var, k: Kernel, nngp_fn, diag_fn):
    """Applies the NNGP map to ``cov1`` (or ``cov2``) in whichever layout it is stored."""
    if cov is None:
        return None
    if k.diagonal_batch and (k.diagonal_spatial or k.n_spatial == 0):
        return diag_fn(cov)
    n_lead = 1 if k.diagonal_batch else 2
    v1, v2 = (_layout.expand(var, side, n_lead, k.diagonal_spatial) for side in (1, 2))
    return nngp_fn(consistent_covariance(cov, v1, v2), v1, v2)


def materialize(*arrays):
    """Returns ``arrays`` unchanged, computed once and written out.

    XLA has no multi-output fusion on CPU: a cheap value with two consumers (a layer's NNGP feeds
    both the next NNGP and, through the derivative map, the NTK) is recomputed inside each
    consumer, and across a deep network that recomputation grows quadratically. A conditional is
    a boundary fusion cannot cross; its other branch (taken only if the first entry is already
    NaN, and then returning the same values) keeps the compiler from removing it. On
    accelerators `optimization_barrier` does the same.
    """
    if arrays[0].size == 0:
        return arrays
    if jax.default_backend() != "cpu":  # accelerators honour the barrier (and a cond syncs)
        return jax.lax.optimization_barrier(arrays)
    # the other branch writes NaN where a NaN already is: the same values, which the compiler
    # cannot know (a NaN input stays in its own rows and columns)
    poisoned = jnp.isnan(arrays[0].ravel()[0])
    return jax.lax.cond(poisoned, lambda a: (_first_entry_nan(a[0]),) + tuple(a[1:]),
                        lambda a: a, arrays)


def _first_entry_nan(x):
    return x.reshape(-1).at[0].set(jnp.nan).reshape(x.shape)


def derivative_from_autodiff(nngp_fn: Callable) -> Callable:
    """``d_nngp_fn`` as the elementwise derivative of ``nngp_fn`` in ``cov12`` (Price's theorem)."""

    def d_nngp_fn(cov12, var1, var2):
        return jax.jvp(lambda c: nngp_fn(c, var1, var2), (cov12,), (jnp.ones_like(cov12),))[1]

    return d_nngp_fn


def elementwise_kernel(k: Kernel, name: str, nngp_fn: Callable, d_nngp_fn: Callable,
                       diag_fn: Callable | None = None, *, family: str = "elementwise",
                       hparams: dict | None = None, fn: Callable | None = None,
                       smoothness: float = math.inf) -> Kernel:
    """The Kernel after the elementwise nonlinearity with the given dual-kernel maps (or, on
    the non-Gaussian output of a train-mode `BatchNorm`, the rule for that law)."""
    if not isinstance(k, (list, tuple)) and not k.is_gaussian and k.law is not None:
        from .batch_norm import nonlinearity_after

        return nonlinearity_after(k, k.law, name, family, hparams or {}, fn, smoothness)
    k = check_kernel_input(k, name, gaussian=True)
    if diag_fn is None:
        def diag_fn(var):
            return nngp_fn(var, var, var)
    if k.cov2 is None and k.nngp.shape[0] == k.nngp.shape[1]:
        # x2 is x1: the variances are the batch diagonal of nngp itself, so that an input
        # paired with itself has correlation exactly 1 however XLA fused the layers before
        # (maps such as Sign's have infinite slope there and amplify one rounding error)
        var1 = _layout.variances(_layout.batch_diagonal(k.nngp), k.replace(diagonal_batch=True))
    else:
        var1 = _layout.variances(k.cov1, k)
    var2 = var1 if k.cov2 is None else _layout.variances(k.cov2, k)
    v1 = _layout.expand(var1, 1, 2, k.diagonal_spatial)
    v2 = _layout.expand(var2, 2, 2, k.diagonal_spatial)
    # rounding must not make identical inputs different (correlations a few ulps from 1 are 1)
    # nor break Cauchy-Schwarz, which the formulas below rely on
    cov12 = consistent_covariance(k.nngp, v1, v2)
    nngp = nngp_fn(cov12, v1, v2)
    if k.ntk is None:
        ntk = None
    else:
        ntk = k.ntk * d_nngp_fn(cov12, v1, v2)
        nngp, ntk = materialize(nngp, ntk)
    return k.replace(nngp=nngp, ntk=ntk,
                     cov1=_map_cov(k.cov1, var1, k, nngp_fn, diag_fn),
                     cov2=_map_cov(k.cov2, var2, k, nngp_fn, diag_fn),
                     is_gaussian=False)


def elementwise(fn: Callable, name: str, nngp_fn: Callable, d_nngp_fn: Callable | None = None,
                diag_fn: Callable | None = None, smoothness: float = math.inf, *,
                family: str = "elementwise", hparams: dict | None = None) -> Layer:
    """A parameterless layer applying ``fn`` elementwise, with the given dual-kernel maps.

    Args:
      fn: the activation, applied elementwise by ``apply_fn``.
      name: the layer's name in error messages, e.g. ``'Erf(1.0, 1.0, 0.0)'``.
      nngp_fn: ``(cov12, var1, var2) -> E[fn(u) fn(v)]`` for a centred Gaussian pair.
      d_nngp_fn: ``(cov12, var1, var2) -> E[fn'(u) fn'(v)]``; autodiff of ``nngp_fn`` if None.
      diag_fn: optional ``var -> E[fn(u)**2]``, a cheaper form of ``nngp_fn(var, var, var)``.
      smoothness: how many times ``fn`` is continuously differentiable (``inf``: smooth; 0: a
        kink as in ReLU; -1: a jump as in Sign), read by kernels of the network's derivatives.
      family, hparams: the layer family and what its feature rule needs
        (`infwidth.features`); by default random features of ``fn`` itself.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> # the identity activation: E[u v] = cov12 and E[1 * 1] = 1
      >>> linear = elementwise(lambda x: x, 'Linear', lambda c, v1, v2: c)
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), linear, stax.Dense(1))
      >>> k = kernel_fn(jnp.eye(2))
      >>> k.nngp.tolist(), k.ntk.tolist()
      ([[0.5, 0.0], [0.0, 0.5]], [[1.0, 0.0], [0.0, 1.0]])
    """
    if d_nngp_fn is None:
        d_nngp_fn = derivative_from_autodiff(nngp_fn)

    def init_fn(key, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, x, **kwargs):
        return fn(x)

    def kernel_map(k, **kwargs):
        return elementwise_kernel(k, name, nngp_fn, d_nngp_fn, diag_fn, family=family,
                                  hparams=hparams, fn=fn, smoothness=smoothness)

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=lambda shape: shape,
                      any_axes=True, smoothness=smoothness, family=family,
                      hparams={"fn": fn, **(hparams or {})})
