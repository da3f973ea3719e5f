"""`DependentFanIn`: branches that are elementwise functions of one shared Gaussian input.

``FanOut(2), parallel(Relu(), Identity()), FanInSum()`` computes ``Relu(h) + h``: the two
branches see the same pre-activation ``h``, so they are neither independent nor Gaussian, and
their sum's kernel is not a function of the branch kernels (neural-tangents raises). It is,
however, the kernel of one elementwise function ``g(h) = Relu(h) + h`` of a Gaussian, which is
exact in the infinite-width limit (each channel of ``h`` is a Gaussian process, Yang 2019,
"Tensor Programs I", arXiv:1910.12478). `DependentFanIn` builds ``g`` from the branches'
``apply_fn`` (sum or product) and integrates it by two-dimensional Gauss-Hermite quadrature
(`ElementwiseNumerical`); the NTK follows from ``g'`` by autodiff.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import safe_sqrt
from ._layer import Layer, check_positive_int
from .elementwise import derivative_from_autodiff, elementwise
from .numerical import quadrature_maps

_MODES = {"sum": jnp.add, "prod": jnp.multiply}


def _check_branch(i: int, layer, name: str):
    """Checks branch ``i`` is parameterless and elementwise; returns its scalar function."""
    if not (isinstance(layer, tuple) and len(layer) == 3 and all(map(callable, layer))):
        raise TypeError(f"{name}: branch {i} is {type(layer).__name__}, not a layer "
                        f"(init_fn, apply_fn, kernel_fn); did you forget to call it, e.g. "
                        f"Relu() rather than Relu?")
    init_fn, apply_fn, _ = layer
    not_elementwise = (
        f"{name}: branch {i} is not elementwise (its output mixes entries or changes the "
        f"shape); DependentFanIn needs each branch to be a function applied entry by entry, "
        f"such as Relu(), Erf(), Identity() or serial() of them.")
    try:
        out_shape, params = init_fn(jax.random.PRNGKey(0), (3, 5))  # tiny: a check only
    except (ValueError, TypeError) as e:
        raise ValueError(not_elementwise) from e
    if jax.tree_util.tree_leaves(params):
        raise ValueError(
            f"{name}: branch {i} has parameters; only parameterless elementwise branches "
            f"(activations, Identity, Scale) are functions of the shared input. A branch with "
            f"fresh weights is independent of the others: use FanOut, parallel and "
            f"FanInSum/FanInProd for it.")
    z = np.linspace(-2.0, 2.0, 15, dtype=np.float32).reshape(3, 5)
    out = np.asarray(apply_fn(params, jnp.asarray(z)))
    swapped = np.asarray(apply_fn(params, jnp.asarray(z.T))).T
    if tuple(out_shape) != (3, 5) or out.shape != (3, 5) or not np.allclose(out, swapped,
                                                                          equal_nan=True):
        raise ValueError(not_elementwise)

    def f(x):
        return apply_fn(params, x)

    return f


def DependentFanIn(*branches: Layer, mode: str = "sum", deg: int = 51) -> Layer:
    """Elementwise branches of one Gaussian input, merged by ``mode`` (``'sum'`` or ``'prod'``).

    ``DependentFanIn(Relu(), Identity())`` is ``FanOut(2), parallel(Relu(), Identity()),
    FanInSum()`` for the finite network, and its kernel is that of ``g(h) = Relu(h) + h`` (with
    ``mode='prod'``, ``Relu(h) * h``), by ``deg x deg`` Gauss-Hermite quadrature of the
    Gaussian pair (Han et al. 2022, arXiv:2209.04121; the limit: Yang 2019, arXiv:1910.12478).
    Its input must be Gaussian (the output of Dense, Conv, ...). Not in neural-tangents.

    Accuracy: a smooth ``g`` converges quickly; a kink (ReLU) makes the error decay like
    ``1 / deg``. Measured for ``Relu(h) + h`` at the default ``deg=51`` over 41 correlations in
    [-1, 1], relative to the diagonal value: NNGP within 2e-3, NTK map (the derivative of the
    NNGP map in the covariance, by autodiff; Price's theorem) within 2e-2, worst at
    correlation 0; ``Relu(h) * h`` (a kink of the derivative only) within 3e-5 and 3e-3. The
    tests compare with these closed forms. Time and memory grow as ``deg**2`` times the kernel
    size.

    Args:
      *branches: parameterless elementwise layers (activations, `Identity`, `Scale`, `serial`
        of them); each is checked when the layer is built.
      mode: ``'sum'`` (as `FanInSum`) or ``'prod'`` (as `FanInProd`).
      deg: quadrature nodes per dimension.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(
      ...     stax.Dense(8), stax.DependentFanIn(stax.Relu(), stax.Identity()))
      >>> x = jnp.array([[1., 0.]])  # var = 1/2: E[(relu(u) + u)**2] = var/2 + var + var
      >>> round(float(kernel_fn(x, get='nngp')[0, 0]), 3)
      1.25
    """
    name = f"DependentFanIn(mode={mode!r})"
    if mode not in _MODES:
        raise ValueError(f"{name}: mode must be 'sum' or 'prod'.")
    if len(branches) < 2:
        raise ValueError(f"{name}: give at least two branches, e.g. "
                         f"DependentFanIn(Relu(), Identity()).")
    deg = check_positive_int(deg, "deg", "DependentFanIn")
    fns = [_check_branch(i, b, name) for i, b in enumerate(branches)]
    op = _MODES[mode]

    def g(x):
        return functools.reduce(op, [f(x) for f in fns])

    nngp_fn, _, diag_fn = _rank_promotion_allowed(*quadrature_maps(g, deg,
                                                                   price_derivatives=False)[::2])
    # the NTK map as the derivative of the NNGP map in cov12 (Price's theorem): the derivative
    # of a kink is a jump, which quadrature resolves worse than the kink itself. At correlation
    # +-1 the quadrature's conditional deviation has an infinite derivative, so the derivative
    # is taken at correlation +-(1 - 1e-5) (a continuous map: an error of order 1e-5).
    d_raw = derivative_from_autodiff(nngp_fn)

    def d_nngp_fn(cov12, var1, var2):
        bound = (1.0 - 1e-5) * safe_sqrt(var1 * var2)
        return d_raw(jnp.clip(cov12, -bound, bound), var1, var2)

    return elementwise(g, name, nngp_fn, d_nngp_fn, diag_fn)


def _rank_promotion_allowed(nngp_fn, diag_fn):
    """The quadrature maps of numerical.py broadcast (..., 1) against the nodes (deg,), which
    jax_numpy_rank_promotion='raise' rejects; until they expand the nodes explicitly, trace
    them with rank promotion allowed (a trace-time setting: jit is unaffected)."""

    def nngp(*args):
        with jax.numpy_rank_promotion("allow"):
            return nngp_fn(*args)

    def diag(var):
        with jax.numpy_rank_promotion("allow"):
            return diag_fn(var)

    return nngp, None, diag
