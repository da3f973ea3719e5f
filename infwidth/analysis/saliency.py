"""The NTK diagonal as a sensitivity map, and rank correlation to compare it with saliency.

``Theta(x, x)`` is the squared norm of the parameter gradient of the network output at ``x``
(at infinite width): how far one gradient step moves the function at ``x``. Its gradient in the
input shows which input features change that sensitivity most. Both are compared with the
input-gradient saliency ``|df/dx|`` of trained finite networks (Simonyan, Vedaldi and Zisserman
2013, "Deep inside convolutional networks: visualising image classification models and saliency
maps", arXiv:1312.6034) through Spearman's rank correlation (Spearman 1904).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["NTKSaliency", "ntk_saliency", "spearman"]


class NTKSaliency(NamedTuple):
    """What `ntk_saliency` returns.

    Attributes:
      diagonal: ``Theta(x_i, x_i)`` per input, ``(N,)``.
      gradient: its gradient in the input, ``d Theta(x_i, x_i) / d x_i``, shape of ``x``.
    """

    diagonal: Any
    gradient: Any


def ntk_saliency(kernel_fn, x, get: str = "ntk") -> NTKSaliency:
    """The kernel diagonal ``Theta(x_i, x_i)`` of each input and its input gradient.

    Args:
      kernel_fn: the network's kernel function.
      x: inputs ``(N, ...)`` (vectors or images).
      get: ``'ntk'`` (default) or ``'nngp'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.analysis import ntk_saliency
      >>> _, _, kernel_fn = stax.Dense(1, W_std=1.0, b_std=0.5)
      >>> s = ntk_saliency(kernel_fn, jnp.array([[1., 2.]]))   # Theta = |x|^2 / 2 + 0.25
      >>> float(s.diagonal[0]), s.gradient.tolist()             # gradient x
      (2.75, [[1.0, 2.0]])
    """
    if get not in ("nngp", "ntk"):
        raise ValueError(f"ntk_saliency(get={get!r}): get must be 'ntk' or 'nngp'.")
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"ntk_saliency(x): expected a batch of inputs (N, ...); got shape "
                         f"{x.shape}. Use x[None] for one input.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return NTKSaliency(*_diagonal_and_grad(kernel_fn, get, x))


def _diagonal_and_grad(kernel_fn, get, x):
    def diag(xi):
        return kernel_fn(xi[None], None, get)[0, 0]

    return jax.jit(jax.vmap(jax.value_and_grad(diag)))(x)


def _ranks(a):
    """Ranks 0..n-1 with ties given their mean rank."""
    a = np.asarray(a, float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    values, inverse = np.unique(a, return_inverse=True)
    sums = np.bincount(inverse, ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(a, b) -> float:
    """Spearman's rank correlation of two 1-D samples (the Pearson correlation of their ranks,
    ties at their mean rank).

    Example:
      >>> from infwidth.analysis import spearman
      >>> spearman([1, 2, 3, 4], [10, 20, 30, 100]), spearman([1, 2, 3], [3, 2, 1])
      (1.0, -1.0)
    """
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"spearman(a, b): expected two samples of one size >= 2; got "
                         f"{a.size} and {b.size}.")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / den) if den > 0 else 0.0
