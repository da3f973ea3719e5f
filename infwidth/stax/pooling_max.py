"""Max pooling: `MaxPool` and `GlobalMaxPool`, by Monte Carlo over the Gaussian windows.

In the infinite-width limit each channel of a Gaussian layer's output is a Gaussian process over
positions and inputs (Novak et al. 2019, arXiv:1810.05148), so max pooling's kernel is the
second moment of maxima of jointly Gaussian windows,

    nngp(x, x')[o, o'] = E[max_{i in W_o} u_i  max_{j in W_o'} v_j],

with ``(u, v)`` the pre-activations at ``x`` and ``x'``. The gradient of a maximum is the
indicator of its argmax, so the NTK is ``sum_ij P[argmax u = i, argmax v = j] ntk_in[i, j]``
(Jacot et al. 2018, arXiv:1806.07572). Neither expectation has a closed form for windows of more
than two positions (for two, ``max(a, b) = (a + b + |a - b|) / 2`` gives one, which the tests
use), so both are estimated from ``n_samples`` fixed draws per pair of inputs: the joint
Gaussian of the two inputs' positions is sampled once through a (jittered) Cholesky factor, with
antithetic pairs ``(z, -z)``, and every window pair reads the same draws; the estimate is
averaged over both orders of the pair, so it is exactly symmetric.

Error: the estimate is unbiased up to the Cholesky jitter (relative 1e-6 of the mean variance
in float64, 1e-4 in float32). The product of the window means, whose expectation is known
exactly, is subtracted as a control variate, so only the part of the maximum beyond the mean
is sampled. Its standard error falls as ``1 / sqrt(n_samples)``: against the closed form for
two-position windows (a Conv layer's output, 3 x 2 inputs) the relative Frobenius error measured
1.2-1.5% at 4096 draws and 0.4% at the default 16384 (the tests allow 1.5%). Draws are fixed by
``seed``, so the kernel is a deterministic, differentiable function of its inputs.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from ._layer import Layer, check_kernel_input, check_positive_int, check_shape, make_layer
from ._spatial import (
    check_fits,
    check_input_rank,
    check_strides,
    check_window,
    no_diagonal_spatial,
    out_size,
    resolve_padding,
    same_pads,
)


def _windows(spatial, window, strides, padding) -> np.ndarray:
    """(n_out, window size) flat input positions of each output window; positions in the padding
    are replaced by a repeat of a real one (a repeat does not change a maximum)."""
    per_axis = []
    for size, w, st in zip(spatial, window, strides):
        lo = same_pads(size, w, st)[0] if padding == "SAME" else 0
        starts = np.arange(out_size(size, w, st, padding)) * st - lo
        per_axis.append([[s + j for j in range(w) if 0 <= s + j < size] for s in starts])
    rows = []
    for combo in itertools.product(*per_axis):
        idx = [np.ravel_multi_index(p, spatial) for p in itertools.product(*combo)]
        rows.append(idx)
    width = max(len(r) for r in rows)
    return np.array([r + [r[0]] * (width - len(r)) for r in rows], np.int32)


def _to_flat(cov, lead: int, n_spatial: int):
    """(lead..., h, h', w, w') -> (lead..., h*w, h'*w')."""
    sp = cov.shape[lead:]
    perm = tuple(range(lead)) + tuple(lead + 2 * i for i in range(n_spatial)) + tuple(
        lead + 2 * i + 1 for i in range(n_spatial))
    p = int(np.prod(sp[0::2]))
    return jnp.transpose(cov, perm).reshape(cov.shape[:lead] + (p, p))


def _from_flat(cov, lead: int, out_spatial):
    """(lead..., o, o') -> (lead..., oh, oh', ow, ow')."""
    n = len(out_spatial)
    x = cov.reshape(cov.shape[:lead] + tuple(out_spatial) * 2)
    perm = tuple(range(lead)) + tuple(
        a for i in range(n) for a in (lead + i, lead + n + i))
    return jnp.transpose(x, perm)


def _jitter(dtype) -> float:
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def _pair_moments(a, b, c, t, idx, z, rectify):
    """Monte Carlo window-maximum moments for one pair of inputs.

    a, b: (P, P) position covariances of the two inputs; c: (P, P) their cross-covariance; t:
    (P, P) the cross NTK (or None); idx: (O, w) windows; z: (S, 2P) standard normal draws.
    Returns E[M M'] (O, O) and sum_ij P[argmax = i, j] t[i, j] (O, O). With ``rectify`` the
    maxima include 0 (``max(0, u_1, ...)``: ReLU before or after the pooling).
    """
    p = a.shape[0]
    joint = jnp.block([[a, c], [c.T, b]])
    scale = jnp.trace(joint) / (2 * p)
    joint = joint + (_jitter(joint.dtype) * scale + jnp.finfo(joint.dtype).tiny) * jnp.eye(
        2 * p, dtype=joint.dtype)
    chol = jnp.linalg.cholesky(joint)
    y = jnp.concatenate([z, -z]) @ chol.T  # (2S, 2P), antithetic pairs
    u = y[:, :p][:, idx]  # (2S, O, w)
    v = y[:, p:][:, idx]
    mu, mv = u.max(-1), v.max(-1)
    if rectify:
        mu, mv = jnp.maximum(mu, 0), jnp.maximum(mv, 0)
    # control variate: the window means, whose second moment is known exactly
    su, sv = u.mean(-1), v.mean(-1)
    exact = c[idx[:, :, None, None], idx[None, None, :, :]].mean((1, 3))
    nngp = (mu.T @ mv - su.T @ sv) / y.shape[0] + exact
    if t is None:
        return nngp, None
    hu = jax.nn.one_hot(jnp.argmax(u, -1), idx.shape[1], dtype=u.dtype)  # (2S, O, w)
    hv = jax.nn.one_hot(jnp.argmax(v, -1), idx.shape[1], dtype=v.dtype)
    if rectify:  # the maximum is 0 (no gradient) where every entry is negative
        hu, hv = hu * (mu > 0)[..., None], hv * (mv > 0)[..., None]
    prob = jnp.einsum("soi,spj->oipj", hu, hv) / y.shape[0]
    ntk = jnp.einsum("oipj,oipj->op", prob, t[idx[:, :, None, None], idx[None, None, :, :]])
    return nngp, ntk


def _symmetric_moments(a, b, c, t, idx, z, rectify):
    """`_pair_moments` averaged over the two orders of the pair, so that swapping the inputs
    transposes the estimate exactly (x2=None and x2=x1 agree, and kernels are symmetric)."""
    n1, t1 = _pair_moments(a, b, c, t, idx, z, rectify)
    n2, t2 = _pair_moments(b, a, c.T, None if t is None else t.T, idx, z, rectify)
    return (n1 + n2.T) / 2, None if t is None else (t1 + t2.T) / 2


def _max_pool_kernel(k, idx, out_spatial, n_samples, seed, chunk, rectify, name):
    """The Kernel after max pooling over the windows ``idx`` (flat positions)."""
    k = check_kernel_input(k, name, gaussian=True)
    no_diagonal_spatial(k, name)
    n_sp = k.n_spatial
    dtype = k.nngp.dtype
    nngp = _to_flat(k.nngp, 2, n_sp)
    ntk = None if k.ntk is None else _to_flat(k.ntk, 2, n_sp)
    p = nngp.shape[-1]
    z = jax.random.normal(jax.random.PRNGKey(seed), (n_samples, 2 * p), dtype)
    lead1 = 1 if k.diagonal_batch else 2

    def self_blocks(cov):
        flat = _to_flat(cov, lead1, n_sp)
        return flat if k.diagonal_batch else jnp.moveaxis(
            jnp.diagonal(flat, axis1=0, axis2=1), -1, 0)

    a = self_blocks(k.cov1)
    b = a if k.cov2 is None else self_blocks(k.cov2)
    n1, n2 = nngp.shape[:2]
    i1, i2 = np.divmod(np.arange(n1 * n2), n2)

    def one(args):
        i, j, c, t = args
        return _symmetric_moments(a[i], b[j], c, t, idx, z, rectify)

    cs = nngp.reshape((n1 * n2, p, p))
    ts = None if ntk is None else ntk.reshape((n1 * n2, p, p))
    out_nngp, out_ntk = jax.lax.map(one, (i1, i2, cs, ts), batch_size=chunk)

    def unflat(x, lead_shape):
        return None if x is None else _from_flat(x.reshape(lead_shape + x.shape[1:]),
                                                 len(lead_shape), out_spatial)

    def cov_of(blocks, cov):
        if cov is None:
            return None
        n = blocks.shape[0]
        if k.diagonal_batch:
            moments = jax.lax.map(
                lambda blk: _symmetric_moments(blk, blk, blk, None, idx, z, rectify)[0], blocks,
                batch_size=chunk)
            return unflat(moments, (n,))
        full = _to_flat(cov, 2, n_sp).reshape((n * n, p, p))
        r, s = np.divmod(np.arange(n * n), n)
        moments = jax.lax.map(lambda args: _symmetric_moments(blocks[args[0]], blocks[args[1]],
                                                         args[2], None, idx, z, rectify)[0],
                              (r, s, full), batch_size=chunk)
        return unflat(moments, (n, n))

    shape = lambda s: s[:1] + tuple(out_spatial) + s[-1:]  # noqa: E731
    return k.replace(nngp=unflat(out_nngp, (n1, n2)).astype(dtype),
                     ntk=None if ntk is None else unflat(out_ntk, (n1, n2)).astype(dtype),
                     cov1=cov_of(a, k.cov1), cov2=cov_of(b, k.cov2),
                     shape1=shape(k.shape1), shape2=shape(k.shape2), is_gaussian=False)


def _check_samples(n_samples, seed, chunk, layer):
    n_samples = check_positive_int(n_samples, "n_samples", layer)
    chunk = check_positive_int(chunk, "chunk", layer)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{layer}(seed={seed!r}): seed must be a non-negative integer.")
    return n_samples, int(seed), chunk


def MaxPool(window_shape, strides=None, padding: str = "VALID", *, rectify: bool = False,
            n_samples: int = 16384, seed: int = 0, chunk: int = 4) -> Layer:
    """Max pooling over windows of the spatial axes; its kernel by Monte Carlo over Gaussian
    windows (see the module docstring for the rule and its error). Not in neural-tangents.

    Args:
      window_shape: window size per spatial axis, e.g. ``(2, 2)``.
      strides: step per spatial axis; ``None`` means 1 (as `AvgPool`).
      padding: ``'VALID'`` or ``'SAME'`` (positions in the padding never win the maximum).
      rectify: apply ReLU first (``MaxPool(Relu(h)) = Relu(MaxPool(h))``; a kernel cannot
        follow a nonlinearity into a maximum, so a CNN's Relu and MaxPool are one layer).
      n_samples: Monte Carlo draws per pair of inputs (doubled by antithetic pairs).
      seed: the draws' seed; the kernel is a fixed function of its inputs for a given seed.
      chunk: pairs of inputs evaluated at once (memory ``chunk * n_samples * positions``).

    The input must be Gaussian (after Dense or Conv: put ``rectify=True`` here rather than a
    Relu before) and the kernel needs covariances between positions (``diagonal_spatial=False``);
    the output is not Gaussian.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(
      ...     stax.Conv(16, (3,), padding='SAME'), stax.MaxPool((2,), strides=(2,)))
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 3))
      >>> kernel_fn(x, get='nngp').shape  # (N1, N2, T, T') after pooling 6 -> 3
      (2, 2, 3, 3)
      >>> apply_fn(init_fn(jax.random.PRNGKey(1), x.shape)[1], x).shape
      (2, 3, 16)
    """
    name = "MaxPool"
    window_shape = check_window(window_shape, "window_shape", name)
    n = len(window_shape)
    strides = check_strides(strides, n, name)
    padding = resolve_padding(padding, name)
    if padding not in ("VALID", "SAME"):
        raise ValueError(f"{name}(padding={padding!r}): padding must be 'VALID' or 'SAME'.")
    n_samples, seed, chunk = _check_samples(n_samples, seed, chunk, name)
    if not isinstance(rectify, (bool, np.bool_)):
        raise ValueError(f"{name}(rectify={rectify!r}): rectify must be True or False.")

    def geometry(input_shape):
        check_shape(input_shape, name, 3)
        check_input_rank(input_shape, n, name, "window_shape")
        spatial = tuple(input_shape[1:-1])
        check_fits(spatial, window_shape, padding, name, "window_shape")
        return spatial, tuple(out_size(s, w, st, padding)
                              for s, w, st in zip(spatial, window_shape, strides))

    def init_fn(key, input_shape):
        _, out = geometry(input_shape)
        return (input_shape[0],) + out + (input_shape[-1],), ()

    def apply_fn(params, x, **kwargs):
        x = jax.nn.relu(x) if rectify else x
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1,) + window_shape + (1,),
                                     (1,) + strides + (1,), padding)

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name, gaussian=True)
        spatial, out = geometry(k.shape1)
        idx = _windows(spatial, window_shape, strides, padding)
        return _max_pool_kernel(k, idx, out, n_samples, seed, chunk, rectify, name)

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None, smoothness=0)


