"""Activations without a closed-form kernel: user-supplied dual kernels (`Elementwise`) and
two-dimensional Gauss-Hermite quadrature (`ElementwiseNumerical`), with the common activations
neural-tangents never had (`Tanh`, `Sigmoid`, `Silu`, `Softplus`, `Elu`, `Selu`, `Mish`) built
on it.

Quadrature (Han et al. 2022, "Fast neural kernel embeddings for general activations",
arXiv:2209.04121): with Gauss-Hermite nodes ``x_i`` and weights ``w_i`` (weight ``exp(-x**2)``),
write the Gaussian pair as ``u = sqrt(2 var1) x``, ``v = sqrt(2) (cov12 / sqrt(var1) x +
sqrt(var2 - cov12**2 / var1) y)`` (a Cholesky factor), so

    E[f(u) f(v)] ~= sum_ij w_i w_j f(u_i) f(v_ij) / pi.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import clipped_correlation, safe_sqrt
from ._layer import Layer, check_positive_int
from .activations import _as_float
from .elementwise import elementwise


def _not_given(what: str, layer: str):
    def raiser(*args, **kwargs):
        raise NotImplementedError(f"{layer}: no {what} was given, so this function is not "
                                  f"available; pass it to {layer}(...).")

    return raiser


def Elementwise(fn: Callable | None = None, nngp_fn: Callable | None = None,
                d_nngp_fn: Callable | None = None) -> Layer:
    """An activation ``fn`` with a user-supplied dual kernel, as neural-tangents'
    `stax.Elementwise` (Han et al. 2022, arXiv:2209.04121).

    Args:
      fn: the activation ``R -> R``; without it ``apply_fn`` raises ``NotImplementedError``.
      nngp_fn: ``(cov12, var1, var2) -> E[fn(u) fn(v)]`` for a centred Gaussian pair with those
        (co)variances, written for scalars (it is vectorized); without it ``kernel_fn`` raises
        ``NotImplementedError``.
      d_nngp_fn: ``(cov12, var1, var2) -> E[fn'(u) fn'(v)]``; when omitted it is the derivative
        of ``nngp_fn`` in ``cov12`` by autodiff (Price's theorem). Give it if ``nngp_fn`` has a
        square root or arcsine that is not differentiable at ``|cov12| = sqrt(var1 var2)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax.scipy.special import erf
      >>> from infwidth import stax
      >>> def nngp_fn(cov12, var1, var2):  # Williams 1997
      ...     return 2 / jnp.pi * jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2)))
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Elementwise(erf, nngp_fn))
      >>> _, _, erf_kernel_fn = stax.serial(stax.Dense(1), stax.Erf())
      >>> x = jnp.array([[1., 0.], [1., 2.]])
      >>> bool(jnp.allclose(kernel_fn(x, get='ntk'), erf_kernel_fn(x, get='ntk'), atol=1e-6))
      True
    """
    if fn is None and nngp_fn is None:
        raise ValueError("Elementwise(fn=None, nngp_fn=None): give the activation fn, its dual "
                         "kernel nngp_fn(cov12, var1, var2), or both.")
    for arg, f in (("fn", fn), ("nngp_fn", nngp_fn), ("d_nngp_fn", d_nngp_fn)):
        if f is not None and not callable(f):
            raise TypeError(f"Elementwise({arg}={f!r}): {arg} must be a function or None.")
    name = getattr(fn if fn is not None else nngp_fn, "__name__", "fn")
    layer = f"Elementwise({name})"
    if fn is None:
        fn = _not_given("fn", layer)
    if nngp_fn is None:
        nngp_map = d_map = _not_given("nngp_fn", layer)
    else:
        nngp_map = jnp.vectorize(nngp_fn)
        d_map = jnp.vectorize(jax.grad(nngp_fn) if d_nngp_fn is None else d_nngp_fn)
    return elementwise(fn, layer, nngp_map, d_map)


def _elementwise_derivative(fn: Callable) -> Callable:
    """``x -> fn'(x)`` elementwise, by forward-mode autodiff."""

    def df(x):
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    return df


