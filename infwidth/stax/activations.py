"""Nonlinearities with closed-form NNGP and NTK maps.

Each activation here only states its dual kernel; `elementwise` does the rest.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import erf

from .._numerics import arccos, safe_divide, safe_sqrt
from ._layer import Layer
from .elementwise import elementwise


def _as_float(value, arg, layer):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{layer}({arg}={value!r}): {arg} must be a number.") from None


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    """``a * min(x, 0) + b * max(x, 0)``: the family holding ReLU, leaky ReLU and abs.

    With ``theta`` the angle between the two inputs (``cos theta = cov12 / sqrt(var1 var2)``),
    the dual kernel is the arc-cosine kernel of degree 1 (Cho & Saul 2009, "Kernel methods for
    deep learning"):

        E[phi(u) phi(v)]   = (a - b)**2 / (2 pi) * sqrt(var1 var2) sin(theta)
                             + ((a**2 + b**2) / 2 - (a - b)**2 / (2 pi) * theta) * cov12
        E[phi'(u) phi'(v)] = (a**2 + b**2) / 2 - (a - b)**2 / (2 pi) * theta

    The formula is written with ``sqrt(var1) sqrt(var2)``, so it neither overflows nor
    underflows in deep networks; ``do_stabilize`` is accepted for compatibility with
    neural-tangents and changes nothing.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.ABRelu(-1., 1.))  # |x|
      >>> kernel_fn(jnp.array([[1., 0.], [0., 1.]]), get='nngp').round(4).tolist()
      [[0.5, 0.3183], [0.3183, 0.5]]
    """
    name = f"ABRelu({a}, {b})"
    a, b = _as_float(a, "a", "ABRelu"), _as_float(b, "b", "ABRelu")
    factor = (a - b) ** 2 / (2 * math.pi)
    mean_sq = (a**2 + b**2) / 2

    def angle_terms(cov12, var1, var2):
        # var1 and var2 broadcast against cov12 (outer shapes), so the square roots and
        # reciprocals are taken on the small factors before they are combined.
        norm = safe_sqrt(var1) * safe_sqrt(var2)
        corr = jnp.clip(safe_divide(cov12, norm), -1, 1)
        sin_norm = norm * safe_sqrt(1 - corr * corr)
        theta = arccos(corr)  # pi / 2 where an input is zero, as in neural-tangents
        return sin_norm, mean_sq - factor * theta

    def nngp_fn(cov12, var1, var2):
        sin_norm, dot = angle_terms(cov12, var1, var2)
        return factor * sin_norm + dot * cov12

    def d_nngp_fn(cov12, var1, var2):
        return angle_terms(cov12, var1, var2)[1]

    def fn(x):
        return a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0)

    return elementwise(fn, name, nngp_fn, d_nngp_fn, diag_fn=lambda var: mean_sq * var)


def Relu(do_stabilize: bool = False) -> Layer:
    """ReLU, ``max(x, 0)``: `ABRelu(0, 1)`, the arc-cosine kernel of degree 1.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, W_std=2**0.5), stax.Relu())
      >>> kernel_fn(jnp.array([[1., 0.], [0., 1.]]), get='nngp').round(4).tolist()
      [[0.5, 0.1592], [0.1592, 0.5]]
    """
    return ABRelu(0.0, 1.0, do_stabilize)


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Layer:
    """Leaky ReLU, ``alpha * min(x, 0) + max(x, 0)``: `ABRelu(alpha, 1)`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.LeakyRelu(0.1))
      >>> float(kernel_fn(jnp.ones((1, 3)), get='nngp')[0, 0])  # (1 + 0.1**2) / 2
      0.505
    """
    return ABRelu(alpha, 1.0, do_stabilize)


def Abs(do_stabilize: bool = False) -> Layer:
    """Absolute value, ``|x|``: `ABRelu(-1, 1)`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Abs())
      >>> float(kernel_fn(jnp.ones((1, 3)), get='nngp')[0, 0])  # E[u^2] = 1
      1.0
    """
    return ABRelu(-1.0, 1.0, do_stabilize)


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """``a * erf(b * x) + c``, with the arcsine kernel of Williams 1997 ("Computing with
    infinite networks"):

        E[phi(u) phi(v)]   = a**2 * 2/pi * arcsin(2 b**2 cov12 / sqrt((1 + 2 b**2 var1)
                                                                 (1 + 2 b**2 var2))) + c**2
        E[phi'(u) phi'(v)] = a**2 * 4 b**2 / pi / sqrt((1 + 2 b**2 var1)(1 + 2 b**2 var2)
                                                       - 4 b**4 cov12**2)

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Erf())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 6)  # 2/pi arcsin(2/3)
      0.464559
    """
    name = f"Erf({a}, {b}, {c})"
    a, b, c = (_as_float(v, n, "Erf") for v, n in ((a, "a"), (b, "b"), (c, "c")))
    b2 = b**2

    def root(cov12, var1, var2):
        return safe_sqrt((1 + 2 * b2 * var1) * (1 + 2 * b2 * var2) - 4 * b2**2 * cov12**2)

    def nngp_fn(cov12, var1, var2):
        angle = jnp.arctan2(2 * b2 * cov12, root(cov12, var1, var2))
        return a**2 * (2 / math.pi) * angle + c**2

    def d_nngp_fn(cov12, var1, var2):
        return a**2 * b2 * (4 / math.pi) / root(cov12, var1, var2)

    def diag_fn(var):
        return a**2 * (2 / math.pi) * jnp.arctan2(2 * b2 * var, jnp.sqrt(1 + 4 * b2 * var)) + c**2

    def fn(x):
        return a * erf(b * x) + c

    return elementwise(fn, name, nngp_fn, d_nngp_fn, diag_fn)