def GlobalMaxPool(*, rectify: bool = False, n_samples: int = 16384, seed: int = 0,
                  chunk: int = 4) -> Layer:
    """The maximum over all positions of each channel: ``(N, *spatial, C) -> (N, C)``; its
    kernel by Monte Carlo over the Gaussian positions as `MaxPool` (see the module docstring;
    ``rectify=True`` applies ReLU first). Not in neural-tangents.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> _, _, kernel_fn = stax.serial(stax.Conv(8, (3, 3), padding='SAME'),
      ...                               stax.GlobalMaxPool(), stax.Dense(1))
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2))
      >>> kernel_fn(x, get='ntk').shape
      (3, 3)
    """
    name = "GlobalMaxPool"
    n_samples, seed, chunk = _check_samples(n_samples, seed, chunk, name)
    if not isinstance(rectify, (bool, np.bool_)):
        raise ValueError(f"{name}(rectify={rectify!r}): rectify must be True or False.")

    def init_fn(key, input_shape):
        check_shape(input_shape, name, 3)
        return (input_shape[0], input_shape[-1]), ()

    def apply_fn(params, x, **kwargs):
        x = jax.nn.relu(x) if rectify else x
        return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))

    def kernel_map(k, **kwargs):
        k = check_kernel_input(k, name, gaussian=True)
        check_shape(k.shape1, name, 3)
        p = int(np.prod(k.shape1[1:-1]))
        return _max_pool_kernel(k, np.arange(p, dtype=np.int32)[None], (), n_samples, seed,
                                chunk, rectify, name)

    return make_layer(name, init_fn, apply_fn, kernel_map, shape_fn=None, smoothness=0)

