"""`BatchNorm`: batch normalisation and its infinite-width limit over a finite batch."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..kernel import Kernel
from . import _batch_norm_mc as mc
from . import _batch_norm_quad as quad
from ._layer import Layer, check_kernel_input, make_layer
from ._layout import batch_diagonal
from ._layouts import check_layout, is_default_layout, relaid
from .activations import abrelu_dual

_MODES = ("train", "eval")


def _to_matrix(a, lead: int, n_spatial: int):
    """``(N1, N2, H, H', W, W', ...)`` -> ``(N1 H W..., N2 H' W'...)`` (``lead`` = 2)."""
    first = [0] + [2 + 2 * i for i in range(n_spatial)]
    second = [1] + [3 + 2 * i for i in range(n_spatial)]
    t = jnp.transpose(a, first + second)
    rows = math.prod(t.shape[:1 + n_spatial])
    return t.reshape(rows, -1)


def _from_matrix(a, n1: int, n2: int, spatial: tuple[int, ...]):
    n_s = len(spatial)
    t = a.reshape((n1, *spatial, n2, *spatial))
    order = [0, 1 + n_s] + [a for i in range(n_s) for a in (1 + i, 2 + n_s + i)]
    return jnp.transpose(t, order)


def _check_float(v, arg: str, name: str, positive: bool = False):
    try:
        ok = v is None or float(v) >= 0 and (not positive or float(v) > 0)
    except (TypeError, ValueError):
        ok = hasattr(v, "dtype")  # a (traced) array, for jax.grad
    if not ok:
        raise ValueError(f"{name}: {arg} must be a non-negative number (or None); got {v!r}.")


def BatchNorm(axis=None, eps: float = 1e-12, mode: str = "train", gamma_std=None,
              beta_std=None, mean=0.0, var=1.0, batch_axis: int = 0,
              channel_axis: int = -1, *, n_samples: int = 65536, seed: int = 0) -> Layer:
    """Batch normalisation (Ioffe & Szegedy 2015) and its infinite-width kernel over a finite
    batch (Yang et al. 2019, "A mean field theory of batch normalization", arXiv:1902.08129).

    In ``'train'`` mode ``apply_fn`` normalises each channel over the batch axis and the other
    axes in ``axis`` (default: every axis but the channel axis, as Flax's ``BatchNorm``):
    ``y = (h - mean) / sqrt(var + eps)``; then ``y * gamma_std * gamma + beta_std * beta`` if
    ``gamma_std`` / ``beta_std`` are given, with ``gamma`` initialised to ones and ``beta`` to
    zeros (Flax's initialisation, with neural-tangents' NTK-style factors). In ``'eval'`` mode
    the statistics are the fixed numbers ``mean`` and ``var``: an affine map.

    The limit: each channel of the Gaussian input ``h`` (``M`` entries: the batch times its
    positions) becomes ``y = sqrt(M) u / sqrt(|u|^2 + M eps)`` with ``u = h - mean(h)``, so the
    NNGP is ``M E[u u^T / (|u|^2 + M eps)]`` and the NTK ``E[J theta J^T]`` with ``J = dy/dh``;
    both are computed by Laplace integrals and quadrature (`infwidth.stax._batch_norm_quad`,
    relative error about 1e-12; 1e-8 for two batches). Gamma adds ``gamma_std**2`` times the
    NNGP to the NTK and scales both by ``gamma_std**2``; beta adds ``beta_std**2`` to the NTK.

    ``kernel_fn(x1, x2)`` is the kernel of the network run on ``x1`` and on ``x2`` separately,
    each batch with its own statistics (as ``apply_fn(params, x1)`` and ``apply_fn(params,
    x2)``, and `infwidth.empirical.monte_carlo_kernel_fn`, compute it); it needs the full
    covariance of each batch, ``diagonal_batch=False``. ``x2`` equal to ``x1`` (bitwise) gives
    what ``x2=None`` gives. The kernel of a pair depends on the whole batch: `infwidth.batch`
    never cuts such a call into tiles. The output is not Gaussian (it lies on a sphere); any
    elementwise nonlinearity with a derivative may follow directly, for one batch or two (see
    `nonlinearity_after`): the ReLU family (`Relu`, `LeakyRelu`, `Abs`, `ABRelu`) exactly, the
    others (`Erf`, `Tanh`, `Gelu`, ...) by a Monte Carlo rule of ``n_samples`` fixed draws
    (`infwidth.stax._batch_norm_mc`). The NTK is
    finite when the centred covariance has rank at least 3 (batches of at least 4 entries;
    ``E[1 / |u|^2]`` diverges below), which ``kernel_fn`` checks from the shapes.

    Args:
      axis: the axes normalised over: ``None`` (the batch and spatial axes) or axes that
        contain ``batch_axis`` and all spatial axes, never the channel axis.
      eps: added to the variance (train and eval modes).
      mode: ``'train'`` (batch statistics) or ``'eval'`` (the constants ``mean``, ``var``).
      gamma_std, beta_std: the NTK-style factors of the learned scale and shift (``None``: no
        such parameter).
      mean, var: the running statistics of ``'eval'`` mode (numbers, shared by all channels;
        in the limit the kernel becomes ``(K + mean**2) / (var + eps)``).
      batch_axis, channel_axis: the inputs' batch and channel axes (any layout).
      n_samples, seed: the common random numbers of the Monte Carlo rule for a nonlinearity
        that is not in the ReLU family directly after this layer (error ~ 1/sqrt(n_samples)).

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.BatchNorm())
      >>> x = jnp.array([[1., 0.], [0., 1.]])   # two inputs: y = +-(1, -1) in every channel
      >>> kernel_fn(x, get='nngp').round(6).tolist()
      [[1.0, -1.0], [-1.0, 1.0]]
      >>> relu_after = stax.serial(stax.Dense(8), stax.BatchNorm(), stax.Relu())[2]
      >>> relu_after(x, get='nngp').round(4).tolist()  # relu(+-1): 1 for one of the two
      [[0.5, 0.0], [0.0, 0.5]]
    """
    name = f"BatchNorm(axis={axis!r}, mode={mode!r})"
    if mode not in _MODES:
        raise ValueError(f"{name}: mode must be 'train' (batch statistics) or 'eval' (fixed "
                         f"statistics mean= and var=).")
    _check_float(eps, "eps", name)
    _check_float(gamma_std, "gamma_std", name)
    _check_float(beta_std, "beta_std", name)
    _check_float(var, "var", name)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"{name}: n_samples must be an integer >= 2 (the Monte Carlo draws of "
                         f"a nonlinearity after BatchNorm); got {n_samples!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{name}: seed must be an integer; got {seed!r}.")
    try:
        float(mean)
    except TypeError as e:
        if not hasattr(mean, "dtype"):
            raise ValueError(f"{name}: mean must be a number; got {mean!r}.") from e
    if not is_default_layout(batch_axis, channel_axis):
        b, c = check_layout(batch_axis, channel_axis, name)

        def canonical(ndim):
            bb, cc = b % ndim, c % ndim
            spatial = [i for i in range(ndim) if i not in (bb, cc)]
            moved = None if axis is None else tuple(
                0 if a % ndim == bb else ndim - 1 if a % ndim == cc
                else 1 + spatial.index(a % ndim) for a in _axes_tuple(axis, name))
            return BatchNorm(moved, eps, mode, gamma_std, beta_std, mean, var,
                             n_samples=n_samples, seed=seed)

        return relaid(name, canonical, b, c, mixes_batch=mode == "train")

    def norm_axes(ndim):
        if axis is None:
            return tuple(range(ndim - 1))
        axes = sorted({a % ndim if -ndim <= a < ndim else _bad_axis(a, ndim, name)
                       for a in _axes_tuple(axis, name)})
        if ndim - 1 in axes:
            raise ValueError(f"{name}: axis must not contain the channel axis ({ndim - 1}); "
                             f"BatchNorm normalises each channel separately.")
        if 0 not in axes:
            raise ValueError(f"{name}: axis must contain the batch axis 0 (batch "
                             f"normalisation); for statistics over positions or channels use "
                             f"LayerNorm.")
        if tuple(axes) != tuple(range(ndim - 1)):
            raise NotImplementedError(
                f"{name}: kernel and network are implemented for statistics over the batch "
                f"and all spatial axes {tuple(range(ndim - 1))} (axis=None); got {tuple(axes)}.")
        return tuple(axes)

    def init_fn(key, input_shape):
        norm_axes(len(input_shape))
        n_c = input_shape[-1]
        params = ()
        if gamma_std is not None or beta_std is not None:
            params = (jnp.ones((n_c,)) if gamma_std is not None else (),
                      jnp.zeros((n_c,)) if beta_std is not None else ())
        return tuple(input_shape), params

    def apply_fn(params, x, **kwargs):
        if mode == "train":
            axes = norm_axes(x.ndim)
            mu = jnp.mean(x, axes, keepdims=True)
            y = (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, axes, keepdims=True) + eps)
        else:
            y = (x - mean) / jnp.sqrt(var + eps)
        if params:
            gamma, beta = params
            per_channel = (1,) * (y.ndim - 1) + (-1,)  # explicit ranks (rank promotion 'raise')
            if gamma_std is not None:
                y = gamma_std * jnp.reshape(gamma, per_channel) * y
            if beta_std is not None:
                y = y + beta_std * jnp.reshape(beta, per_channel)
        return y

    def affine(k, nngp, ntk, cov1, cov2):
        g2 = 1.0 if gamma_std is None else gamma_std**2
        if ntk is not None:
            ntk = g2 * ntk + (0.0 if gamma_std is None else g2 * nngp) + (
                0.0 if beta_std is None else beta_std**2)
        return k.replace(nngp=g2 * nngp, ntk=ntk, cov1=g2 * cov1,
                         cov2=None if cov2 is None else g2 * cov2)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name, gaussian=True)
        norm_axes(len(k.shape1))
        if k.mask1 is not None or k.mask2 is not None:
            raise NotImplementedError(f"{name}: masked inputs (mask_constant) are not "
                                      f"supported.")
        if mode == "eval":
            d = var + eps
            out = affine(k, (k.nngp + mean**2) / d, None if k.ntk is None else k.ntk / d,
                         (k.cov1 + mean**2) / d, None if k.cov2 is None else
                         (k.cov2 + mean**2) / d)
            zero_mean = isinstance(mean, (int, float)) and mean == 0
            return out.replace(is_gaussian=k.is_gaussian and zero_mean)
        out = affine(*_train_kernel(k, eps, name)).replace(is_gaussian=False)
        return out.with_law(_Normalized(k, eps, gamma_std, beta_std, name, n_samples, seed))

    return make_layer("BatchNorm", init_fn, apply_fn, kernel_map, shape_fn=lambda s: s,
                      mixes_batch=mode == "train")


class _Normalized(NamedTuple):
    """The law of BatchNorm's train-mode outputs: the Gaussian kernel before it and the
    layer's constants (`Kernel.with_law`), read by the nonlinearity that follows."""
    k_in: Kernel
    eps: float
    gamma_std: float | None
    beta_std: float | None
    name: str
    n_samples: int = 65536
    seed: int = 0