def gauss_hermite(deg: int):
    """Gauss-Hermite nodes and weights (weight ``exp(-x**2)``).

    numpy's ``hermgauss`` overflows to NaN weights beyond about 370 nodes; there the nodes and
    weights come from the eigen-decomposition of the Jacobi matrix (Golub & Welsch 1969), whose
    extreme weights underflow to 0 instead.

    >>> x, w = gauss_hermite(500)
    >>> bool(np.isfinite(w).all()), round(float(w @ x**2), 6)  # sqrt(pi) / 2
    (True, 0.886227)
    """
    with np.errstate(all="ignore"):
        nodes, weights = np.polynomial.hermite.hermgauss(deg)
    if np.isfinite(weights).all() and np.isfinite(nodes).all():
        return nodes, weights
    off = np.sqrt(np.arange(1, deg) / 2)
    nodes, vectors = np.linalg.eigh(np.diag(off, 1) + np.diag(off, -1))
    return nodes, np.sqrt(np.pi) * vectors[0] ** 2


def _closes_over_tracers(fn: Callable, dtype) -> bool:
    """Whether ``fn`` closes over a traced value (a hyperparameter under jit or grad)."""
    _, consts = jax.closure_convert(fn, jnp.zeros((), dtype))
    return any(isinstance(c, jax.core.Tracer) for c in consts)


