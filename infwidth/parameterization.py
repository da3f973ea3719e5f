"""Parameterizations of affine layers, resolved in one place.

* ``'ntk'`` (Jacot et al. 2018, "Neural Tangent Kernel", arXiv:1806.07572): weights and biases are
  drawn from N(0, 1) and the layer computes ``W_std / sqrt(fan_in) * W x + b_std * b``. The
  infinite-width NTK does not depend on the widths.
* ``'standard'`` (Sohl-Dickstein et al. 2020, "On the infinite width limit of neural networks
  with a standard parameterization", arXiv:2001.07301): ``W ~ N(0, W_std**2 / (fan_in / s[0]))``,
  ``b ~ N(0, b_std**2)`` and the layer computes ``W x / sqrt(s[0]) + b``. The NNGP is the same as
  under 'ntk'; the NTK weighs each layer's contribution by its (finite) fan-in.

Both follow neural-tangents' `stax.Dense` conventions exactly. Beyond neural-tangents:

* ``'mup'``, the maximal-update parameterization (Yang & Hu 2021, "Tensor Programs IV",
  arXiv:2011.14522; Yang et al. 2022, arXiv:2203.03466), in its shape-only ("spectral") form
  (Yang, Simon & Bernstein 2023, arXiv:2310.17813): ``W ~ N(0, sigma**2)`` with
  ``sigma = W_std / sqrt(fan_in) * min(1, sqrt(fan_out / fan_in))`` (for a convolution the
  ratio is taken over channels, ``C_out / C_in``), ``b ~ N(0, b_std**2)``,
  multiplier 1, and per-layer learning rates ``eta * fan_out / fan_in`` (SGD) or
  ``eta / fan_in`` (Adam) applied by `infwidth.mup`. Input and hidden layers get the usual
  ``1 / fan_in`` variance, the readout (``fan_out << fan_in``) the muP ``1 / fan_in**2``, so
  every layer can say ``'mup'`` and no layer needs to know its role. Its infinite-width limit
  is a feature-learning one, not a kernel: ``kernel_fn`` raises.
* `ABC`: a general abc-parameterization (Yang & Hu 2021): the layer computes
  ``W_std * n**-a * x @ w`` with ``w ~ N(0, n**(-2 b))`` and is trained with learning rate
  ``eta * n**-c``; ``n`` is the layer's fan-in (or, with ``n='fan_out'``, its output width, as
  for an input layer whose fan-in does not grow). ``ABC(0.5, 0, 0)`` is 'ntk'.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

PARAMETERIZATIONS = ("ntk", "standard", "mup")
KERNEL_PARAMETERIZATIONS = ("ntk", "standard")


class ABC(NamedTuple):
    """An abc-parameterization of one affine layer (Yang & Hu 2021, arXiv:2011.14522).

    The layer computes ``W_std * n**-a * x @ w`` with ``w ~ N(0, n**(-2 b))``, and
    `infwidth.mup.abc_learning_rates` scales its learning rate by ``n**-c``. ``n`` is the
    layer's fan-in (``n='fan_in'``) or its output width (``n='fan_out'``, for an input layer
    whose fan-in is the fixed data dimension). The bias is ``b_std * beta`` with
    ``beta ~ N(0, 1)`` (as under 'ntk'), trained with ``n**-c`` where ``n`` is the output width.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> from infwidth.parameterization import ABC
      >>> layer = stax.Dense(4, parameterization=ABC(a=1.0, b=0.0, c=-1.0))  # a muP readout
      >>> _, (W, b) = layer.init_fn(jax.random.PRNGKey(0), (1, 16))
      >>> bool(jnp.allclose(layer.apply_fn((W, b), jnp.ones((1, 16))), W.sum(0) / 16))
      True
    """

    a: float
    b: float
    c: float = 0.0
    n: str = "fan_in"

    def width(self, fan_in: int, fan_out: int) -> int:
        """The ``n`` of this layer."""
        return fan_in if self.n == "fan_in" else fan_out


def resolve_parameterization(parameterization, layer: str):
    """Canonical (lower-case) name of a parameterization, an `ABC`, or a ValueError.

    >>> resolve_parameterization('NTK', 'Dense')
    'ntk'
    >>> resolve_parameterization(ABC(0.5, 0.0), 'Dense')
    ABC(a=0.5, b=0.0, c=0.0, n='fan_in')
    """
    if isinstance(parameterization, ABC):
        for name in ("a", "b", "c"):
            try:
                float(getattr(parameterization, name))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{layer}(parameterization={parameterization!r}): ABC.{name} must be a "
                    f"number.") from None
        if parameterization.n not in ("fan_in", "fan_out"):
            raise ValueError(f"{layer}(parameterization={parameterization!r}): ABC.n must be "
                             f"'fan_in' or 'fan_out'.")
        return parameterization
    if isinstance(parameterization, str) and parameterization.lower() in PARAMETERIZATIONS:
        return parameterization.lower()
    raise ValueError(
        f"{layer}(parameterization={parameterization!r}): parameterization must be one of "
        f"{', '.join(repr(p) for p in PARAMETERIZATIONS)}, or an ABC(a, b, c) from "
        f"infwidth.parameterization."
    )


def check_has_kernel(parameterization, layer: str):
    """Raises unless the infinite-width limit of this parameterization is a kernel.

    >>> check_has_kernel('mup', 'Dense')
    Traceback (most recent call last):
    ...
    NotImplementedError: Dense(parameterization='mup'): ...
    """
    if isinstance(parameterization, ABC):
        p = parameterization
        if (float(p.a), float(p.b), p.n) == (0.5, 0.0, "fan_in"):
            return
        why = ("an abc-parameterization has an analytic kernel here only in its 'ntk' form "
               "ABC(a=0.5, b=0, n='fan_in')")
    elif parameterization in KERNEL_PARAMETERIZATIONS:
        return
    else:
        why = ("under muP the infinite-width limit learns features (Yang & Hu 2021, "
               "arXiv:2011.14522): it is not a kernel, so there is no analytic NNGP/NTK")
    raise NotImplementedError(
        f"{layer}(parameterization={parameterization!r}): {why}. Use the finite network "
        f"(init_fn/apply_fn) with the finite-width tools instead: infwidth.mup "
        f"(coord_check, muP optimizers) and infwidth.analysis (kernel movement, distance from "
        f"the linearization), or parameterization='ntk' for the kernel limit."
    )


class AffineScales(NamedTuple):
    """Standard deviations used at initialisation and multipliers used in the forward pass."""

    w_init: float
    w_mult: float
    b_init: float
    b_mult: float


def affine_scales(parameterization, W_std, b_std, fan_in: int, s=(1, 1),
                  fan_out: int | None = None, in_channels: int | None = None) -> AffineScales:
    """How an affine layer with fan-in ``fan_in`` draws and scales its weights and bias.

    ``fan_out`` (the layer's output width) is needed by 'mup' and by ``ABC(n='fan_out')``;
    'mup' compares it with ``in_channels`` (the input's channel count, default ``fan_in``; a
    convolution's fan-in also counts the filter taps, which do not make it a readout).

    >>> affine_scales('mup', 1.0, None, fan_in=100, fan_out=1)  # the muP readout: 1 / fan_in
    AffineScales(w_init=0.01, w_mult=1.0, b_init=0.0, b_mult=1.0)
    """
    b = 0.0 if b_std is None else b_std
    if parameterization == "ntk":
        return AffineScales(1.0, W_std / fan_in**0.5, 1.0, b)
    if parameterization == "standard":
        return AffineScales(W_std / (fan_in / s[0]) ** 0.5, 1.0 / s[0] ** 0.5, b, 1.0)
    fan_out = fan_in if fan_out is None else fan_out
    if parameterization == "mup":
        in_channels = fan_in if in_channels is None else in_channels
        return AffineScales(W_std / fan_in**0.5 * min(1.0, (fan_out / in_channels) ** 0.5), 1.0,
                            b, 1.0)
    n = parameterization.width(fan_in, fan_out)  # an ABC
    return AffineScales(float(n) ** -parameterization.b, W_std * float(n) ** -parameterization.a,
                        1.0, b)


class AffineRule(NamedTuple):
    """One affine layer's parameterization, resolved once when the layer is built and read by
    everything that depends on it: the layer's initialisation and forward multipliers, its
    kernel map, and the per-layer learning rates of `infwidth.mup`.

    Build it with `affine_rule`. ``fan_in`` is the layer's fan-in (input channels times filter
    taps for a convolution), ``fan_out`` its output width.

    Example:
      >>> from infwidth.parameterization import affine_rule
      >>> rule = affine_rule('standard', W_std=2.0, b_std=0.1, s=(1, 2), layer='Dense')
      >>> rule.width(8), rule.scales(fan_in=4, fan_out=16).w_init
      (16, 1.0)
      >>> affine_rule('mup', 1.0, None, (1, 1), 'Dense').learning_rate(100, 1, 'sgd')
      0.01
    """

    parameterization: str | ABC
    W_std: float
    b_std: float | None
    s: tuple[int, int] = (1, 1)

    def width(self, out_dim: int) -> int:
        """Width of the finite layer: ``out_dim * s[1]`` under 'standard', else ``out_dim``."""
        return out_dim * self.s[1] if self.parameterization == "standard" else out_dim

    def scales(self, fan_in: int, fan_out: int, in_channels: int | None = None) -> AffineScales:
        """Initialisation standard deviations and forward multipliers (`affine_scales`)."""
        return affine_scales(self.parameterization, self.W_std, self.b_std, fan_in, self.s,
                             fan_out, in_channels)

    def check_has_kernel(self, layer: str):
        """Raises unless this parameterization has an infinite-width kernel."""
        check_has_kernel(self.parameterization, layer)

    def kernels(self, nngp, ntk, fan_in, bias: bool = True):
        """NNGP and NTK after the layer (`affine_kernels`); ``bias=False`` leaves the bias out
        (a layer that adds it per position itself, as `ConvLocal`)."""
        return affine_kernels(self.parameterization, nngp, ntk, self.W_std,
                              self.b_std if bias else None, fan_in / self.s[0])

    def cov(self, cov, bias: bool = True):
        """A covariance after the layer: ``W_std**2 cov (+ b_std**2)``."""
        return affine_cov(cov, self.W_std, self.b_std if bias else None)

    def bias_ntk(self) -> float:
        """What the bias adds to the NTK: 1 under 'standard', ``b_std**2`` otherwise."""
        return 1.0 if self.parameterization == "standard" else self.b_std**2

    def learning_rate(self, fan_in: int, fan_out: int, optimizer: str = "sgd",
                      bias: bool = False) -> float:
        """Per-layer learning-rate multiplier: under 'mup', ``fan_out / fan_in`` for SGD and
        ``1 / fan_in`` for Adam (a bias has fan-in 1; Yang et al. 2022, arXiv:2203.03466,
        Table 3); under an `ABC`, ``n**-c`` (``n`` its width, the output width for a bias);
        1 under 'ntk' and 'standard'."""
        p = self.parameterization
        if isinstance(p, ABC):
            n = fan_out if bias else p.width(fan_in, fan_out)
            return float(n) ** -p.c
        if p == "mup":
            fan_in = 1 if bias else fan_in
            return fan_out / fan_in if optimizer == "sgd" else 1.0 / fan_in
        return 1.0


def affine_rule(parameterization, W_std, b_std, s, layer: str) -> AffineRule:
    """Resolves an affine layer's parameterization into its `AffineRule`.

    ``W_std`` and ``b_std`` are the layer's (checked) standard deviations; ``s`` its width
    multipliers, a pair of positive integers.

    >>> affine_rule('NTK', 1.0, None, (1, 1), 'Dense').parameterization
    'ntk'
    >>> affine_rule('ntk', 1.0, None, (1, 0), 'Dense')
    Traceback (most recent call last):
    ...
    ValueError: Dense(s=(1, 0)): s must be a pair of positive integers.
    """
    parameterization = resolve_parameterization(parameterization, layer)
    ok = isinstance(s, (tuple, list)) and len(s) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in s)
    if not ok:
        raise ValueError(f"{layer}(s={s!r}): s must be a pair of positive integers.")
    return AffineRule(parameterization, W_std, b_std, (int(s[0]), int(s[1])))


def affine_kernels(parameterization: str, nngp, ntk, W_std, b_std, fan_in_over_s):
    """NNGP and NTK after an affine layer, given the (spatially transformed) input covariance.

    ``nngp`` is E[x x'] of the layer's inputs averaged over the fan-in (for a convolution: after
    the filter's spatial averaging); ``ntk`` the input NTK transformed the same way (or None).
    """
    out_nngp = affine_cov(nngp, W_std, b_std)
    if ntk is None:
        return out_nngp, None
    if parameterization == "ntk" or isinstance(parameterization, ABC):  # ABC(0.5, 0) only
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
