"""First-order and higher-order Taylor expansions of a function in its parameters."""

from __future__ import annotations

import jax


def _sub(a, b):
    return jax.tree_util.tree_map(lambda u, v: u - v, a, b)


def _check(f, params, caller):
    if not callable(f):
        raise TypeError(f"{caller}(f={f!r}): f must be a function f(params, *args, **kwargs).")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"{caller}: params has no array leaves; pass the parameters to expand "
                         f"around (e.g. from init_fn).")


def _check_match(p, params, caller):
    s1 = jax.tree_util.tree_structure(p)
    s2 = jax.tree_util.tree_structure(params)
    if s1 != s2:
        raise ValueError(f"{caller}: the parameters passed to the expanded function have "
                         f"structure {s1}, but it was expanded around parameters of structure "
                         f"{s2}.")


def linearize(f, params):
    """The first-order Taylor expansion of ``f`` in its parameters around ``params``.

    ``f_lin(p, *args, **kwargs) = f(params, ...) + J(params) (p - params)``: the model whose
    gradient-descent training the NTK describes exactly (Lee et al. 2019, "Wide Neural Networks
    of Any Depth Evolve as Linear Models Under Gradient Descent", arXiv:1902.06720). Same API
    as neural-tangents' ``linearize``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.empirical import linearize
      >>> f = lambda p, x: jnp.sin(p * x)
      >>> f_lin = linearize(f, 0.)
      >>> float(f_lin(0.1, 2.))  # sin(0) + cos(0) * 2 * 0.1
      0.2
    """
    _check(f, params, "linearize")

    def f_lin(p, *args, **kwargs):
        _check_match(p, params, "linearize")
        out, tangent = jax.jvp(lambda q: f(q, *args, **kwargs), (params,), (_sub(p, params),))
        return jax.tree_util.tree_map(lambda a, b: a + b, out, tangent)

    return f_lin


def taylor_expand(f, params, degree: int):
    """The Taylor expansion of ``f`` of the given ``degree`` in its parameters around ``params``.

    ``sum_{k <= degree} D^k f(params)[p - params]^k / k!``, computed with nested JVPs (degree 1
    is :func:`linearize`, degree 0 the constant ``f(params)``). Same API as neural-tangents'
    ``taylor_expand``; see Lee et al. 2019 (arXiv:1902.06720).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.empirical import taylor_expand
      >>> f = lambda p, x: jnp.exp(p * x)
      >>> float(taylor_expand(f, 0., 2)(0.5, 1.))  # 1 + 0.5 + 0.5**2 / 2
      1.625
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"taylor_expand(degree={degree!r}): degree must be a non-negative int.")
    _check(f, params, "taylor_expand")

    def f_tayl(p, *args, **kwargs):
        _check_match(p, params, "taylor_expand")
        dp = _sub(p, params)
        g = lambda q: f(q, *args, **kwargs)
        terms = [g(params)]
        # derivs[k](q) = D^k g(q)[dp]^k, built by differentiating the previous one along dp.
        current = g
        factorial = 1.0
        for k in range(1, degree + 1):
            current = _directional(current, dp)
            factorial *= k
            terms.append(jax.tree_util.tree_map(lambda t, c=factorial: t / c, current(params)))
        return jax.tree_util.tree_map(lambda *ts: sum(ts[1:], ts[0]), *terms)

    return f_tayl


def _directional(g, dp):
    def dg(q):
        return jax.jvp(g, (q,), (dp,))[1]

    return dg
