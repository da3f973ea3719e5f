"""Numerically safe primitives shared by the kernel formulas.

The dual-kernel formulas take square roots and angles of quantities that are exactly zero for
identical or collinear inputs (``var1 * var2 - cov12**2``) and for zero inputs. The plain
functions give infinite or NaN gradients there; these versions give finite values and the
one-sided derivatives that make the composed kernel maps differentiable. Where a value is
snapped (a correlation within rounding of 1 set to 1), `value_with_derivatives_of` keeps the
derivatives of the unsnapped formula, so kernels stay differentiable in their inputs at
coincident points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_jvp
def safe_sqrt(x):
    """``sqrt(max(x, 0))`` with derivative 0 where ``x <= 0`` instead of inf/NaN.

    >>> float(safe_sqrt(-1e-9)), float(jax.grad(safe_sqrt)(0.))
    (0.0, 0.0)
    """
    return jnp.sqrt(jnp.maximum(x, 0))


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = safe_sqrt(x)
    positive = x > 0
    dydx = jnp.where(positive, 0.5 / jnp.where(positive, y, 1), 0)
    return y, dydx * t


@jax.custom_jvp
def value_with_derivatives_of(value, smooth):
    """``value`` (a snapped, clipped or special-cased form of ``smooth``, equal to it up to
    rounding) whose derivatives of every order are those of ``smooth``.

    Snapping a correlation to exactly 1 or an identical pair to its own variance keeps rounding
    from making identical inputs different, but a ``jnp.where`` between two formulas would give
    the derivative of the chosen branch: the kernel's derivatives in its inputs at coincident
    points (operator kernels, `infwidth.analysis.operators`) would be wrong.

    >>> f = lambda c: value_with_derivatives_of(jnp.minimum(c, 1.0), c)
    >>> float(f(1.0 + 1e-7)), float(jax.grad(f)(1.0 + 1e-7))
    (1.0, 1.0)
    """
    del smooth
    return value


@value_with_derivatives_of.defjvp
def _value_with_derivatives_of_jvp(primals, tangents):
    return value_with_derivatives_of(*primals), tangents[1]


def safe_arctan2(y, x, fill_zero=0.0):
    """``arctan2(y, x)`` that returns ``fill_zero`` (with zero gradient) where ``x == y == 0``.

    >>> float(safe_arctan2(0., 0., fill_zero=1.5)), float(jax.grad(safe_arctan2)(0., 0.))
    (1.5, 0.0)
    """
    both_zero = (x == 0) & (y == 0)
    x_safe = jnp.where(both_zero, 1, x)
    return jnp.where(both_zero, fill_zero, jnp.arctan2(y, x_safe))


@jax.custom_jvp
def ratio(num, den):
    """``num / den`` whose derivative is ``(d num - ratio d den) / den``.

    The derivative of ``/`` that autodiff uses forms ``num / den**2``: ``den**2`` overflows for
    ``den`` below 1e-19 in float32 (the normalized determinants of huge variances are 1e-24)
    and the gradient becomes inf * 0 = NaN although the ratio and its derivative are finite.

    >>> float(jax.grad(ratio, 1)(jnp.float32(1e-24), jnp.float32(1e-24)))
    -1e+24
    """
    return num / den


@ratio.defjvp
def _ratio_jvp(primals, tangents):
    (num, den), (t_num, t_den) = primals, tangents
    out = ratio(num, den)  # (ratio again, so that derivatives of every order keep the form)
    return out, ratio(t_num - out * t_den, den)


def safe_divide(num, den, fill=0.0):
    """``num / den`` that returns ``fill`` (with zero gradient) where ``den == 0``."""
    zero = den == 0
    return jnp.where(zero, fill, num / jnp.where(zero, 1, den))


# Correlations within this many units in the last place of +-1 are taken to be +-1: two
# computations of the covariance of an input with itself (a tile against its copy, a test point
# that is also a training point, two fusions of one formula) differ by a few ulps, and maps with
# an infinite slope at correlation 1 (Sign, the ReLU family's NTK) or deep networks in the
# chaotic phase amplify such a difference layer after layer. The inputs' own rounding makes
# correlations that close to 1 indistinguishable from 1.
SNAP_ULPS = 8


def snap_tolerance(dtype) -> float:
    """The distance from +-1 below which a correlation of this dtype is snapped to +-1."""
    return SNAP_ULPS * float(jnp.finfo(dtype).eps)


def pair_norm(var1, var2):
    """``sqrt(var1 var2)`` without forming the product (no underflow or overflow for variances
    of 1e-30 or 1e30 in float32), and exactly ``var`` when ``var1 == var2 == var``.

    >>> float(pair_norm(jnp.float32(1e-30), jnp.float32(4e-30)))
    2e-30
    """
    product = safe_sqrt(var1) * safe_sqrt(var2)
    return value_with_derivatives_of(jnp.where(var1 == var2, var1, product), product)


def consistent_covariance(cov12, var1, var2):
    """``cov12`` brought into ``[-sqrt(var1 var2), sqrt(var1 var2)]`` (Cauchy-Schwarz) and set
    to exactly ``+-sqrt(var1 var2)`` where the correlation is within `snap_tolerance` of +-1.

    This is the one place where rounding is kept from turning identical inputs into different
    ones; every elementwise nonlinearity applies it before its dual-kernel formula. NaN stays
    NaN (and only in its own rows and columns).

    >>> one = jnp.float32(1.0)
    >>> float(consistent_covariance(one * (1 - 3e-7), one, one))  # rounding: exactly 1
    1.0
    >>> float(consistent_covariance(one * 0.5, one, one))  # a real correlation: unchanged
    0.5
    """
    norm = pair_norm(var1, var2)
    near = jnp.abs(cov12) >= (1 - snap_tolerance(jnp.result_type(cov12))) * norm
    return value_with_derivatives_of(jnp.where(near, jnp.where(cov12 < 0, -norm, norm), cov12),
                                     cov12)


def clipped_correlation(cov12, var1, var2):
    """``cov12 / sqrt(var1 var2)`` clipped to [-1, 1], +-1 within `snap_tolerance`, and 0 where a
    variance is zero. Divides by each standard deviation in turn, so neither the value nor its
    gradient under- or overflows for tiny or huge variances.

    >>> float(clipped_correlation(jnp.float32(1e-20), jnp.float32(1e-20), jnp.float32(1e-20)))
    1.0
    """
    corr = safe_divide(safe_divide(cov12, safe_sqrt(var1)), safe_sqrt(var2))
    tol = snap_tolerance(jnp.result_type(corr))
    snapped = jnp.where(jnp.abs(corr) >= 1 - tol,
                        jnp.where(corr < 0, -1.0, 1.0).astype(corr.dtype), corr)
    return value_with_derivatives_of(snapped, corr)


def normalized_quadratic(cov12, var1, var2, scale):
    """The determinant ``(1 + s var1)(1 + s var2) - s**2 cov12**2`` of ``I + s Sigma`` (the
    quadratic form in the dual kernels of Erf, GELU, Gabor and the Gaussian) in units that
    neither overflow nor cancel: returns ``(e1, e2, t1, t2, w)`` with

        e_i = 1 / (1 + s var_i),   t_i = s var_i e_i = 1 - e_i,
        w   = det / ((1 + s var1)(1 + s var2)) = (1 - rho**2) t1 t2 + e1 + e2 (1 - e1)

    (``rho`` the clipped correlation). Without forming ``var1 var2`` (1e48 for float32
    variances of 1e24, beyond the float32 range) or subtracting two such products, ``w`` is
    exact to rounding at every scale, ``e1 + e2 (1 - e1) > 0`` keeps it positive for ``s > 0``,
    and as the variances grow the kernels tend to their saturated limits (Erf to Sign).

    >>> e1, e2, t1, t2, w = normalized_quadratic(jnp.float32(1e24), jnp.float32(1e24),
    ...                                          jnp.float32(1e24), 2.0)
    >>> float(t1), float(w) > 0
    (1.0, True)
    """
    rho = clipped_correlation(cov12, var1, var2)
    abs_rho = jnp.abs(rho)
    gap = value_with_derivatives_of((1 - abs_rho) * (1 + abs_rho), 1 - rho * rho)
    # t = s var / (1 + s var) rather than s var e: its reverse-mode cotangents stay of the size
    # of the result (s var e would pass one of size s var through e)
    sv1, sv2 = scale * var1, scale * var2
    e1, e2 = ratio(1.0, 1 + sv1), ratio(1.0, 1 + sv2)
    t1, t2 = ratio(sv1, 1 + sv1), ratio(sv2, 1 + sv2)
    return e1, e2, t1, t2, gap * t1 * t2 + e1 + e2 * (1 - e1)


# Abramowitz & Stegun, Handbook of Mathematical Functions, 4.4.46: on [0, 1],
# arccos(x) = sqrt(1 - x) * sum_k a_k x^k with absolute error below 2e-8.
_ACOS_COEFFS = (1.5707963050, -0.2145988016, 0.0889789874, -0.0501743046, 0.0308918810,
                -0.0170881256, 0.0066700901, -0.0012624911)


def arccos(x):
    """``arccos`` of a correlation in [-1, 1] with finite gradients at +-1.

    In float64 it is exact (``arctan2(sqrt(1 - x**2), x)``). In lower precision it uses the
    degree-7 polynomial of Abramowitz & Stegun 4.4.46 (absolute error < 2e-8, below float32
    rounding), which is several times faster than ``arctan2`` on CPUs and GPUs.

    >>> round(float(arccos(0.5)), 5), round(float(arccos(-1.)), 5)  # pi/3, pi
    (1.0472, 3.14159)
    """
    x = jnp.asarray(x)
    if x.dtype == jnp.float64:
        return safe_arctan2(safe_sqrt(1 - x * x), x, fill_zero=jnp.pi / 2)
    ax = jnp.abs(x)
    poly = _ACOS_COEFFS[-1]
    for a in _ACOS_COEFFS[-2::-1]:
        poly = poly * ax + a
    half = safe_sqrt(1 - ax) * poly
    return jnp.where(x < 0, jnp.pi - half, half)