def nonlinearity_after(k: Kernel, law: _Normalized, layer: str, family: str,
                       hparams: dict, fn=None, smoothness: float = math.inf) -> Kernel:
    """The kernel of the elementwise nonlinearity ``layer`` applied to BatchNorm's output
    ``k`` (train mode), from the Gaussian kernel before the normalisation.

    The ReLU family ``ABRelu(a, b)`` (Relu, LeakyRelu, Abs) is positively homogeneous, so the
    normalisation's ``1 / |u|`` comes out of it and the Laplace integrals of
    `infwidth.stax._batch_norm_quad.one_batch_abrelu` give the NNGP and the NTK exactly (to
    quadrature accuracy, about 1e-12); for two batches ``kernel_fn(x1, x2)``, each normalised
    with its own statistics, the two-dimensional integrals of `two_batches_abrelu` (about
    1e-8). The learned scale ``gamma`` (>= 0) commutes with
    ``phi``; its gradient adds ``gamma_std**2`` times the NNGP to the NTK, and ``beta``'s adds
    ``beta_std**2 E[phi'(u) phi'(u')]``. Any other ``fn`` with a derivative (``smoothness >=
    0``) goes through the Monte Carlo rule of `infwidth.stax._batch_norm_mc` (BatchNorm's
    ``n_samples`` and ``seed``); a jump (Sign) has no NTK there and raises.
    """
    if family != "ABRelu":
        if fn is None or smoothness < 0:
            why = ("has no pointwise function to sample" if fn is None else
                   "jumps (its derivative is a point mass, which the Monte Carlo rule cannot "
                   "sample)")
            raise ValueError(
                f"{layer} after {law.name}: the normalised activations are not Gaussian (they "
                f"lie on a sphere), so the kernel is computed by sampling, and {layer} {why}. "
                f"Use a continuous nonlinearity, or put an affine layer such as Dense between "
                f"BatchNorm and {layer}.")
        consts = (law.eps, law.gamma_std, law.beta_std, fn, law.n_samples, law.seed)
        return _assemble(k, law, lambda c, theta: mc.one_batch(c, theta, *consts),
                         lambda c1, c2, cross, theta: mc.two_batches(c1, c2, cross, theta,
                                                                     *consts))
    a, b = hparams["a"], hparams["b"]
    g2 = 1.0 if law.gamma_std is None else law.gamma_std**2
    d_nngp_fn = abrelu_dual(a, b)[1]

    def finish(nngp, ntk, centred_cross, var1, var2):
        """gamma's and beta's terms (from the centred Gaussian covariances)."""
        if ntk is not None:
            ntk = g2 * ntk + (0.0 if law.gamma_std is None else g2 * nngp)
            if law.beta_std is not None:
                ntk = ntk + law.beta_std**2 * d_nngp_fn(centred_cross, var1[:, None],
                                                        var2[None, :])
        return g2 * nngp, ntk

    def one(c, theta):
        centred = quad.centred(c)
        var = jnp.diagonal(centred)
        return finish(*quad.one_batch_abrelu(c, theta, law.eps, a, b), centred, var, var)

    def two(c1, c2, cross, theta):
        nngp, ntk = quad.two_batches_abrelu(c1, c2, cross, theta, law.eps, a, b)
        return finish(nngp, ntk, quad.centred_cross(cross), jnp.diagonal(quad.centred(c1)),
                      jnp.diagonal(quad.centred(c2)))

    return _assemble(k, law, one, two)