def quadrature_maps(fn: Callable, deg: int, df: Callable | None = None, *,
                    price_derivatives: bool = True):
    """The NNGP, derivative and diagonal maps of ``fn`` by ``deg x deg`` Gauss-Hermite
    quadrature (see the module docstring); ``df`` defaults to autodiff of ``fn``.

    The derivatives of ``E[f(u) g(v)]`` in ``(cov12, var1, var2)`` are quadratures too (with
    ``deg / 4`` more nodes per derivative: the integrands sharpen), by Price's theorem:
    ``E[f'(u) g'(v)]``, ``E[f''(u) g(v)] / 2`` and ``E[f(u) g''(v)] / 2``
    (Price 1958, "A useful theorem for nonlinear devices having Gaussian inputs"). Autodiff
    through the Cholesky factor would instead meet ``sqrt(var2 - cov12**2 / var1)`` at 0 for an
    input paired with itself and drop the terms that make the kernel smooth there. (Where
    ``fn`` closes over a traced hyperparameter, or with ``price_derivatives=False``, autodiff
    runs through the quadrature instead: better for a ``fn`` with a kink, whose derivative's
    jump the quadrature resolves worse than the kink itself.)
    """
    df = _elementwise_derivative(fn) if df is None else df
    rules: dict[int, tuple] = {}

    def rule(extra: int):
        """Nodes and weights for an integrand with ``extra`` derivatives beyond the map's own:
        each derivative of a smooth activation sharpens the integrand (tanh's n-th derivative
        grows like n!), so the rule grows by deg/4 nodes per derivative. At variance 1, tanh's
        fourth derivatives squared (a Laplacian-Laplacian operator kernel) are off by 22% with
        25 nodes and by 5e-4 with 75."""
        n = deg + (deg * extra) // 4
        if n not in rules:
            rules[n] = gauss_hermite(n)
        return rules[n]

    def quadrature(f, g, cov12, var1, var2, extra=0):
        nodes, weights = rule(extra)
        dtype = cov12.dtype
        x = jnp.asarray(nodes, dtype)
        w = jnp.asarray(weights / np.sqrt(np.pi), dtype)
        sd1, sd2 = safe_sqrt(var1), safe_sqrt(var2)
        # v's loading on u's node, cov12 / sqrt(var1) = rho sqrt(var2), and v's conditional
        # standard deviation sqrt(var2 (1 - rho**2)): from the clipped correlation, so an input
        # paired with itself (rho exactly 1) has exactly 0 left over (var2 - slope**2 would
        # leave sqrt(rounding) ~ 1e-8 sd2, which a kink in fn turns into a visible difference
        # between x2=None and x2=copy), and nothing overflows for huge variances
        rho = clipped_correlation(cov12, var1, var2)
        abs_rho = jnp.abs(rho)
        slope = rho * sd2
        rest = sd2 * safe_sqrt((1 - abs_rho) * (1 + abs_rho))
        root2 = 2.0**0.5  # a Python float: weakly typed, keeps float32 under x64
        lead = (1,) * cov12.ndim  # explicit shapes: no rank promotion (NT's tests forbid it)
        xi, xij, xj = x.reshape(lead + (-1,)), x.reshape(lead + (-1, 1)), x.reshape(lead + (1, -1))
        fu = f(root2 * sd1[..., None] * xi)  # (..., i)
        v = root2 * (slope[..., None, None] * xij + rest[..., None, None] * xj)
        gv = g(v)  # (..., i, j)
        return jnp.einsum("...i,...ij,i,j->...", fu, gv, w, w)

    derivatives = [df]  # derivatives[i] is the (i + 1)-th derivative of fn, built on demand

    def derivative(i):
        if i == 0:
            return fn
        while len(derivatives) < i:
            derivatives.append(_elementwise_derivative(derivatives[-1]))
        return derivatives[i - 1]

    @functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
    def expectation(base, i, j, cov12, var1, var2):
        """E[fn^(i)(u) fn^(j)(v)], arguments of one shape; ``base``: the map's own order (its
        values use ``deg`` nodes exactly, as neural-tangents; derivatives use more)."""
        return quadrature(derivative(i), derivative(j), cov12, var1, var2, i + j - 2 * base)

    @expectation.defjvp
    def _expectation_jvp(base, i, j, primals, tangents):
        (c, v1, v2), (tc, t1, t2) = primals, tangents
        tangent = (expectation(base, i + 1, j + 1, c, v1, v2) * tc
                   + 0.5 * expectation(base, i + 2, j, c, v1, v2) * t1
                   + 0.5 * expectation(base, i, j + 2, c, v1, v2) * t2)
        return expectation(base, i, j, c, v1, v2), tangent

    def integrate(order, cov12, var1, var2):
        # x1's variance first, as neural-tangents does (its numbers, to quadrature rounding);
        # the rule is not symmetric in (u, v), so K(x1, x2) and K(x2, x1) may differ by the
        # quadrature error (largest for a kink in the derivative, as in Elu)
        args = jnp.broadcast_arrays(cov12, var1, var2)
        if not price_derivatives or _closes_over_tracers(fn, args[0].dtype):
            # a traced hyperparameter inside fn (a gradient in Elu's alpha): the rule above
            # cannot differentiate in it, so autodiff runs through the quadrature itself
            f = derivative(order)
            return quadrature(f, f, *args)
        return expectation(order, order, order, *args)

    def nngp_fn(cov12, var1, var2):
        return integrate(0, cov12, var1, var2)

    def d_nngp_fn(cov12, var1, var2):
        return integrate(1, cov12, var1, var2)

    def diag_fn(var):
        nodes, weights = rule(0)
        x = jnp.asarray(nodes, var.dtype)
        w = jnp.asarray(weights / np.sqrt(np.pi), var.dtype)
        x = x.reshape((1,) * var.ndim + (-1,))
        return jnp.einsum("...i,i->...", fn(2.0**0.5 * safe_sqrt(var)[..., None] * x) ** 2, w)

    return nngp_fn, d_nngp_fn, diag_fn


