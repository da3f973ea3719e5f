"""The `Kernel`: what flows through `kernel_fn` from layer to layer.

Layout conventions (the same as neural-tangents, so arrays can be compared directly):

* Inputs are batch-first and channel-last: ``(N, [spatial...,] C)``; images are NHWC.
* ``nngp`` and ``ntk`` have shape ``(N1, N2)`` for flat inputs. With ``S`` spatial dimensions they
  have shape ``(N1, N2, H, H', W, W', ...)`` (position pairs interleaved) or, when
  ``diagonal_spatial`` is true, ``(N1, N2, H, W, ...)`` (only equal positions are kept).
* ``cov1`` is the covariance of ``x1`` with itself: ``(N1, ...)`` when ``diagonal_batch`` is true
  (only each input with itself) and ``(N1, N1, ...)`` otherwise, followed by the same spatial axes
  as ``nngp``. ``cov2`` is the same for ``x2``, and ``None`` when ``x2`` is ``x1``.
* ``shape1`` and ``shape2`` are the shapes the finite network's activations would have; a layer
  whose kernel depends on a finite width (the 'standard' parameterization) reads its fan-in there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

Array = Any

DATA_FIELDS = ("nngp", "ntk", "cov1", "cov2", "mask1", "mask2")
STATIC_FIELDS = ("shape1", "shape2", "x1_is_x2", "is_gaussian", "diagonal_batch",
                 "diagonal_spatial", "is_reversed", "is_input", "batch_axis", "channel_axis")

_LAW = "_law"
# fields a layer may change without changing what the activations are (the shape bookkeeping
# after every layer, the axes' normalisation)
_LAW_KEEPING = frozenset({"shape1", "shape2", "batch_axis", "channel_axis", "is_reversed",
                          "is_input"})


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Covariances of a network's pre-activations over two batches of inputs.

    Attributes:
      nngp: the NNGP kernel, E[f(x1) f(x2)] for one output channel.
      ntk: the neural tangent kernel, or ``None`` when it was not asked for.
      cov1: the NNGP kernel of ``x1`` with itself (diagonal over the batch unless
        ``diagonal_batch=False`` was asked for).
      cov2: the same for ``x2``; ``None`` when ``x2`` is ``x1``.
      shape1, shape2: the shapes the finite network's activations would have.
      x1_is_x2: whether the two batches are the same inputs.
      is_gaussian: whether the activations described are jointly Gaussian (true after an affine
        layer, false after a nonlinearity); nonlinearities need Gaussian inputs.
      diagonal_batch, diagonal_spatial: which covariances are stored (see module docstring).
      is_reversed, is_input, batch_axis, channel_axis, mask1, mask2: neural-tangents' fields,
        for code that reads or sets them. infwidth keeps position pairs in input order, so
        ``is_reversed`` is always False, and so is ``is_input``; the axes are those of the
        inputs (batch first, channels last). ``mask1``/``mask2`` are ``None`` unless
        ``kernel_fn`` was called with ``mask_constant``: then boolean masks of the absent
        entries of the activations (``True`` where absent; the channel axis has size 1 after
        a layer that mixes channels), ``mask2`` ``None`` when ``x2`` is ``x1``.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
      >>> k = kernel_fn(jnp.ones((3, 4)), jnp.ones((2, 4)))
      >>> k.nngp.shape, k.ntk.shape, k.cov1.shape
      ((3, 2), (3, 2), (3,))
      >>> k.replace(ntk=None).ntk is None
      True
    """

    nngp: Array
    ntk: Array | None
    cov1: Array
    cov2: Array | None
    shape1: tuple[int, ...]
    shape2: tuple[int, ...]
    x1_is_x2: bool = False
    is_gaussian: bool = True
    diagonal_batch: bool = True
    diagonal_spatial: bool = False
    is_reversed: bool = False
    is_input: bool = False
    batch_axis: int = 0
    channel_axis: int = -1
    mask1: Array | None = None
    mask2: Array | None = None

    def replace(self, **changes) -> Kernel:
        """A copy with the given fields changed."""
        new = dataclasses.replace(self, **changes)
        law = self.__dict__.get(_LAW)
        if law is not None and set(changes) <= _LAW_KEEPING:
            object.__setattr__(new, _LAW, law)
        return new

    def with_law(self, law) -> Kernel:
        """A copy that carries ``law``: how the (non-Gaussian) activations it describes arise
        from Gaussian ones, for the nonlinearity that follows (`infwidth.stax.BatchNorm` uses
        it so that ReLU can follow it). `replace` keeps it only while the covariances, the
        shapes' meaning and the Gaussianity stay as they are; it is not part of the pytree, so
        a Kernel passed through a jitted function loses it (the next nonlinearity then
        raises, as for any non-Gaussian input)."""
        new = dataclasses.replace(self)
        object.__setattr__(new, _LAW, law)
        return new

    @property
    def law(self):
        """What `with_law` attached, or ``None``."""
        return self.__dict__.get(_LAW)

    def mask(self, mask1, mask2) -> Kernel:
        """A copy with masks ``mask1``/``mask2`` (booleans in the activations' layout, ``True``
        where absent) and every covariance entry that involves an absent position set to zero,
        as neural-tangents' ``Kernel.mask``.

        >>> import jax.numpy as jnp
        >>> from infwidth import stax
        >>> k = stax.Dense(4).kernel_fn(jnp.ones((2, 3, 1)))  # 2 sequences of length 3
        >>> absent = jnp.array([[False, False, True], [False, True, True]])[..., None]
        >>> k.mask(absent, None).nngp[0, 1].tolist()
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
        """
        from .stax._masking import apply_masks

        return apply_masks(self, mask1, mask2)

    @property
    def n_spatial(self) -> int:
        """Number of spatial dimensions (0 for flat inputs)."""
        return len(self.shape1) - 2

    def scale(self, factor) -> Kernel:
        """The kernel of ``factor * f``: every covariance and the NTK times ``factor**2``."""
        var = factor**2
        return self.replace(
            nngp=var * self.nngp,
            ntk=None if self.ntk is None else var * self.ntk,
            cov1=var * self.cov1,
            cov2=None if self.cov2 is None else var * self.cov2,
        )


jax.tree_util.register_dataclass(Kernel, data_fields=list(DATA_FIELDS),
                                 meta_fields=list(STATIC_FIELDS))
