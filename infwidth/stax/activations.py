"""Nonlinearities with closed-form NNGP and NTK maps.

Each activation here only states its dual kernel; `elementwise` does the rest.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from .._numerics import (
    arccos,
    clipped_correlation,
    normalized_quadratic,
    pair_norm,
    ratio,
    safe_sqrt,
)
from ._layer import Layer
from .elementwise import elementwise


def _as_float(value, arg, layer):
    """A hyperparameter as a float; traced values pass through so kernels can be
    differentiated with respect to them (``jax.grad``)."""
    if isinstance(value, jax.core.Tracer):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{layer}({arg}={value!r}): {arg} must be a number.") from None


def _equal_numbers(a, b) -> bool:
    """``a == b`` for two concrete numbers; False if either is traced."""
    return isinstance(a, float) and isinstance(b, float) and a == b


def _as_degree(value, layer, max_degree=None):
    """A non-negative integer degree, or a ValueError naming the layer."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 0
          and (max_degree is None or value <= max_degree))
    if not ok:
        upto = "" if max_degree is None else f" at most {max_degree}"
        raise ValueError(f"{layer}(degree={value!r}): degree must be a non-negative "
                         f"integer{upto}.")
    return int(value)


def _correlation(cov12, var1, var2):
    """``(sqrt(var1 var2), cov12 / sqrt(var1 var2))``: the norm is exactly ``var`` when
    ``var1 == var2 == var``, the correlation is clipped to [-1, 1], exactly +-1 within rounding
    of it and 0 where an input is zero; neither forms ``var1 * var2``, so variances of 1e-30 or
    1e30 neither underflow nor overflow in float32 (see `infwidth._numerics`).
    """
    return pair_norm(var1, var2), clipped_correlation(cov12, var1, var2)


