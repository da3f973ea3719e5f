"""The layout of a `Kernel`'s arrays: which axes are batch, spatial and paired, in one place.

Every layer asks here instead of re-deriving it:

* ``nngp`` / ``ntk``: ``(N1, N2, H, H', W, W', ...)``, or ``(N1, N2, H, W, ...)`` when
  ``diagonal_spatial`` (only equal positions are kept);
* ``cov1`` / ``cov2``: the same with one batch axis ``(N, ...)`` when ``diagonal_batch``, two
  ``(N, N, ...)`` otherwise;
* the mirror image ``K(x2, x1)`` of ``K(x1, x2)`` swaps the two batch axes and each position
  pair ``(H, H')``.

>>> mirror_perm(2, diagonal_spatial=False)
(1, 0, 3, 2, 5, 4)
"""

from __future__ import annotations

import jax.numpy as jnp

from ..kernel import Kernel

LOWER, UPPER = "hwdefgijkl", "HWDEFGIJKL"


def spatial_letters(n_spatial: int) -> tuple[str, str]:
    """einsum letters of the first and second member of each position pair."""
    return LOWER[:n_spatial], UPPER[:n_spatial]


def n_lead(cov, k: Kernel, n_spatial: int | None = None) -> int:
    """Number of batch axes of a stored covariance (1 for a diagonal-batch cov1/cov2, else 2)."""
    n_spatial = k.n_spatial if n_spatial is None else n_spatial
    per = n_spatial if k.diagonal_spatial else 2 * n_spatial
    return cov.ndim - per


def spatial_axes(lead: int, i: int, diagonal_spatial: bool) -> tuple[int, ...]:
    """Axes holding spatial dimension ``i`` of a covariance with ``lead`` batch axes."""
    return (lead + i,) if diagonal_spatial else (lead + 2 * i, lead + 2 * i + 1)


def mirror_perm(n_spatial: int, diagonal_spatial: bool) -> tuple[int, ...]:
    """Axis permutation taking ``K(x1, x2)`` (nngp/ntk layout) to ``K(x2, x1)``."""
    if diagonal_spatial:
        return (1, 0, *range(2, 2 + n_spatial))
    return (1, 0, *[a for i in range(n_spatial) for a in (3 + 2 * i, 2 + 2 * i)])


def batch_diagonal(x):
    """``(N, N, ...) -> (N, ...)``: each input with itself."""
    return jnp.moveaxis(jnp.diagonal(x, axis1=0, axis2=1), -1, 0)


def pairs_diagonal(x, lead: int):
    """``(lead..., h, h', w, w', ...) -> (lead..., h, w, ...)``: equal positions only."""
    n_spatial = (x.ndim - lead) // 2
    if n_spatial == 0:
        return x
    head = "abc"[:lead]
    lo = LOWER[:n_spatial]
    return jnp.einsum(f"{head}{''.join(c + c for c in lo)}->{head}{lo}", x)


def variances(cov, k: Kernel):
    """Per-input, per-position variances ``(N, *spatial)`` from a stored ``cov1``/``cov2``."""
    if not k.diagonal_batch:
        cov = batch_diagonal(cov)
    if not k.diagonal_spatial:
        cov = pairs_diagonal(cov, 1)
    return cov


def expand(var, side: int, lead: int, diagonal_spatial: bool):
    """Reshapes variances ``(N, *spatial)`` to broadcast against a covariance of the layout.

    ``lead`` is the number of batch axes of the target (2 for nngp or a full-batch cov, 1 for a
    diagonal-batch cov); ``side`` says whether ``var`` indexes the first or second member of
    each (batch and position) pair.
    """
    n, spatial = var.shape[0], var.shape[1:]
    head = ((n, 1) if side == 1 else (1, n)) if lead == 2 else (n,)
    if diagonal_spatial:
        return var.reshape(head + spatial)
    pairs = ()
    for s in spatial:
        pairs += (s, 1) if side == 1 else (1, s)
    return var.reshape(head + pairs)


def map_covariances(k: Kernel, fn):
    """Applies ``fn(cov, lead)`` to nngp, ntk, cov1 and cov2 (skipping the absent ones)."""
    n = k.n_spatial

    def one(c):
        return None if c is None else fn(c, n_lead(c, k, n))

    return dict(nngp=one(k.nngp), ntk=one(k.ntk), cov1=one(k.cov1), cov2=one(k.cov2))