def ElementwiseNumerical(fn: Callable, deg: int = 25, df: Callable | None = None) -> Layer:
    """Any activation ``fn``, with its dual kernel by ``deg x deg`` Gauss-Hermite quadrature
    (Han et al. 2022, "Fast neural kernel embeddings for general activations",
    arXiv:2209.04121), as neural-tangents' `stax.ElementwiseNumerical`.

    Accuracy depends on ``fn`` and on the variances (a larger variance stretches ``fn`` over
    fewer nodes). The activations below state their measured error: the largest
    ``|k_25 - k_400| / sqrt(k(var1, var1) k(var2, var2))`` over variances in {0.1, 0.3, 1, 2, 4}
    and 11 correlations in [-1, 1], for the NNGP map and for the NTK (derivative) map. Smooth
    activations reach 1e-5 or better at unit variance; a kink (ReLU, Abs, and the derivative of
    ELU) makes the error decay only like ``1 / deg`` (about 1e-2 at ``deg=25``) and a jump
    (Sign) like ``1 / sqrt(deg)``, so prefer closed forms there. Time and memory grow as
    ``deg**2`` times the kernel size.

    Args:
      fn: the activation, elementwise (``jnp`` operations).
      deg: number of quadrature nodes per dimension (>= 1).
      df: its derivative, for the NTK; autodiff of ``fn`` when omitted.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.ElementwiseNumerical(jnp.sin))
      >>> _, _, exact_fn = stax.serial(stax.Dense(1), stax.Sin())
      >>> x = jnp.array([[1., 0.], [1., 2.]])
      >>> bool(jnp.allclose(kernel_fn(x, get='ntk'), exact_fn(x, get='ntk'), rtol=1e-5))
      True
    """
    if not callable(fn):
        raise TypeError(f"ElementwiseNumerical(fn={fn!r}): fn must be a function.")
    if df is not None and not callable(df):
        raise TypeError(f"ElementwiseNumerical(df={df!r}): df must be a function or None.")
    deg = check_positive_int(deg, "deg", "ElementwiseNumerical")
    name = f"ElementwiseNumerical({getattr(fn, '__name__', 'fn')}, deg={deg})"
    return elementwise(fn, name, *quadrature_maps(fn, deg, df))


def _numerical(fn, df, deg, name, smoothness=math.inf):
    deg = check_positive_int(deg, "deg", name.split("(")[0])
    return elementwise(fn, name, *quadrature_maps(fn, deg, df), smoothness=smoothness)


def Tanh(deg: int = 25) -> Layer:
    """``tanh(x)`` by quadrature (`ElementwiseNumerical`).

    Measured quadrature error at the default ``deg=25`` (see `ElementwiseNumerical`): NNGP
    map 5e-5, NTK map 5e-4 for variances up to 1; 9e-3 and 1e-1 up to variance 4.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Tanh())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 5)
      0.39429
    """
    return _numerical(jnp.tanh, lambda x: 1 - jnp.tanh(x) ** 2, deg, "Tanh")


def Sigmoid(deg: int = 25) -> Layer:
    """The logistic sigmoid ``1 / (1 + exp(-x))`` by quadrature (`ElementwiseNumerical`);
    `Sigmoid_like` is a closed-form erf look-alike.

    Measured quadrature error at the default ``deg=25`` (see `ElementwiseNumerical`): NNGP
    map 2e-10, NTK map 1e-8 for variances up to 1; 1e-5 and 5e-4 up to variance 4.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Sigmoid())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 5)
      0.29338
    """

    def df(x):
        s = jax.nn.sigmoid(x)
        return s * (1 - s)

    return _numerical(jax.nn.sigmoid, df, deg, "Sigmoid")


def Silu(deg: int = 25) -> Layer:
    """SiLU / Swish, ``x * sigmoid(x)`` (Ramachandran et al. 2017, arXiv:1710.05941), by
    quadrature (`ElementwiseNumerical`).

    Measured quadrature error at the default ``deg=25`` (see `ElementwiseNumerical`): NNGP
    map 1e-9, NTK map 1e-8 for variances up to 1; 2e-5 and 3e-4 up to variance 4.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Silu())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 5)
      0.35578
    """

    def df(x):
        s = jax.nn.sigmoid(x)
        return s * (1 + x * (1 - s))

    return _numerical(jax.nn.silu, df, deg, "Silu")


