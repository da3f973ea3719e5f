"""Polynomial nonlinearities: `Polynomial`, `Monomial`, `Hermite`.

Their dual kernels come from the Hermite expansion (Mehler's formula; O'Donnell 2014, "Analysis
of Boolean functions", ch. 11): with probabilists' Hermite polynomials ``He_k``,
``E[He_k(z1) He_l(z2)] = k! rho**k [k == l]`` for unit normals with correlation ``rho``, and
``x**i = sum_k a(i, k) He_k(x)`` with ``a(i, k) = i! / (k! m! 2**m)``, ``i - k = 2 m``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ._layer import Layer
from .activations import _as_degree, _as_float
from .elementwise import elementwise


def _hermite_weight(i: int, k: int) -> float:
    """``a(i, k)``: the coefficient of ``He_k`` in ``x**i`` (0 unless ``i - k`` is even >= 0)."""
    if k > i or (i - k) % 2:
        return 0.0
    m = (i - k) // 2
    return math.factorial(i) / (math.factorial(k) * math.factorial(m) * 2**m)


def _nonzero(c) -> bool:
    """False only for a coefficient known to be 0 (a traced hyperparameter may be anything)."""
    return not isinstance(c, (int, float)) or c != 0


def _polynomial_maps(coef):
    """NNGP and derivative maps of ``sum_i coef[i] x**i``.

    Writing ``u = sigma z``, ``p(u) = sum_k sigma**k R_k(sigma**2) He_k(z)`` with the polynomial
    ``R_k(v) = sum_i coef[i] a(i, k) v**((i - k) / 2)``, so

        E[p(u) p(v)] = sum_k k! R_k(var1) R_k(var2) cov12**k,

    a polynomial in ``cov12``, ``var1`` and ``var2`` (no square roots or divisions, so it is
    exact and smooth at zero inputs); its derivative in ``cov12`` is the NTK map.
    """
    n = len(coef)
    # the Hermite orders present (a term that is identically zero is left out, so that an
    # overflowed covariance gives inf, not 0 * inf = NaN)
    present = [k for k in range(n)
               if any(_nonzero(coef[i] * _hermite_weight(i, k)) for i in range(k, n, 2))]

    def r(k, var):
        out = 0.0
        for i in range(k, n, 2):
            if _nonzero(coef[i] * _hermite_weight(i, k)):
                out = out + coef[i] * _hermite_weight(i, k) * var ** ((i - k) // 2)
        return out

    def nngp_fn(cov12, var1, var2):
        out = jnp.zeros_like(cov12 * var1 * var2)
        for k in present:
            out = out + math.factorial(k) * r(k, var1) * r(k, var2) * cov12**k
        return out

    def d_nngp_fn(cov12, var1, var2):
        out = jnp.zeros_like(cov12 * var1 * var2)
        for k in (k for k in present if k > 0):
            out = out + k * math.factorial(k) * r(k, var1) * r(k, var2) * cov12 ** (k - 1)
        return out

    def diag_fn(var):
        return nngp_fn(var, var, var)

    return nngp_fn, d_nngp_fn, diag_fn


def Polynomial(coef) -> Layer:
    """``coef[0] + coef[1] x + ... + coef[n] x**n`` (the order of
    :class:`numpy.polynomial.polynomial.Polynomial`), with the exact dual kernel of its Hermite
    expansion (see ``_polynomial_maps``; Daniely et al. 2016, arXiv:1602.05897, sec. 4):

        E[p(u) p(v)] = sum_k k! R_k(var1) R_k(var2) cov12**k

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Polynomial([1., 0., 1.]))
      >>> float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0])  # E[(1 + u^2)^2] = 1 + 2 + 3
      6.0
    """
    try:
        coef = tuple(coef)
    except TypeError:
        raise TypeError(f"Polynomial(coef={coef!r}): coef must be a sequence of numbers, "
                        f"lowest degree first.") from None
    coef = tuple(_as_float(c, "coef", "Polynomial") for c in coef)
    if not coef:
        raise ValueError("Polynomial(coef=[]): give at least one coefficient, e.g. "
                         "Polynomial([0., 1.]) for the identity.")
    nngp_fn, d_nngp_fn, diag_fn = _polynomial_maps(coef)

    def fn(x):
        out = jnp.zeros_like(x)
        for c in coef[::-1]:  # Horner
            out = out * x + c
        return out

    return elementwise(fn, f"Polynomial({list(coef)})", nngp_fn, d_nngp_fn, diag_fn)


def Monomial(degree: int) -> Layer:
    """``x**degree``: `Polynomial` with a single coefficient, so

        E[u**n v**n] = sum_k k! a(n, k)**2 (var1 var2)**((n - k) / 2) cov12**k

    (e.g. ``2 cov12**2 + var1 var2`` for ``n = 2``). neural-tangents allows degrees 0 to 5;
    here any non-negative integer works.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Monomial(3))
      >>> float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0])  # E[u^6] = 15
      15.0
    """
    degree = _as_degree(degree, "Monomial")
    coef = (0.0,) * degree + (1.0,)
    nngp_fn, d_nngp_fn, diag_fn = _polynomial_maps(coef)

    def fn(x):
        return x**degree

    return elementwise(fn, f"Monomial({degree})", nngp_fn, d_nngp_fn, diag_fn)


def Hermite(degree: int) -> Layer:
    """The normalized (probabilists') Hermite polynomial ``He_degree(x) / sqrt(degree!)``.

    As in neural-tangents, inputs are assumed to have unit variance (e.g. ``Dense(W_std=1)`` on
    inputs with ``mean(x**2, axis=-1) == 1``); then Mehler's formula gives

        E[phi(u) phi(v)] = cov12**degree,   E[phi'(u) phi'(v)] = degree cov12**(degree - 1)

    and these maps are used whatever the variances (unlike neural-tangents, no warning is
    printed on each call).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Hermite(2))
      >>> x = jnp.array([[1., 1.], [1., -1.]])  # unit mean square
      >>> kernel_fn(x, get='nngp').tolist()
      [[1.0, 0.0], [0.0, 1.0]]
    """
    degree = _as_degree(degree, "Hermite")
    power = np.polynomial.hermite_e.herme2poly([0] * degree + [1]) / math.sqrt(
        math.factorial(degree))

    def nngp_fn(cov12, var1, var2):
        return cov12**degree * jnp.ones_like(var1 * var2)

    def d_nngp_fn(cov12, var1, var2):
        if degree == 0:
            return jnp.zeros_like(cov12 * var1 * var2)
        return degree * cov12 ** (degree - 1) * jnp.ones_like(var1 * var2)

    def fn(x):
        out = jnp.zeros_like(x)
        for c in power[::-1]:
            out = out * x + float(c)
        return out

    return elementwise(fn, f"Hermite({degree})", nngp_fn, d_nngp_fn,
                       diag_fn=lambda var: var**degree)
