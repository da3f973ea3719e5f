"""Nonlinearities built from exponentials: `Sin`, `Cos`, `Rbf`, `Gabor`, `Gaussian`, `Exp`,
`ExpNormalized`.

Their dual kernels follow from the Gaussian characteristic function and moment generating
function: for a centred Gaussian pair ``(u, v)`` with variances ``var1``, ``var2`` and covariance
``cov12``, ``E[exp(i (s u + t v))] = exp(-(s**2 var1 + 2 s t cov12 + t**2 var2) / 2)``, and
``E[exp(-(u**2 + v**2))] = det(I + 2 Sigma)**-1/2``. The NTK maps are the derivatives in
``cov12`` (Price's theorem).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._numerics import normalized_quadratic, ratio, safe_sqrt
from ._layer import Layer
from .activations import _as_float, _correlation
from .elementwise import elementwise


def _sin_layer(a, b, c, name: str) -> Layer:
    half_a2 = a**2 / 2
    b2 = b**2
    cos2c = jnp.cos(2 * c)

    def both(cov12, var1, var2):
        total = var1 + var2
        return jnp.exp(b2 * (cov12 - total / 2)), cos2c * jnp.exp(-b2 * (cov12 + total / 2))

    def nngp_fn(cov12, var1, var2):
        same, opposite = both(cov12, var1, var2)
        return half_a2 * (same - opposite)

    def d_nngp_fn(cov12, var1, var2):
        same, opposite = both(cov12, var1, var2)
        return half_a2 * b2 * (same + opposite)

    def diag_fn(var):
        return half_a2 * (1 - cos2c * jnp.exp(-2 * b2 * var))

    def fn(x):
        return a * jnp.sin(b * x + c)

    return elementwise(fn, name, nngp_fn, d_nngp_fn, diag_fn)


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """``a * sin(b * x + c)``. With ``sin x sin y = (cos(x - y) - cos(x + y)) / 2`` and the
    Gaussian characteristic function (e.g. Pearce et al. 2019, arXiv:1905.06076):

        E[phi(u) phi(v)]   = a**2 / 2 * (exp(-b**2 (var1 + var2 - 2 cov12) / 2)
                                         - cos(2 c) exp(-b**2 (var1 + var2 + 2 cov12) / 2))
        E[phi'(u) phi'(v)] = a**2 b**2 / 2 * (exp(-b**2 (var1 + var2 - 2 cov12) / 2)
                                              + cos(2 c) exp(-b**2 (var1 + var2 + 2 cov12) / 2))

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Sin())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 6)  # (1 - e^-2) / 2
      0.432332
    """
    a, b, c = (_as_float(v, n, "Sin") for v, n in ((a, "a"), (b, "b"), (c, "c")))
    return _sin_layer(a, b, c, f"Sin({a}, {b}, {c})")


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """``a * cos(b * x + c)``: `Sin` with the phase ``c + pi / 2``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Cos())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 6)  # (1 + e^-2) / 2
      0.567668
    """
    a, b, c = (_as_float(v, n, "Cos") for v, n in ((a, "a"), (b, "b"), (c, "c")))
    return _sin_layer(a, b, c + math.pi / 2, f"Cos({a}, {b}, {c})")


def Rbf(gamma: float = 1.0) -> Layer:
    """``sqrt(2) sin(sqrt(2 gamma) x + pi / 4)``, whose NNGP map is the squared-exponential
    (RBF) kernel of the pre-activations (random Fourier features, Rahimi & Recht 2007):

        E[phi(u) phi(v)]   = exp(-gamma (var1 + var2 - 2 cov12))
        E[phi'(u) phi'(v)] = 2 gamma exp(-gamma (var1 + var2 - 2 cov12))

    so after ``Dense(W_std=1)`` on inputs of dimension ``d`` it is ``exp(-gamma / d |x - x'|^2)``;
    ``gamma = 1 / (2 l**2)`` for a length-scale ``l``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Rbf(0.5))
      >>> x = jnp.array([[0., 0.], [1., 1.]])
      >>> kernel_fn(x, get='nngp').round(4).tolist()  # exp(-0.5 * |x - x'|^2 / 2)
      [[1.0, 0.6065], [0.6065, 1.0]]
    """
    gamma = _as_float(gamma, "gamma", "Rbf")
    if not isinstance(gamma, jax.core.Tracer) and not gamma > 0:
        raise ValueError(f"Rbf(gamma={gamma!r}): gamma must be positive (the kernel is "
                         f"exp(-gamma |x - x'|^2 / d)).")

    def nngp_fn(cov12, var1, var2):
        return jnp.exp(gamma * (2 * cov12 - var1 - var2))

    def d_nngp_fn(cov12, var1, var2):
        return 2 * gamma * nngp_fn(cov12, var1, var2)

    def fn(x):
        return math.sqrt(2) * jnp.sin(jnp.sqrt(2 * gamma) * x + math.pi / 4)

    return elementwise(fn, f"Rbf({gamma})", nngp_fn, d_nngp_fn, diag_fn=jnp.ones_like)


def Gabor() -> Layer:
    """The Gabor function ``exp(-x**2) sin(x)``.

    Completing the square in ``E[exp(-(u**2 + v**2)) cos(u -+ v)]``: with
    ``D = det(I + 2 Sigma) = 1 + 2 (var1 + var2) + 4 (var1 var2 - cov12**2)``,

        E[phi(u) phi(v)] = (exp(-(Q - 2 cov12) / (2 D)) - exp(-(Q + 2 cov12) / (2 D)))
                           / (2 sqrt(D)),    Q = var1 + var2 + 4 (var1 var2 - cov12**2)

    (the expectation of ``exp(-x.x) exp(i t.x)`` under ``N(0, Sigma)``, with ``t = (1, -+1)``)
    and the NTK map is its derivative in ``cov12`` (Price's theorem), in closed form.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Gabor())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 6)  # (1 - e^-2/5)/(2 sqrt 5)
      0.073719
    """

    def parts(cov12, var1, var2):
        # the two exponentials are exp(-1/2 + M +- c / D) with M = (1 + var1 + var2) / (2 D):
        # their difference is 2 exp(M - 1/2) sinh(c / D), written in units of
        # (1 + 2 var1)(1 + 2 var2) (`normalized_quadratic`, s = 2), so that D = p1 p2 w
        # neither overflows nor cancels and the sinh keeps digits the difference would lose
        e1, e2, t1, t2, w = normalized_quadratic(cov12, var1, var2, 2.0)
        m = ratio(e1 * e2 + (t1 * e2 + t2 * e1) / 2, 2 * w)
        inv_d = ratio(e1, w) * e2  # 1 / D
        delta = cov12 * inv_d
        scale = jnp.exp(m - 0.5) * ratio(safe_sqrt(e1) * safe_sqrt(e2), safe_sqrt(w))
        return m, inv_d, delta, scale

    def nngp_fn(cov12, var1, var2):
        _, _, delta, scale = parts(cov12, var1, var2)
        return scale * jnp.sinh(delta)

    def d_nngp_fn(cov12, var1, var2):
        # d/dc with dD/dc = -8 c: dM/dc = 8 c M / D, d(c/D)/dc = 1/D + 8 c^2 / D^2,
        # d(D**-1/2)/dc = 4 c D**-1.5
        m, inv_d, delta, scale = parts(cov12, var1, var2)
        return scale * (jnp.sinh(delta) * 4 * delta * (2 * m + 1)
                        + jnp.cosh(delta) * (inv_d + 8 * delta * delta))

    def diag_fn(var):
        d = 1 + 4 * var
        return (1 - jnp.exp(-2 * var / d)) / (2 * jnp.sqrt(d))

    def fn(x):
        return jnp.exp(-x * x) * jnp.sin(x)

    return elementwise(fn, "Gabor", nngp_fn, d_nngp_fn, diag_fn)


def Gaussian(a: float = 1, b: float = -1) -> Layer:
    """``a * exp(b * x**2)``. The Gaussian integral gives::

        E[phi(u) phi(v)]   = a**2 / sqrt((1 - 2 b var1)(1 - 2 b var2) - 4 b**2 cov12**2)
        E[phi'(u) phi'(v)] = 4 a**2 b**2 cov12 / ((1 - 2 b var1)(1 - 2 b var2)
                                                 - 4 b**2 cov12**2)**1.5

    For ``b > 0`` the expectation is infinite once ``4 b var >= 1`` (the result is ``inf``).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Gaussian())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 6)  # 1 / sqrt(5)
      0.447214
    """
    a, b = _as_float(a, "a", "Gaussian"), _as_float(b, "b", "Gaussian")
    a2 = a**2

    def parts(cov12, var1, var2):
        # det(I - 2 b Sigma) = q1 q2 w, q_i = 1 - 2 b var_i (`normalized_quadratic`, s = -2 b):
        # no product of two variances is formed, so float32 variances of 1e24 give the kernel
        _, _, _, _, w = normalized_quadratic(cov12, var1, var2, -2 * b)
        return 1 - 2 * b * var1, 1 - 2 * b * var2, w

    def nngp_fn(cov12, var1, var2):
        q1, q2, w = parts(cov12, var1, var2)
        return ratio(ratio(a2, safe_sqrt(q1) * safe_sqrt(q2)), safe_sqrt(w))

    def d_nngp_fn(cov12, var1, var2):
        # 4 a^2 b^2 cov12 / (q1 q2 w)**1.5, divided in an order that stays within range
        q1, q2, w = parts(cov12, var1, var2)
        scaled = ratio(ratio(ratio(cov12, q1), q2), w)
        return ratio(4 * a2 * b**2 * scaled, safe_sqrt(q1) * safe_sqrt(q2) * safe_sqrt(w))

    def diag_fn(var):
        return a2 / safe_sqrt(1 - 4 * b * var)

    def fn(x):
        return a * jnp.exp(b * x * x)

    return elementwise(fn, f"Gaussian({a}, {b})", nngp_fn, d_nngp_fn, diag_fn)


def Exp(a: float = 1, b: float = 1) -> Layer:
    """``a * exp(b * x)``. By the Gaussian moment generating function

        E[phi(u) phi(v)]   = a**2 exp(b**2 ((var1 + var2) / 2 + cov12))
        E[phi'(u) phi'(v)] = a**2 b**2 exp(b**2 ((var1 + var2) / 2 + cov12))

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Exp(b=0.5))
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 6)  # e^(1/2)
      1.648721
    """
    a, b = _as_float(a, "a", "Exp"), _as_float(b, "b", "Exp")
    a2, b2 = a**2, b**2

    def nngp_fn(cov12, var1, var2):
        return a2 * jnp.exp(b2 * ((var1 + var2) / 2 + cov12))

    def d_nngp_fn(cov12, var1, var2):
        return b2 * nngp_fn(cov12, var1, var2)

    def diag_fn(var):
        return a2 * jnp.exp(2 * b2 * var)

    def fn(x):
        return a * jnp.exp(b * x)

    return elementwise(fn, f"Exp({a}, {b})", nngp_fn, d_nngp_fn, diag_fn)


def ExpNormalized(gamma: float = 1, shift: float = -1, do_clip: bool = False) -> Layer:
    """The normalized Gaussian kernel of Shankar et al. 2020 ("Neural kernels without
    tangents", arXiv:2003.02237, p. 6), as a kernel map with no finite-width counterpart:

        nngp' = sqrt(var1 var2) exp(gamma (rho + shift)),   rho = cov12 / sqrt(var1 var2)
        d nngp' / d cov12 = gamma exp(gamma (rho + shift))

    ``do_clip=True`` clips ``rho`` to [-1, 1]. A zero input gives 0. ``apply_fn`` raises
    ``NotImplementedError``, as in neural-tangents.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.ExpNormalized())
      >>> kernel_fn(jnp.array([[1., 0.], [0., 1.]]), get='nngp').round(4).tolist()
      [[0.5, 0.1839], [0.1839, 0.5]]
    """
    gamma = _as_float(gamma, "gamma", "ExpNormalized")
    shift = _as_float(shift, "shift", "ExpNormalized")
    if not isinstance(do_clip, bool):
        raise TypeError(f"ExpNormalized(do_clip={do_clip!r}): do_clip must be True or False.")

    def parts(cov12, var1, var2):
        # the covariances reaching an activation obey Cauchy-Schwarz (see `elementwise`), so
        # the correlation is within [-1, 1] whether or not do_clip asks for it
        norm, corr = _correlation(cov12, var1, var2)
        return norm, jnp.exp(gamma * (corr + shift))

    def nngp_fn(cov12, var1, var2):
        norm, e = parts(cov12, var1, var2)
        return norm * e

    def d_nngp_fn(cov12, var1, var2):
        return gamma * parts(cov12, var1, var2)[1]

    def diag_fn(var):
        return var * jnp.exp(gamma * (1 + shift))

    def fn(x):
        raise NotImplementedError("ExpNormalized: there is no finite-width network for this "
                                  "kernel map; use kernel_fn only.")

    return elementwise(fn, f"ExpNormalized({gamma}, {shift}, {do_clip})", nngp_fn, d_nngp_fn,
                       diag_fn)