def Softplus(deg: int = 25) -> Layer:
    """``log(1 + exp(x))`` by quadrature (`ElementwiseNumerical`).

    Measured quadrature error at the default ``deg=25`` (see `ElementwiseNumerical`): NNGP
    map 5e-12, NTK map 2e-10 for variances up to 1; 4e-7 and 1e-5 up to variance 4.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Softplus())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 5)
      0.92125
    """
    return _numerical(jax.nn.softplus, jax.nn.sigmoid, deg, "Softplus")


def _elu_derivative(x, alpha, scale):
    """``d/dx scale * elu(x, alpha)``, taking the mean of the one-sided limits at 0.

    For ``alpha != 1`` the derivative jumps at 0, where an odd-degree Gauss-Hermite rule has
    its heaviest node; the mean of the limits there is what makes the rule converge (with
    either one-sided value, ``deg=25`` is off by 20% for `Selu`).
    """
    left = alpha * jnp.exp(jnp.minimum(x, 0))
    inside = jnp.where(x > 0, 1.0, jnp.where(x < 0, left, (1 + alpha) / 2))
    return (scale * inside).astype(x.dtype)


def Elu(alpha: float = 1.0, deg: int = 25) -> Layer:
    """ELU, ``x`` for ``x > 0`` and ``alpha (exp(x) - 1)`` otherwise (Clevert et al. 2015,
    arXiv:1511.07289), by quadrature (`ElementwiseNumerical`). Its kink (for ``alpha != 1``) or
    jump in the second derivative (``alpha = 1``) slows the quadrature down.

    Measured quadrature error at the default ``deg=25`` (see `ElementwiseNumerical`): NNGP
    map 8e-4, NTK map 4e-2 for variances up to 1; 2e-3 and 9e-2 up to variance 4.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Elu())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 3)
      0.644
    """
    alpha = _as_float(alpha, "alpha", "Elu")

    def fn(x):
        return jax.nn.elu(x, alpha)

    def df(x):
        return _elu_derivative(x, alpha, 1.0)

    # the second derivative jumps at 0 for alpha = 1, the first for any other alpha
    smooth_at_0 = isinstance(alpha, (int, float)) and alpha == 1.0
    return _numerical(fn, df, deg, f"Elu({alpha})", smoothness=1 if smooth_at_0 else 0)


def Selu(deg: int = 25) -> Layer:
    """SELU, ``scale * elu(x, alpha)`` with the self-normalizing constants of Klambauer et al.
    2017 (arXiv:1706.02515), by quadrature (`ElementwiseNumerical`).

    Measured quadrature error at the default ``deg=25`` (see `ElementwiseNumerical`): NNGP
    map 2e-3, NTK map 8e-2 for variances up to 1; 4e-3 and 2e-1 up to variance 4.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Selu())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 2)  # self-normalizing
      1.0
    """
    alpha, scale = 1.6732632423543772, 1.0507009873554805

    def df(x):
        return _elu_derivative(x, alpha, scale)

    return _numerical(jax.nn.selu, df, deg, "Selu", smoothness=0)


def Mish(deg: int = 25) -> Layer:
    """Mish, ``x * tanh(softplus(x))`` (Misra 2019, arXiv:1908.08681), by quadrature
    (`ElementwiseNumerical`).

    Measured quadrature error at the default ``deg=25`` (see `ElementwiseNumerical`): NNGP
    map 9e-8, NTK map 8e-7 for variances up to 1; 2e-4 and 3e-3 up to variance 4.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Mish())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get='nngp')[0, 0]), 5)
      0.4
    """

    def fn(x):
        return x * jnp.tanh(jax.nn.softplus(x))

    return _numerical(fn, None, deg, "Mish")