def abrelu_dual(a: float, b: float):
    """``(nngp_fn, d_nngp_fn)``: the dual kernel of ``a * min(x, 0) + b * max(x, 0)``, the
    arc-cosine formulas of `ABRelu`, as functions of ``(cov12, var1, var2)`` (broadcasting)."""
    factor = (a - b) ** 2 / (2 * math.pi)
    mean_sq = (a**2 + b**2) / 2

    def angle_terms(cov12, var1, var2):
        # var1 and var2 broadcast against cov12 (outer shapes), so the square roots and
        # reciprocals are taken on the small factors before they are combined.
        norm, corr = _correlation(cov12, var1, var2)
        sin_norm = norm * safe_sqrt(1 - corr * corr)
        theta = arccos(corr)  # pi / 2 where an input is zero, as in neural-tangents
        return sin_norm, mean_sq - factor * theta

    def nngp_fn(cov12, var1, var2):
        sin_norm, dot = angle_terms(cov12, var1, var2)
        return factor * sin_norm + dot * cov12

    def d_nngp_fn(cov12, var1, var2):
        return angle_terms(cov12, var1, var2)[1]

    return nngp_fn, d_nngp_fn


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    """``a * min(x, 0) + b * max(x, 0)``: the family holding ReLU, leaky ReLU and abs.

    With ``theta`` the angle between the two inputs (``cos theta = cov12 / sqrt(var1 var2)``),
    the dual kernel is the arc-cosine kernel of degree 1 (Cho & Saul 2009, "Kernel methods for
    deep learning")::

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
    nngp_fn, d_nngp_fn = abrelu_dual(a, b)

    def fn(x):
        return a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0)

    return elementwise(fn, name, nngp_fn, d_nngp_fn, diag_fn=lambda var: (a**2 + b**2) / 2 * var,
                       smoothness=math.inf if _equal_numbers(a, b) else 0,
                       family="ABRelu", hparams={"a": a, "b": b})


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

    def parts(cov12, var1, var2):
        # in units of sqrt(P) = sqrt((1 + 2 b^2 var1)(1 + 2 b^2 var2)) (`normalized_quadratic`):
        # sqrt(w) is the arcsine's cosine at every scale; for huge variances the kernel tends
        # to Sign's
        e1, e2, _, _, w = normalized_quadratic(cov12, var1, var2, 2 * b2)
        return e1, e2, safe_sqrt(w)

    def nngp_fn(cov12, var1, var2):
        # the argument 2 b^2 cov12 / sqrt(P) = rho sqrt(t1 t2), written with cov12 itself so
        # that the derivative in cov12 is right at a zero input too
        e1, e2, root = parts(cov12, var1, var2)
        angle = jnp.arctan2(2 * b2 * cov12 * safe_sqrt(e1) * safe_sqrt(e2), root)
        return a**2 * (2 / math.pi) * angle + c**2

    def d_nngp_fn(cov12, var1, var2):
        e1, e2, root = parts(cov12, var1, var2)
        return ratio(a**2 * b2 * (4 / math.pi) * safe_sqrt(e1) * safe_sqrt(e2), root)

    def fn(x):
        return a * erf(b * x) + c

    # the variances map by nngp_fn(var, var, var) (a closed form in var, such as
    # arctan2(2 b^2 var, sqrt(1 + 4 b^2 var)), squares var in its derivative: 1e48 in float32)
    return elementwise(fn, name, nngp_fn, d_nngp_fn)


def Sign() -> Layer:
    """``sign(x)``, whose dual kernel is the arc-cosine kernel of degree 0 (Cho & Saul 2009):

        E[sign(u) sign(v)] = 1 - 2 theta / pi = 2/pi * arcsin(cov12 / sqrt(var1 var2))

    The derivative of ``sign`` is zero except at 0, so, as in neural-tangents, the NTK of the
    layer's inputs does not pass through it (``E[phi'(u) phi'(v)] = 0``). A zero input has
    ``sign(0) = 0``, so its variance maps to 0.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Sign())
      >>> kernel_fn(jnp.array([[1., 0.], [1., 1.]]), get='nngp').round(4).tolist()
      [[1.0, 0.5], [0.5, 1.0]]
    """

    def nngp_fn(cov12, var1, var2):
        corr = _correlation(cov12, var1, var2)[1]
        return 1 - (2 / math.pi) * arccos(corr)

    def d_nngp_fn(cov12, var1, var2):
        return jnp.zeros_like(cov12 * var1 * var2)

    def diag_fn(var):
        return jnp.where(var == 0, 0.0, 1.0).astype(var.dtype)

    return elementwise(jnp.sign, "Sign", nngp_fn, d_nngp_fn, diag_fn, smoothness=-1)


def Sigmoid_like() -> Layer:
    """A sigmoid-shaped erf, ``0.5 * erf(x / 2.4020563531719796) + 0.5``: `Erf(0.5, 1 / 2.40...,
    0.5)`, with the constant of neural-tangents (a least-squares fit to the logistic sigmoid on
    [-5, 5]). For the logistic sigmoid itself see `Sigmoid`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Sigmoid_like())
      >>> round(float(kernel_fn(jnp.zeros((1, 2)), get='nngp')[0, 0]), 6)  # phi(0)**2
      0.25
    """
    return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


def Gelu(approximate: bool = False) -> Layer:
    """GELU, ``x * Phi(x)`` with ``Phi`` the standard normal CDF.

    The dual kernel (Tsuchida et al. 2021, "Avoiding kernel fixed points: computing with ELU and
    GELU infinite networks", arXiv:2002.08517), derived by Stein's lemma from
    ``E[Phi(u) Phi(v)] = 1/4 + arcsin(cov12 / sqrt(P)) / (2 pi)``: with
    ``P = (1 + var1)(1 + var2)`` and ``D = P - cov12**2`` (always >= 1),

        E[phi(u) phi(v)]   = cov12 / 4 + cov12 A / (2 pi) + (var1 var2 D + cov12**2)
                                                             / (2 pi P sqrt(D))
        E[phi'(u) phi'(v)] = 1/4 + A / (2 pi) + cov12 / (2 pi sqrt(D))
                             + cov12 ((2 - var1 var2) D + cov12**2) / (2 pi P D**1.5)

    where ``A = arctan2(cov12, sqrt(D)) = arcsin(cov12 / sqrt(P))``. As in neural-tangents,
    ``approximate=True`` only changes the finite network (``apply_fn`` uses the tanh
    approximation of Hendrycks & Gimpel 2016, arXiv:1606.08415); the kernel is the exact one.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Gelu())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 6)
      0.425222
    """
    if not isinstance(approximate, bool):
        raise TypeError(f"Gelu(approximate={approximate!r}): approximate must be True or False.")

    def parts(cov12, var1, var2):
        # in units of sqrt(P) (`normalized_quadratic`, s = 1): D = P w, r = cov12 / sqrt(P),
        # nothing of the size var1 var2 is formed, and e_i = 1 / (1 + var_i) -> 0 as the
        # variances grow, where the maps tend to ReLU's
        e1, e2, t1, t2, w = normalized_quadratic(cov12, var1, var2, 1.0)
        sqrt_e = safe_sqrt(e1) * safe_sqrt(e2)
        r = cov12 * safe_sqrt(e1) * safe_sqrt(e2)
        root = safe_sqrt(w)
        return e1, e2, t1, t2, w, sqrt_e, r, root, jnp.arctan2(r, root)

    def nngp_fn(cov12, var1, var2):
        # (var1 var2 D + cov12**2) / (P sqrt(D)) = sqrt(var1 var2) sqrt(t1 t2) sqrt(w)
        #                                          + r**2 sqrt(e1 e2) / sqrt(w)
        _, _, t1, t2, w, sqrt_e, r, root, angle = parts(cov12, var1, var2)
        scale = pair_norm(var1, var2) * safe_sqrt(t1) * safe_sqrt(t2)
        return (cov12 / 4 + cov12 * angle / (2 * math.pi)
                + (scale * root + ratio(r * r * sqrt_e, root)) / (2 * math.pi))

    def d_nngp_fn(cov12, var1, var2):
        # cov12 / sqrt(D) = r / sqrt(w); cov12 ((2 - var1 var2) D + cov12**2) / (P D**1.5)
        #   = r (2 e1 e2 - t1 t2 + r**2 e1 e2 / w) / sqrt(w), with 1 - t1 t2 = e1 + e2 - e1 e2
        e1, e2, _, _, w, _, r, root, angle = parts(cov12, var1, var2)
        e12 = e1 * e2
        return (0.25 + angle / (2 * math.pi)
                + ratio(r * (e1 + e2 + e12 + ratio(r * r * e12, w)), 2 * math.pi * root))

    def fn(x):
        return jax.nn.gelu(x, approximate=approximate)

    return elementwise(fn, "Gelu", nngp_fn, d_nngp_fn)  # variances by nngp_fn, as Erf


def _relu_moment(b: int) -> float:
    """``E[max(w, 0)**b]`` for a standard normal ``w`` (with ``max(w, 0)**0 = [w >= 0]``)."""
    return 0.5 if b == 0 else 0.5 * 2 ** (b / 2) * math.gamma((b + 1) / 2) / math.sqrt(math.pi)


def _rectified_moments(corr, degree: int):
    """``E[relu(z1)**degree relu(z2)**degree]`` for unit normals with correlation ``corr``.

    With ``f_a = relu**a`` and ``m(a, b) = E[f_a(z1) f_b(z2)]``, Gaussian integration by parts
    (``E[z1 g(z1, z2)] = E[d1 g] + corr E[d2 g]``) applied to ``f_a = z1 f_{a-1}`` gives

        m(a, b) = (a - 1) m(a - 2, b) + corr * b * m(a - 1, b - 1)

    where a term with a delta function (the derivative of ``f_0``) is replaced by its value,
    ``E[delta(z1) f_b(z2)] = s**b E[f_b] / sqrt(2 pi)`` with ``s = sqrt(1 - corr**2)``; and
    ``m(0, 0) = (pi - arccos(corr)) / (2 pi)``. This spells out the arc-cosine kernel ``J_n`` of
    Cho & Saul 2009 without the ``1 / sin(theta)`` factors of its derivative form, so values and
    gradients stay finite at ``corr = +-1``.
    """
    s = safe_sqrt(1 - corr * corr)
    c0 = 1 / math.sqrt(2 * math.pi)

    @functools.cache
    def s_pow(n):
        return jnp.ones_like(s) if n == 0 else s_pow(n - 1) * s

    @functools.cache
    def m(a, b):
        if a < b:
            return m(b, a)
        if a == 0:
            return (math.pi - arccos(corr)) / (2 * math.pi)
        first = (a - 1) * m(a - 2, b) if a >= 2 else c0 * _relu_moment(b) * s_pow(b)
        second = b * m(a - 1, b - 1) if b >= 1 else c0 * _relu_moment(a - 1) * s_pow(a - 1)
        return first + corr * second

    return m(degree, degree)


def RectifiedMonomial(degree: int) -> Layer:
    """``(x >= 0) * x**degree``, whose dual kernel is the arc-cosine kernel of order ``degree``
    (Cho & Saul 2009, "Kernel methods for deep learning"):

        E[phi(u) phi(v)]   = (var1 var2)**(degree / 2) * J_degree(theta) / (2 pi)
        E[phi'(u) phi'(v)] = degree**2 * E[relu(u)**(degree-1) relu(v)**(degree-1)]

    (the second by Price's theorem; 0 for ``degree=0``, whose derivative is a delta, as in
    neural-tangents). ``J_n`` is evaluated by a recursion over Gaussian moments that stays finite
    at ``theta = 0, pi``; see ``_rectified_moments``. ``degree=1`` is `Relu`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.RectifiedMonomial(2))
      >>> float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0])  # E[relu(u)**4] = 3/2
      1.5
    """
    name = f"RectifiedMonomial({degree})"
    degree = _as_degree(degree, "RectifiedMonomial")

    def scaled_moment(cov12, var1, var2, n):
        # norm**n * J_n: where the network's covariances outgrew the float range (deep
        # networks: the variance map is var -> c var**degree), an infinite covariance has lost
        # its correlation, but J_n > 0 for any correlation above -1, so the value is inf; and
        # J_n = 0 (correlation -1) is exactly 0 however large the norm (not inf * 0 = NaN)
        norm, corr = _correlation(cov12, var1, var2)
        corr = jnp.where(jnp.isposinf(cov12), 1.0, corr).astype(corr.dtype)
        moment = _rectified_moments(corr, n)
        return jnp.where(moment == 0, 0.0, norm**n * moment).astype(moment.dtype)

    def nngp_fn(cov12, var1, var2):
        return scaled_moment(cov12, var1, var2, degree)

    def d_nngp_fn(cov12, var1, var2):
        if degree == 0:
            return jnp.zeros_like(cov12 * var1 * var2)
        return degree**2 * scaled_moment(cov12, var1, var2, degree - 1)

    def diag_fn(var):
        return math.prod(range(2 * degree - 1, 0, -2)) * var**degree / 2

    def fn(x):
        return jnp.where(x >= 0, x**degree, 0.0).astype(jnp.result_type(x, float))

    return elementwise(fn, name, nngp_fn, d_nngp_fn, diag_fn, smoothness=degree - 1)
