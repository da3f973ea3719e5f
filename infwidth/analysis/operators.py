"""Kernels of linear differential operators applied to a network: physics-informed kernels.

If ``f`` is a Gaussian process with kernel ``k`` (the NNGP of an infinitely wide network) and
``L1``, ``L2`` are linear operators built from input derivatives, then ``L1 f`` and ``L2 f`` are
jointly Gaussian with ``Cov(L1 f(x), L2 f(y)) = L1_x L2_y k(x, y)`` (the operator acting on
the first and on the second argument). The same holds for the NTK: the tangent kernel of the
model ``L f`` is ``L1_x L2_y Theta(x, y)``. These kernels are the infinite-width limits behind
physics-informed networks (Wang, Yu and Perdikaris 2022, "When and why PINNs fail to train: a
neural tangent kernel perspective", arXiv:2007.14527) and the Gaussian-process collocation
solvers of linear PDEs (Raissi, Perdikaris and Karniadakis 2017, "Machine learning of linear
differential equations using Gaussian processes", arXiv:1701.02440).

`operator_kernel` differentiates ``kernel_fn`` itself in its two inputs, forward mode over
forward mode (no finite differences). A vector field ``u = (f_1, ..., f_m)`` is ``m``
independent outputs of the network (``Cov(f_a(x), f_b(y)) = k(x, y) delta_ab``). The operators:

* `identity`: ``u`` itself; `gradient`: the Jacobian ``du_a / dx_i`` (flattened ``a``-major);
* `laplacian`: ``sum_i d^2 u_a / dx_i^2``; `divergence`: ``sum_i du_i / dx_i`` (``m = d``);
* `stack`: several operators' outputs side by side (the rows of a collocation system);
* `elasticity`: the Navier-Cauchy operator of linear elasticity, ``mu Lap u + (lam + mu)
  grad(div u)`` (``m = d``), whose equilibrium is ``-L u = body force``.

An operator of order ``r`` needs ``r`` continuous derivatives of the activation for the NNGP
and ``r + 1`` for the NTK (the NTK holds the derivative ``phi'``): ReLU's second derivative is
zero almost everywhere and its kernel has no second derivatives at coincident inputs, so a
ReLU network with the Laplacian raises a ``ValueError`` instead of returning zeros.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..stax._layer import LayerInfo

__all__ = [
    "Operator",
    "identity",
    "gradient",
    "laplacian",
    "divergence",
    "elasticity",
    "stack",
    "operator_kernel",
]


class Operator(NamedTuple):
    """A linear differential operator on vector fields ``u: R^d -> R^m``.

    Attributes:
      name: for messages.
      order: the highest derivative it takes.
      apply: ``apply(u, m, d)`` maps the function ``u`` to the function ``x -> (L u)(x)``
        (a 1-D array).
      needs_vector_field: ``u`` must have ``m = d`` components (divergence, elasticity).
    """

    name: str
    order: int
    apply: Callable
    needs_vector_field: bool = False


def _hessian_trace(u, x, d):
    """``sum_i d^2 u / dx_i^2`` by nested forward mode along each axis."""
    eye = jnp.eye(d, dtype=x.dtype)

    def second(e):
        return jax.jvp(lambda z: jax.jvp(u, (z,), (e,))[1], (x,), (e,))[1]

    return jnp.sum(jax.vmap(second)(eye), axis=0)


def _identity(u, m, d):
    return u


def _gradient(u, m, d):
    return lambda x: jax.jacfwd(u)(x).reshape(-1)


def _laplacian(u, m, d):
    return lambda x: _hessian_trace(u, x, d)


def _divergence(u, m, d):
    return lambda x: jnp.trace(jax.jacfwd(u)(x)).reshape(1)


def identity() -> Operator:
    """The identity, ``L u = u`` (``m`` components).

    >>> import jax.numpy as jnp
    >>> u = lambda x: jnp.stack([x @ x])  # u(x) = |x|^2, one component
    >>> identity().apply(u, 1, 2)(jnp.array([1., 2.])).tolist()
    [5.0]
    """
    return Operator("identity", 0, _identity)


def gradient() -> Operator:
    """The Jacobian ``(L u)_{a d + i} = du_a / dx_i`` (``m d`` components; ``d`` for a scalar).

    >>> import jax.numpy as jnp
    >>> u = lambda x: jnp.stack([x @ x])  # grad |x|^2 = 2 x
    >>> gradient().apply(u, 1, 2)(jnp.array([1., 2.])).tolist()
    [2.0, 4.0]
    """
    return Operator("gradient", 1, _gradient)


def laplacian() -> Operator:
    """The Laplacian of each component, ``(L u)_a = sum_i d^2 u_a / dx_i^2``.

    >>> import jax.numpy as jnp
    >>> u = lambda x: jnp.stack([x @ x])  # Lap |x|^2 = 2 d
    >>> laplacian().apply(u, 1, 3)(jnp.array([1., 2., 3.])).tolist()
    [6.0]
    """
    return Operator("laplacian", 2, _laplacian)


def divergence() -> Operator:
    """The divergence of a vector field ``u: R^d -> R^d``, one component.

    >>> import jax.numpy as jnp
    >>> u = lambda x: x * x  # div (x_1^2, x_2^2) = 2 x_1 + 2 x_2
    >>> divergence().apply(u, 2, 2)(jnp.array([1., 2.])).tolist()
    [6.0]
    """
    return Operator("divergence", 1, _divergence, needs_vector_field=True)


def elasticity(lam: float = 1.0, mu: float = 1.0) -> Operator:
    """The Navier-Cauchy operator of isotropic linear elasticity with Lame parameters ``lam``
    and ``mu``: ``L u = mu Lap u + (lam + mu) grad(div u)`` for a displacement ``u: R^d ->
    R^d``; the static equilibrium under a body force ``b`` is ``-L u = b``.

    >>> import jax.numpy as jnp
    >>> u = lambda x: jnp.stack([x[0] ** 2, 0 * x[1]])  # Lap u = (2, 0), grad div u = (2, 0)
    >>> elasticity(lam=1.0, mu=1.0).apply(u, 2, 2)(jnp.array([1., 2.])).tolist()
    [6.0, 0.0]
    """
    try:
        lam, mu = float(lam), float(mu)
    except (TypeError, ValueError):
        raise TypeError(f"elasticity(lam={lam!r}, mu={mu!r}): the Lame parameters must be "
                        f"numbers.") from None
    if not (math.isfinite(lam) and math.isfinite(mu) and mu > 0 and lam + mu > 0):
        raise ValueError(f"elasticity(lam={lam}, mu={mu}): need mu > 0 and lam + mu > 0 (a "
                         f"stable isotropic material).")

    def apply(u, m, d):
        def lu(x):
            hess = jax.jacfwd(jax.jacfwd(u))(x)  # (m, d, d)
            grad_div = jnp.einsum("iij->j", hess)
            return mu * jnp.einsum("aii->a", hess) + (lam + mu) * grad_div

        return lu

    return Operator(f"elasticity(lam={lam}, mu={mu})", 2, apply, needs_vector_field=True)


def stack(*ops: Operator) -> Operator:
    """The operators' outputs side by side, ``L u = (L_1 u, L_2 u, ...)``: one call of
    `operator_kernel` then gives every block of a collocation system (``stack(laplacian(),
    identity())`` holds the PDE rows and the boundary rows).

    >>> import jax.numpy as jnp
    >>> u = lambda x: jnp.stack([x @ x])
    >>> stack(laplacian(), identity()).apply(u, 1, 2)(jnp.array([1., 2.])).tolist()
    [4.0, 5.0]
    """
    if not ops or not all(isinstance(op, Operator) for op in ops):
        raise TypeError(f"stack(*ops): expected one or more Operators; got {ops!r}.")

    def apply(u, m, d):
        parts = [op.apply(u, m, d) for op in ops]
        return lambda x: jnp.concatenate([part(x) for part in parts])

    return Operator("stack(" + ", ".join(op.name for op in ops) + ")",
                    max(op.order for op in ops), apply,
                    any(op.needs_vector_field for op in ops))


def _check_operator(op, arg):
    if not isinstance(op, Operator):
        raise TypeError(f"operator_kernel({arg}={op!r}): expected an Operator such as "
                        f"analysis.laplacian() or analysis.identity().")
    return op


def _check_smoothness(kernel_fn, order, get):
    needed = order if get == "nngp" else (order + 1 if order > 0 else 0)
    info = LayerInfo.of(kernel_fn)
    if needed > 0 and info.smoothness < needed:
        have = "a jump" if info.smoothness < 0 else (
            "a kink" if info.smoothness == 0 else f"{int(info.smoothness)} continuous derivatives")
        raise ValueError(
            f"operator_kernel: derivatives of order {order} need an activation with {needed} "
            f"continuous derivatives for the {get.upper()}, but the network's {info.roughest} "
            f"has {have}: its derivatives of that order are zero almost everywhere (or do not "
            f"exist), so the kernel of L f is not defined at coincident points and would not "
            f"describe the PDE. Use a smooth activation such as stax.Tanh(), stax.Gelu() or "
            f"stax.Erf().")


def operator_kernel(kernel_fn, x1, x2=None, op1: Operator | None = None,
                    op2: Operator | None = None, get: str = "nngp", n_outputs: int | None = None):
    """The kernel ``Cov(L1 u(x1_i), L2 u(x2_j))`` of a network ``u`` under linear differential
    operators, ``L1_x L2_y k(x, y)`` (module docstring), by exact differentiation of
    ``kernel_fn`` in its inputs.

    Args:
      kernel_fn: the network's kernel function (inputs of shape ``(N, d)``).
      x1, x2: points ``(N1, d)`` and ``(N2, d)`` (``x2=None``: ``x1``).
      op1, op2: the operators on the first and second argument (default `identity`; ``op2``
        defaults to ``op1``).
      get: ``'nngp'`` or ``'ntk'``.
      n_outputs: the number ``m`` of components of ``u``: ``d`` if an operator needs a vector
        field, else 1.

    Returns:
      An array ``(N1, p1, N2, p2)`` with ``p1``, ``p2`` the operators' output sizes; reshape to
      ``(N1 p1, N2 p2)`` for a Gram matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.analysis import operator_kernel, gradient
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, W_std=2.0), stax.Erf())
      >>> x = jnp.zeros((1, 1))   # Cov(f'(0), f'(0)) = E[(2 w erf'(0))^2] = 16 / pi
      >>> round(float(operator_kernel(kernel_fn, x, None, gradient())[0, 0, 0, 0]), 4)
      5.093
    """
    op1 = identity() if op1 is None else _check_operator(op1, "op1")
    op2 = op1 if op2 is None else _check_operator(op2, "op2")
    if get not in ("nngp", "ntk"):
        raise ValueError(f"operator_kernel(get={get!r}): get must be 'nngp' or 'ntk'.")
    x1 = jnp.asarray(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    if not jnp.issubdtype(x1.dtype, jnp.floating):
        x1 = x1.astype(jnp.result_type(float))
    x2 = x2.astype(x1.dtype)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"operator_kernel(x1, x2): expected points of shapes (N1, d) and "
                         f"(N2, d); got {x1.shape} and {x2.shape}.")
    d = x1.shape[1]
    vector = op1.needs_vector_field or op2.needs_vector_field
    m = (d if vector else 1) if n_outputs is None else n_outputs
    if not isinstance(m, int) or m < 1 or (vector and m != d):
        raise ValueError(f"operator_kernel(n_outputs={n_outputs!r}): the number of components "
                         f"must be a positive integer, and {d} (the input dimension) for "
                         f"{op1.name if op1.needs_vector_field else op2.name}.")
    _check_smoothness(kernel_fn, max(op1.order, op2.order), get)
    out = _compute(kernel_fn, op1, op2, get, m, x1, x2)
    return jnp.transpose(out, (0, 2, 1, 3))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _compute(kernel_fn, op1, op2, get, m, x1, x2):
    d = x1.shape[1]
    eye = jnp.eye(m, dtype=x1.dtype)

    def k(a, b):  # the x1 != x2 path of kernel_fn: its derivatives are right at a == b
        return kernel_fn(a[None], b[None], get)[0, 0]

    def pair(a, b):
        def h(xa):  # (m, p2): L2 on the second argument of k(xa, .) e_c, for each channel c
            return jax.vmap(lambda e: op2.apply(lambda yb: k(xa, yb) * e, m, d)(b))(eye)

        p2 = jax.eval_shape(h, a).shape[1]
        basis = jnp.eye(p2, dtype=x1.dtype)
        # L1 on the first argument, summed over the channels (independent components)
        return jax.vmap(lambda q: op1.apply(lambda xa: h(xa) @ q, m, d)(a), out_axes=1)(basis)

    def row(a):
        return jax.vmap(lambda b: pair(a, b))(x2)

    return jax.lax.map(row, x1)