def _assemble(k: Kernel, law: _Normalized, one, two) -> Kernel:
    """The Kernel after the nonlinearity, from its rule on covariance matrices of the
    normalised entries: ``one(c, theta)`` for one batch, ``two(c1, c2, cross, theta)`` for two
    batches normalised separately (each ``-> (nngp, ntk)``); a copy of ``x1`` as ``x2`` gives
    what ``x2=None`` gives, and each batch's own kernel is the one-batch rule's."""
    k_in = law.k_in
    spatial = tuple(k_in.shape1[1:-1])
    n1, n2 = k_in.shape1[0], k_in.shape2[0]

    def mat(x):
        return None if x is None else _to_matrix(x, 2, k_in.n_spatial)

    def back(x, a1, a2):
        return None if x is None else _from_matrix(x, a1, a2, spatial)

    nngp_m, ntk_m = mat(k_in.nngp), mat(k_in.ntk)
    if k_in.cov2 is None:
        nngp, ntk = one(nngp_m, ntk_m)
        nngp, ntk = back(nngp, n1, n1), back(ntk, n1, n1)
        cov1 = batch_diagonal(nngp) if k.diagonal_batch else nngp
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=None, is_gaussian=False)
    # two batches, each normalised with its own statistics (BatchNorm checked the layout)
    c1, c2 = mat(k_in.cov1), mat(k_in.cov2)
    nngp, ntk = _one_batch_if_copy(c1, c2, nngp_m, two(c1, c2, nngp_m, ntk_m),
                                   lambda: one(nngp_m, ntk_m))
    return k.replace(nngp=back(nngp, n1, n2), ntk=back(ntk, n1, n2),
                     cov1=back(one(c1, None)[0], n1, n1), cov2=back(one(c2, None)[0], n2, n2),
                     is_gaussian=False)


