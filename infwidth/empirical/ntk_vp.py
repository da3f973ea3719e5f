"""NTK-vector products without forming the NTK: neural-tangents' ``nt.empirical_ntk_vp_fn``."""

from collections.abc import Callable

import jax


def empirical_ntk_vp_fn(f: Callable, x1, x2, params, **apply_fn_kwargs) -> Callable:
    r"""Returns ``ntk_vp(cotangents) = Θ(x1, x2) · cotangents``, the empirical NTK of ``f`` at
    ``params`` applied to a vector, at the cost of one VJP and one JVP.

    With ``J(x) = ∂f(params, x)/∂params``, ``Θ(x1, x2) = J(x1) J(x2)^T`` summed over all
    output axes (no trace), so ``ntk_vp(v) = J(x1) (J(x2)^T v)``: a vector-Jacobian product at
    ``x2`` gives a tangent in parameter space, and a Jacobian-vector product at ``x1`` maps it
    to outputs (Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel",
    arXiv:2206.08720, Section 3.2). ``cotangents`` has the shape of ``f(params, x2)``; the result
    that of ``f(params, x1)``. ``x2=None`` means ``x2 = x1``.

    Args:
      f: ``f(params, x, **apply_fn_kwargs)``.
      x1, x2: inputs.
      params: the parameters at which the NTK is taken.
      **apply_fn_kwargs: passed to ``f`` for both inputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import empirical_ntk_vp_fn
      >>> f = lambda p, x: x @ p            # linear model: the NTK is x1 @ x2.T per output
      >>> x = jnp.array([[1., 0.], [1., 1.]])
      >>> ntk_vp = empirical_ntk_vp_fn(f, x, None, jnp.ones((2, 1)))
      >>> ntk_vp(jnp.array([[1.], [0.]])).tolist()
      [[1.0], [1.0]]
    """
    x2 = x1 if x2 is None else x2

    def ntk_vp(cotangents):
        _, vjp = jax.vjp(lambda p: f(p, x2, **apply_fn_kwargs), params)
        (tangent,) = vjp(cotangents)
        return jax.jvp(lambda p: f(p, x1, **apply_fn_kwargs), (params,), (tangent,))[1]

    return ntk_vp
