"""Kernel-target alignment and architecture selection by alignment.

The alignment of two kernel matrices is their cosine similarity as vectors,
``<K1, K2>_F / (||K1||_F ||K2||_F)`` (Cristianini et al. 2001, "On kernel-target alignment",
NeurIPS); with targets ``Y`` the second kernel is ``Y Y^T``. The centred alignment first removes
the mean in feature space, ``K -> H K H`` with ``H = I - 1 1^T / N`` (Cortes, Mohri and
Rostamizadeh 2012, "Algorithms for learning kernels based on centered alignment",
arXiv:1203.0550), so a constant offset of the kernel (a bias, say) does not count as alignment.

The NNGP or NTK of an architecture is the kernel that infinitely wide networks of it regress
with, so ranking candidate architectures by the alignment of their kernels with the training
targets is a cheap, training-free proxy for which will generalise best. Measured limits
(tests/test_analysis_alignment.py, notebook 20): with targets drawn from the Gaussian process of
one candidate's kernel, or linear targets, the top-ranked architecture is the one with the
smallest kernel-regression test error; the order below the top need not follow the errors, and
for other targets (a quadratic ``x0 x1`` on the sphere) the top pick can be wrong by a factor of
10 in test error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp

from .._numerics import safe_divide

__all__ = ["kernel_alignment", "kernel_target_alignment", "Ranked", "rank_architectures"]


def _square(k, arg, fn):
    k = jnp.asarray(k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{fn}({arg}): expected a square (N, N) kernel matrix; got shape "
                         f"{k.shape}.")
    if not jnp.issubdtype(k.dtype, jnp.floating):
        k = k.astype(jnp.result_type(float))
    return k


def _center(k):
    return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()


def _target_kernel(y, n, fn):
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"{fn}(y): targets must have shape (N,) or (N, outputs) with N = {n} "
                         f"(the kernel's size); got shape {y.shape}.")
    return y @ y.T


def kernel_alignment(k1, k2, centered: bool = False):
    """Alignment ``<K1, K2>_F / (||K1||_F ||K2||_F)`` of two (N, N) kernel matrices, in [-1, 1]
    (in [0, 1] for positive semi-definite kernels). With ``centered=True`` both are centred in
    feature space first (Cortes et al. 2012, arXiv:1203.0550). 0 where a kernel is zero (after
    centring: constant).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.analysis import kernel_alignment
      >>> k = jnp.array([[2., 1.], [1., 2.]])
      >>> round(float(kernel_alignment(k, 3 * k)), 6)
      1.0
      >>> round(float(kernel_alignment(k, jnp.eye(2))), 4)      # 4 / (sqrt(10) sqrt(2))
      0.8944
    """
    k1 = _square(k1, "k1", "kernel_alignment")
    k2 = _square(k2, "k2", "kernel_alignment")
    if k1.shape != k2.shape:
        raise ValueError(f"kernel_alignment: k1 has shape {k1.shape} and k2 {k2.shape}; they must "
                         f"be kernels of the same inputs.")
    if centered:
        k1, k2 = _center(k1), _center(k2)
    num = jnp.vdot(k1, k2)
    return safe_divide(num, jnp.linalg.norm(k1) * jnp.linalg.norm(k2))


def kernel_target_alignment(kernel, y, centered: bool = False):
    """Alignment of a kernel matrix with the targets, `kernel_alignment` of ``K`` and ``Y Y^T``
    (Cristianini et al. 2001, "On kernel-target alignment"; centred: Cortes et al. 2012,
    arXiv:1203.0550).

    Args:
      kernel: (N, N) kernel matrix on the training inputs, e.g. an NNGP or NTK.
      y: targets, shape (N,) or (N, outputs).
      centered: centre kernel and targets in feature space first (recommended: a constant
        offset of the kernel or of the targets then does not count).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth.analysis import kernel_target_alignment
      >>> y = jnp.array([1., -1., 1., -1.])
      >>> round(float(kernel_target_alignment(jnp.outer(y, y) + 0.5, y)), 4)
      0.8944
      >>> round(float(kernel_target_alignment(jnp.outer(y, y) + 0.5, y, centered=True)), 4)
      1.0
    """
    kernel = _square(kernel, "kernel", "kernel_target_alignment")
    return kernel_alignment(kernel, _target_kernel(y, kernel.shape[0], "kernel_target_alignment"),
                            centered=centered)


class Ranked(NamedTuple):
    """One entry of `rank_architectures`: the candidate's name and its kernel-target alignment."""

    name: str
    alignment: float


def rank_architectures(architectures: Mapping[str, Any], x, y, get: str = "ntk",
                       centered: bool = True) -> list[Ranked]:
    """Candidate architectures ranked by the alignment of their infinite-width kernel with the
    training targets, best first.

    A training-free architecture-selection heuristic: the NNGP/NTK is the kernel an infinitely
    wide network regresses with, and kernels better aligned with the targets tend to generalise
    better (Cristianini et al. 2001; Cortes et al. 2012, arXiv:1203.0550; for NTKs e.g. Canatar
    et al. 2021, arXiv:2006.13198, on task-model alignment).

    Args:
      architectures: ``{name: layer}`` where ``layer`` is an ``(init_fn, apply_fn, kernel_fn)``
        triple such as ``stax.serial(...)``, or a ``kernel_fn`` itself.
      x: training inputs (N, ...).
      y: training targets (N,) or (N, outputs).
      get: ``'ntk'`` or ``'nngp'``: which kernel to align.
      centered: use the centred alignment (default).

    Returns:
      a list of `Ranked` ``(name, alignment)`` sorted by decreasing alignment.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.analysis import rank_architectures
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (20, 3))
      >>> y = x[:, 0]                                   # a linear target
      >>> ranking = rank_architectures({'linear': stax.Dense(1),
      ...                               'relu': stax.serial(stax.Dense(1), stax.Relu(),
      ...                                                   stax.Dense(1))}, x, y)
      >>> [r.name for r in ranking]
      ['linear', 'relu']
    """
    if get not in ("ntk", "nngp"):
        raise ValueError(f"rank_architectures(get={get!r}): get must be 'ntk' or 'nngp'.")
    if not isinstance(architectures, Mapping) or not architectures:
        raise TypeError("rank_architectures(architectures): pass a non-empty dict {name: layer}, "
                        "e.g. {'relu': stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1))}.")
    scores = []
    for name, arch in architectures.items():
        if isinstance(arch, tuple) and len(arch) == 3 and callable(arch[2]):
            kernel_fn = arch[2]
        elif callable(arch):
            kernel_fn = arch
        else:
            raise TypeError(f"rank_architectures: architectures[{name!r}] is "
                            f"{type(arch).__name__}, not a layer (init_fn, apply_fn, kernel_fn) "
                            f"or a kernel_fn.")
        k = kernel_fn(x, None, get)
        scores.append(Ranked(str(name), float(kernel_target_alignment(k, y, centered))))
    return sorted(scores, key=lambda r: -r.alignment)