def _one_batch_if_copy(c1, c2, cross, two, one_batch):
    """``two`` (the two-batch ``(nngp, ntk)``), or ``one_batch()`` where ``x2`` is a copy of
    ``x1`` (bitwise equal kernels), as ``x2=None`` gives."""
    if c1.shape != c2.shape:
        return two
    same = jnp.all(c1 == c2) & jnp.all(c1 == cross)
    return tuple(None if t is None else jnp.where(same, o, t)
                 for t, o in zip(two, one_batch()))


def _axes_tuple(axis, name):
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not axes or any(isinstance(a, bool) or not isinstance(a, (int, np.integer))
                       for a in axes):
        raise TypeError(f"{name}: axis must be None, an int or a tuple of ints containing the "
                        f"batch axis, e.g. axis=0.")
    return tuple(int(a) for a in axes)


def _bad_axis(a, ndim, name):
    raise ValueError(f"{name}: axis {a} is not an axis of inputs of rank {ndim}.")


def _train_kernel(k, eps, name):
    """``(k, nngp, ntk, cov1, cov2)`` of the normalised activations (train mode)."""
    n_s = k.n_spatial
    if n_s and k.diagonal_spatial:
        raise ValueError(f"{name}: the statistics mix positions, which needs the covariance "
                         f"of every pair of positions; call kernel_fn with "
                         f"diagonal_spatial=False.")
    spatial = tuple(k.shape1[1:-1])
    per = math.prod(spatial)
    n1, n2 = k.shape1[0], k.shape2[0]
    two = k.cov2 is not None
    for n, arg in ((n1, "x1"), (n2, "x2")) if two else ((n1, "x1"),):
        if n * per < 2:
            raise ValueError(f"{name}: {arg} has {n} input(s) of {per} position(s); the "
                             f"variance over one entry is zero, so batch statistics need at "
                             f"least 2 entries (a batch of 2 or more).")
        if k.ntk is not None and n * per < 4:
            raise ValueError(f"{name}: {arg} has {n * per} entries per channel; with fewer "
                             f"than 4 the NTK of batch normalisation is infinite (E[1/|u|^2] "
                             f"diverges). Use a larger batch or get='nngp'.")
    if two and k.diagonal_batch:
        raise ValueError(f"{name}: kernel_fn(x1, x2) normalises each batch with its own "
                         f"statistics, which needs the covariance of every pair of inputs "
                         f"in each batch; call kernel_fn with diagonal_batch=False (or x2=None "
                         f"for one batch).")
    mat = (lambda a: None if a is None else _to_matrix(a, 2, n_s))
    back = (lambda a, a1, a2: None if a is None else _from_matrix(a, a1, a2, spatial))
    nngp_m, ntk_m = mat(k.nngp), mat(k.ntk)
    if not two:
        nngp, ntk = quad.one_batch(nngp_m, ntk_m, eps)
        nngp, ntk = back(nngp, n1, n1), back(ntk, n1, n1)
        cov1 = batch_diagonal(nngp) if k.diagonal_batch else nngp
        return k, nngp, ntk, cov1, None
    c1, c2 = mat(k.cov1), mat(k.cov2)
    cov1 = quad.one_batch(c1, None, eps)[0]
    cov2 = quad.one_batch(c2, None, eps)[0]
    nngp, ntk = _one_batch_if_copy(c1, c2, nngp_m, quad.two_batches(c1, c2, nngp_m, ntk_m, eps),
                                   lambda: quad.one_batch(nngp_m, ntk_m, eps))
    return (k, back(nngp, n1, n2), back(ntk, n1, n2), back(cov1, n1, n1),
            back(cov2, n2, n2))
