"""Parameterizations of affine layers, resolved in one place.

* ``'ntk'`` (Jacot et al. 2018, "Neural Tangent Kernel", arXiv:1806.07572): weights and biases are
  drawn from N(0, 1) and the layer computes ``W_std / sqrt(fan_in) * W x + b_std * b``. The
  infinite-width NTK does not depend on the widths.
* ``'standard'`` (Sohl-Dickstein et al. 2020, "On the infinite width limit of neural networks
  with a standard parameterization", arXiv:2001.07301): ``W ~ N(0, W_std**2 / (fan_in / s[0]))``,
  ``b ~ N(0, b_std**2)`` and the layer computes ``W x / sqrt(s[0]) + b``. The NNGP is the same as
  under 'ntk'; the NTK weighs each layer's contribution by its (finite) fan-in.

Both follow neural-tangents' `stax.Dense` conventions exactly.
"""

from __future__ import annotations

from typing import NamedTuple

PARAMETERIZATIONS = ("ntk", "standard")


def resolve_parameterization(parameterization, layer: str) -> str:
    """Canonical (lower-case) name of a parameterization, or a ValueError naming the layer.

    >>> resolve_parameterization('NTK', 'Dense')
    'ntk'
    """
    if isinstance(parameterization, str) and parameterization.lower() in PARAMETERIZATIONS:
        return parameterization.lower()
    raise ValueError(
        f"{layer}(parameterization={parameterization!r}): parameterization must be one of "
        f"{', '.join(repr(p) for p in PARAMETERIZATIONS)}."
    )


class AffineScales(NamedTuple):
    """Standard deviations used at initialisation and multipliers used in the forward pass."""

    w_init: float
    w_mult: float
    b_init: float
    b_mult: float


def affine_scales(parameterization: str, W_std, b_std, fan_in: int, s=(1, 1)) -> AffineScales:
    """How an affine layer with fan-in ``fan_in`` draws and scales its weights and bias."""
    b = 0.0 if b_std is None else b_std
    if parameterization == "ntk":
        return AffineScales(1.0, W_std / fan_in**0.5, 1.0, b)
    return AffineScales(W_std / (fan_in / s[0]) ** 0.5, 1.0 / s[0] ** 0.5, b, 1.0)


def affine_kernels(parameterization: str, nngp, ntk, W_std, b_std, fan_in_over_s):
    """NNGP and NTK after an affine layer, given the (spatially transformed) input covariance.

    ``nngp`` is E[x x'] of the layer's inputs averaged over the fan-in (for a convolution: after
    the filter's spatial averaging); ``ntk`` the input NTK transformed the same way (or None).
    """
    out_nngp = affine_cov(nngp, W_std, b_std)
    if ntk is None:
        return out_nngp, None
    if parameterization == "ntk":
        return out_nngp, out_nngp + W_std**2 * ntk
    out_ntk = fan_in_over_s * nngp + W_std**2 * ntk
    if b_std is not None:
        out_ntk = out_ntk + 1.0
    return out_nngp, out_ntk


def affine_cov(cov, W_std, b_std):
    """Covariance of ``W x + b`` given that of ``x``: ``W_std**2 cov + b_std**2``."""
    if cov is None:
        return None
    out = W_std**2 * cov
    return out if b_std is None else out + b_std**2
