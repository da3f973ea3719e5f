"""`GlobalSelfAttention`: multi-head dot-product self-attention and its infinite-width kernel.

Follows Hron et al. 2020, "Infinite attention: NNGP and NTK for deep attention networks"
(arXiv:2006.10540), with neural-tangents' arguments, parameters and conventions. The kernel is
taken as the number of heads and the key, query and value widths go to infinity.

* ``linear_scaling=True`` (the default): queries and keys share their weights and their dot
  products are divided by the key width, so the attention logits converge to the deterministic
  ``W_query_std * W_key_std * cov(x_t, x_s)``; the attention weights ``G`` are the chosen
  mechanism (softmax over keys, identity, abs, relu) of those logits and the output covariance is
  ``OV**2 * G1 K G2^T + b_std**2``, with ``OV = W_out_std * W_value_std``.
* ``linear_scaling=False``: independent queries and keys, 1/sqrt(key width) scaling; the logits
  stay Gaussian. ``'IDENTITY'`` has a closed form (as in neural-tangents); ``'RELU'`` and
  ``'ABS'`` are exact by the arc-cosine kernels of each pair of logits, and ``'SOFTMAX'``
  (where neural-tangents raises) is a Monte Carlo rule over the Gaussian logits
  (`infwidth.stax.attention_gaussian_logits`).

Positional embeddings (``pos_emb_type='SUM'`` or ``'CONCAT'``) are random Gaussian embeddings
with covariance ``R`` between positions: the identity (``pos_emb_decay_fn=None``) or
``pos_emb_decay_fn(sum_axes |i - j|**pos_emb_p_norm)``; they enter keys and queries (and, with
``val_pos_emb=True``, values) as a weighted sum of the input covariance and ``R``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _masking
from ._layer import Layer, check_nonnegative, check_positive_int, make_layer
from ._layouts import is_default_layout, relaid
from .attention_gaussian_logits import gaussian_logit_pairs, ntk_parameterization_terms

MECHANISMS = {
    "SOFTMAX": lambda g: jax.nn.softmax(g, axis=-1),
    "IDENTITY": lambda g: g,
    "ABS": jnp.abs,
    "RELU": lambda g: jnp.maximum(g, 0),
}
POS_EMB_TYPES = ("NONE", "SUM", "CONCAT")
_NEG_INF = -1e20  # the logit of an absent key (masked inputs): finite, so softmax stays defined


def _mask_keys(logits, absent, mechanism: str):
    """Logits ``(..., P, P')`` with the absent keys ``P'`` (``absent`` broadcasting to them)
    removed from the attention: -inf before a softmax, 0 for the other mechanisms."""
    fill = _NEG_INF if mechanism == "SOFTMAX" else 0.0
    return jnp.where(absent, jnp.asarray(fill, logits.dtype), logits)


def _flatten_pairs(mat, n_batch: int):
    """(batch..., h, h', w, w', ...) -> (batch..., P, P') with P = h * w * ..."""
    n_sp = (mat.ndim - n_batch) // 2
    sizes = mat.shape[n_batch::2]
    perm = (tuple(range(n_batch)) + tuple(n_batch + 2 * i for i in range(n_sp))
            + tuple(n_batch + 2 * i + 1 for i in range(n_sp)))
    p = math.prod(sizes)
    return jnp.transpose(mat, perm).reshape(mat.shape[:n_batch] + (p, p)), sizes


def _unflatten_pairs(mat, n_batch: int, sizes):
    """Inverse of :func:`_flatten_pairs`."""
    n_sp = len(sizes)
    mat = mat.reshape(mat.shape[:n_batch] + tuple(sizes) * 2)
    perm = tuple(range(n_batch)) + tuple(
        a for i in range(n_sp) for a in (n_batch + i, n_batch + n_sp + i))
    return jnp.transpose(mat, perm)


def _pos_emb_cov(sizes, p_norm, decay_fn):
    """Covariance (P, P) of the positional embeddings between flattened positions."""
    p = math.prod(sizes)
    if decay_fn is None:
        return jnp.eye(p)
    grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    coords = np.stack([g.ravel() for g in grids], -1).astype(float)  # (P, S)
    dist = np.sum(np.abs(coords[:, None, :] - coords[None, :, :]) ** p_norm, -1)
    return jnp.asarray(decay_fn(jnp.asarray(dist)))


def GlobalSelfAttention(n_chan_out: int, n_chan_key: int, n_chan_val: int, n_heads: int,
                        linear_scaling: bool = True, W_key_std: float = 1.0,
                        W_value_std: float = 1.0, W_query_std: float = 1.0,
                        W_out_std: float = 1.0, b_std: float | None = None,
                        attention_mechanism: str = "SOFTMAX", pos_emb_type: str = "NONE",
                        pos_emb_p_norm: float = 2, pos_emb_decay_fn: Callable | None = None,
                        n_chan_pos_emb: int | None = None, W_pos_emb_std: float = 1.0,
                        val_pos_emb: bool = False, batch_axis: int = 0,
                        channel_axis: int = -1, *, n_samples: int = 1024,
                        seed: int = 0, _ntk_terms=None, _logit_mask=None) -> Layer:
    """Global multi-head self-attention over the positions of ``(N, T, C)`` (or any
    ``(N, spatial..., C)``) inputs, with neural-tangents' signature and semantics.

    The finite layer computes, per head ``h``, ``G_h = mechanism(Q_h K_h^T * scale)`` and
    ``G_h V_h`` (``Q, K, V`` are the inputs times ``N(0, 1)`` matrices), concatenates the heads,
    multiplies by ``W_out`` and scales by ``W_out_std * W_value_std / sqrt(n_chan_val * n_heads *
    n_chan_in)``; ``scale`` is ``W_query_std * W_key_std / (n_chan_in * n_chan_key)`` with tied
    query and key weights when ``linear_scaling`` (else ``/ sqrt(n_chan_key)`` and independent
    weights). Parameters are ``(W_query or None, W_key, W_value, W_out, b, pos_emb)`` as in
    neural-tangents. See the module docstring for the kernel (Hron et al. 2020,
    arXiv:2006.10540). The kernel needs ``diagonal_spatial=False``.

    With ``linear_scaling=False`` and ``'SOFTMAX'`` the kernel is an average over
    ``n_samples`` draws of the Gaussian logits (fixed by ``seed``: the same inputs always give
    the same kernel, and ``x2`` = a copy of ``x1`` gives the ``x2=None`` kernel). Its error is
    the Monte Carlo error, falling like ``1 / sqrt(n_samples)``; measured relative Frobenius
    errors of one pair's NNGP block against 131072 draws (float64, sequences of length 3 and
    8, ``W_query_std * W_key_std = 1``): 2-7% at ``n_samples=1024``, 2-4% at 4096. Raise
    ``n_samples`` for more digits (cost linear in it); the cost per pair of inputs is about
    ``n_samples * 30 * T**3`` flops for sequences of length ``T``.

    Args:
      n_chan_out, n_chan_key, n_chan_val, n_heads: widths of the finite layer.
      linear_scaling: 1/width logits with tied query-key weights (True) or 1/sqrt(width).
      W_key_std, W_query_std: enter only through their product.
      W_value_std, W_out_std: enter only through their product.
      b_std: output bias standard deviation, or ``None`` for no bias.
      attention_mechanism: ``'SOFTMAX'``, ``'IDENTITY'``, ``'ABS'`` or ``'RELU'``.
      pos_emb_type: ``'NONE'``, ``'SUM'`` or ``'CONCAT'``.
      pos_emb_p_norm, pos_emb_decay_fn: positional covariance ``decay_fn(sum |i - j|**p)``;
        ``None`` gives independent embeddings per position.
      n_chan_pos_emb: embedding channels for 'CONCAT' (default: the input's).
      W_pos_emb_std: embedding standard deviation.
      val_pos_emb: whether values see the embeddings too.
      batch_axis, channel_axis: the inputs' batch and channel axes (any layout).
      n_samples: draws of the Monte Carlo rule of ``linear_scaling=False`` with ``'SOFTMAX'``
        (a multiple of 4; not in neural-tangents, which raises there); unused otherwise.
      seed: the seed of those draws.
      _ntk_terms: internal (`from_flax`): how the Monte Carlo rule's expectations make the
        NTK (a hashable `ntk_parameterization_terms`-like function), for parameterizations
        other than this layer's.
      _logit_mask: internal (`from_flax`): a (P, P) boolean array of the query-key pairs that
        never attend (a causal mask), for the Monte Carlo rule only.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(
      ...     stax.Dense(16), stax.GlobalSelfAttention(16, 8, 8, 2), stax.Relu())
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4))  # 3 sequences of length 5
      >>> _, params = init_fn(jax.random.PRNGKey(1), x.shape)
      >>> apply_fn(params, x).shape
      (3, 5, 16)
      >>> kernel_fn(x, get='nngp').shape  # (N1, N2, T, T')
      (3, 3, 5, 5)
      >>> softmax_sqrt = stax.GlobalSelfAttention(16, 8, 8, 2, linear_scaling=False,
      ...                                         n_samples=256)  # 1 / sqrt(d_key) logits
      >>> k = softmax_sqrt.kernel_fn(x, get='nngp', diagonal_spatial=False)
      >>> bool(jnp.allclose(k, k.transpose(1, 0, 3, 2), atol=1e-6))  # symmetric, as the draws
      True
    """
    name = "GlobalSelfAttention"
    for arg, v in (("n_chan_out", n_chan_out), ("n_chan_key", n_chan_key),
                   ("n_chan_val", n_chan_val), ("n_heads", n_heads)):
        check_positive_int(v, arg, name)
    for arg, v in (("W_key_std", W_key_std), ("W_value_std", W_value_std),
                   ("W_query_std", W_query_std), ("W_out_std", W_out_std),
                   ("W_pos_emb_std", W_pos_emb_std)):
        check_nonnegative(v, arg, name)
    check_nonnegative(b_std, "b_std", name, allow_none=True)
    mechanism = str(getattr(attention_mechanism, "name", attention_mechanism)).upper()
    if mechanism not in MECHANISMS:
        raise ValueError(f"{name}(attention_mechanism={attention_mechanism!r}): must be one of "
                         f"{', '.join(repr(m) for m in MECHANISMS)}.")
    pos_type = str(getattr(pos_emb_type, "name", pos_emb_type)).upper()
    if pos_type not in POS_EMB_TYPES:
        raise ValueError(f"{name}(pos_emb_type={pos_emb_type!r}): must be one of "
                         f"{', '.join(repr(p) for p in POS_EMB_TYPES)}.")
    if n_chan_pos_emb is not None:
        check_positive_int(n_chan_pos_emb, "n_chan_pos_emb", name)
    check_positive_int(n_samples, "n_samples", name)
    if n_samples % 4:
        raise ValueError(f"{name}(n_samples={n_samples}): the Monte Carlo rule of softmax "
                         f"attention with linear_scaling=False draws its logits in groups of 4 "
                         f"(each draw, its negative and both with the inputs exchanged); use a "
                         f"multiple of 4, e.g. n_samples={4 * (n_samples // 4 + 1)}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}(seed={seed!r}): the seed of the Monte Carlo rule must be an "
                        f"integer.")
    if not is_default_layout(batch_axis, channel_axis):  # the channel-last layer, moved
        return relaid(name, GlobalSelfAttention(
            n_chan_out, n_chan_key, n_chan_val, n_heads, linear_scaling=linear_scaling,
            W_key_std=W_key_std, W_value_std=W_value_std, W_query_std=W_query_std,
            W_out_std=W_out_std, b_std=b_std, attention_mechanism=attention_mechanism,
            pos_emb_type=pos_emb_type, pos_emb_p_norm=pos_emb_p_norm,
            pos_emb_decay_fn=pos_emb_decay_fn, n_chan_pos_emb=n_chan_pos_emb,
            W_pos_emb_std=W_pos_emb_std, val_pos_emb=val_pos_emb, n_samples=n_samples,
            seed=seed, _ntk_terms=_ntk_terms, _logit_mask=_logit_mask), batch_axis,
            channel_axis)
    if _logit_mask is not None and (linear_scaling or mechanism != "SOFTMAX"):
        raise ValueError(f"{name}: a logit mask needs linear_scaling=False and 'SOFTMAX'.")
    QK_std = W_query_std * W_key_std
    OV_std = W_out_std * W_value_std
    attn = MECHANISMS[mechanism]

    def check_sequence(shape, where):
        if len(shape) < 3:
            raise ValueError(f"{name}: {where} has shape {tuple(shape)}, but attention needs "
                             f"sequences (N, T, C) (or (N, spatial..., C)) to attend over. Add a "
                             f"length axis, e.g. x[:, None, :], or use Dense for flat inputs.")

    def n_pos_emb(n_in):
        if pos_type == "SUM" and n_chan_pos_emb not in (None, n_in):
            raise ValueError(f"{name}(pos_emb_type='SUM', n_chan_pos_emb={n_chan_pos_emb}): "
                             f"summed embeddings need as many channels as the input ({n_in}); "
                             f"leave n_chan_pos_emb=None or use 'CONCAT'.")
        return n_in if n_chan_pos_emb is None else n_chan_pos_emb

    def init_fn(key, input_shape):
        check_sequence(input_shape, "the input")
        input_shape = tuple(input_shape)
        k_q, k_k, k_v, k_o, k_b, k_pe = jax.random.split(key, 6)
        n_keys = n_vals = input_shape[-1]
        pos_emb = None
        if pos_type != "NONE":
            n_pe = n_pos_emb(input_shape[-1])
            pos_emb = jax.random.normal(k_pe, (1,) + input_shape[1:-1] + (n_pe,))
            if pos_type == "CONCAT":
                n_keys += n_pe
                n_vals += n_pe if val_pos_emb else 0
        W_k = jax.random.normal(k_k, (n_heads, n_keys, n_chan_key))
        W_v = jax.random.normal(k_v, (n_heads, n_vals, n_chan_val))
        W_o = jax.random.normal(k_o, (n_chan_val * n_heads, n_chan_out))
        b = None if b_std is None else jax.random.normal(k_b, (1,) * (len(input_shape) - 1)
                                                         + (n_chan_out,))
        W_q = None if linear_scaling else jax.random.normal(k_q, (n_heads, n_keys, n_chan_key))
        return input_shape[:-1] + (n_chan_out,), (W_q, W_k, W_v, W_o, b, pos_emb)

    def apply_fn(params, x, mask=None, **kwargs):
        check_sequence(x.shape, "the input")
        W_q, W_k, W_v, W_o, b, pos_emb = params
        n, sizes = x.shape[0], x.shape[1:-1]
        absent = None if mask is None else _masking.reduce_channels(-1)(mask, x.shape)
        x_val = None
        if pos_type != "NONE":
            if pos_emb_decay_fn is not None:  # correlate the embeddings: L @ pe, R = L L^T
                chol = jnp.linalg.cholesky(_pos_emb_cov(sizes, pos_emb_p_norm, pos_emb_decay_fn))
                pe = pos_emb.reshape(-1, pos_emb.shape[-1])
                pos_emb = (chol.astype(pe.dtype) @ pe).reshape(pos_emb.shape)
            pos_emb = W_pos_emb_std * pos_emb
            if absent is not None:  # absent positions carry no embedding either
                pos_emb = jnp.where(absent, jnp.zeros((), pos_emb.dtype), pos_emb)
            x_val = None if val_pos_emb else x
            if pos_type == "SUM":
                x = x + pos_emb
            else:
                x = jnp.concatenate(
                    [x, jnp.broadcast_to(pos_emb, x.shape[:-1] + pos_emb.shape[-1:])], -1)
        x = x.reshape(n, -1, x.shape[-1])
        x_val = x if x_val is None else x_val.reshape(n, -1, x_val.shape[-1])
        keys = jnp.einsum("npc,hck->hnpk", x, W_k)
        queries = keys if linear_scaling else jnp.einsum("npc,hck->hnpk", x, W_q)
        values = jnp.einsum("npc,hcv->hnpv", x_val, W_v)
        norm = x.shape[-1] * (n_chan_key if linear_scaling else n_chan_key**0.5)
        logits = jnp.einsum("hnpk,hnqk->hnpq", queries, keys) * (QK_std / norm)
        if absent is not None:
            logits = _mask_keys(logits, absent.reshape(1, n, 1, -1), mechanism)
        heads = jnp.einsum("hnpq,hnqv->npvh", attn(logits), values)  # v-major, as nt concatenates
        heads = heads.reshape(heads.shape[:2] + (-1,))
        out = heads @ W_o * (OV_std / (n_chan_val * n_heads * x_val.shape[-1]) ** 0.5)
        out = out.reshape((n,) + tuple(sizes) + (n_chan_out,))
        return out if b is None else out + b_std * b

    def kernel_map(k, **kwargs):
        if isinstance(k, (list, tuple)):
            raise ValueError(f"{name}: got {len(k)} inputs; this layer takes one.")
        check_sequence(k.shape1, "the input")
        if k.diagonal_spatial:
            raise ValueError(f"{name}: the attention kernel mixes positions, so it needs the "
                             f"full position-position covariance; call kernel_fn with "
                             f"diagonal_spatial=False.")
        n_cov = 1 if k.diagonal_batch else 2
        nngp, sizes = _flatten_pairs(k.nngp, 2)
        ntk = None if k.ntk is None else _flatten_pairs(k.ntk, 2)[0]
        cov1 = _flatten_pairs(k.cov1, n_cov)[0]
        cov2 = None if k.cov2 is None else _flatten_pairs(k.cov2, n_cov)[0]

        w_in, w_pe, R = 1.0, W_pos_emb_std**2, None
        if pos_type != "NONE":
            R = _pos_emb_cov(sizes, pos_emb_p_norm, pos_emb_decay_fn).astype(nngp.dtype)
            n_in = k.shape1[-1]
            n_pe = n_pos_emb(n_in)
            if pos_type == "CONCAT":
                w_in, w_pe = n_in / (n_in + n_pe), w_pe * n_pe / (n_in + n_pe)

        # absent positions (masked inputs), flattened: (N, P)
        p1, p2 = _masking.position_masks(k)
        p1 = None if p1 is None else p1.reshape(p1.shape[0], -1)
        p2 = None if p2 is None else p2.reshape(p2.shape[0], -1)

        def pair_absent(a, b, lead):  # entries of a covariance (lead..., P, P') to drop
            if a is None:
                return None
            if lead == 1:
                return a[:, :, None] | b[:, None, :]
            return a[:, None, :, None] | b[None, :, None, :]

        def interp(mat, absent=None):  # covariance of the (embedding-augmented) keys' inputs
            if mat is None or R is None:
                return mat
            r = R.reshape((1,) * (mat.ndim - R.ndim) + R.shape)
            if absent is not None:
                r = jnp.where(absent, jnp.zeros((), r.dtype), r)
            return w_in * mat + w_pe * r

        def affine(mat, std):
            return None if mat is None else std**2 * mat + (0.0 if b_std is None else b_std**2)

        a11 = pair_absent(p1, p1, n_cov)
        a22 = None if cov2 is None else pair_absent(p2, p2, n_cov)
        a12 = pair_absent(p1, p1 if p2 is None else p2, 2)
        cov1_i, cov2_i = interp(cov1, a11), interp(cov2, a22)
        nngp_i, ntk_i = interp(nngp, a12), interp(ntk, a12)

        if linear_scaling:
            def weights(cov_i, absent):
                if cov_i is None:
                    return None
                if not k.diagonal_batch:
                    cov_i = jnp.moveaxis(jnp.diagonal(cov_i, axis1=0, axis2=1), -1, 0)
                logits = QK_std * cov_i
                if absent is not None:  # absent keys get no attention
                    logits = _mask_keys(logits, absent[:, None, :], mechanism)
                return attn(logits)  # (N, P, P'), softmax over keys P'

            G1 = weights(cov1_i, p1)
            G2 = G1 if cov2 is None else weights(cov2_i, p2)

            def weigh(mat, Ga, Gb, same_batch):
                if mat is None:
                    return None
                spec = "npq,nqr,nsr->nps" if same_batch else "npq,nmqr,msr->nmps"
                return jnp.einsum(spec, Ga, mat, Gb, precision=jax.lax.Precision.HIGHEST)

            vals = (cov1_i, cov2_i, nngp_i, ntk_i) if val_pos_emb else (cov1, cov2, nngp, ntk)
            same = k.diagonal_batch
            out_cov1 = affine(weigh(vals[0], G1, G1, same), OV_std)
            out_cov2 = affine(weigh(vals[1], G2, G2, same), OV_std)
            out_nngp = affine(weigh(vals[2], G1, G2, False), OV_std)
            out_ntk = None
            if ntk is not None:
                out_ntk = (affine(weigh(vals[3], G1, G2, False), OV_std)
                           + 2 * (out_nngp if b_std is None else out_nngp - b_std**2))
        elif mechanism == "IDENTITY":  # 1/sqrt(width) logits, closed form
            def dot(a, b):
                """Sum over both position axes of a * b, kept as (batch..., 1, 1)."""
                return jnp.sum(a * b, axis=(-2, -1), keepdims=True)

            std = QK_std * OV_std
            v = (cov1_i, cov2_i, nngp_i) if val_pos_emb else (cov1, cov2, nngp)
            dot12 = dot(nngp_i, v[2])
            out_nngp = affine(dot12 * nngp_i, std)
            out_cov1 = affine(dot(cov1_i, v[0]) * cov1_i, std)
            out_cov2 = None if cov2 is None else affine(dot(cov2_i, v[1]) * cov2_i, std)
            out_ntk = None
            if ntk is not None:
                if val_pos_emb or pos_type == "NONE":
                    nd = 2 * dot(nngp_i, ntk_i)
                else:
                    nd = dot(nngp_i, ntk) + dot(nngp, ntk_i)
                out_ntk = affine(nd * nngp_i + dot12 * (ntk_i + 4 * nngp_i), std)

        else:  # 1/sqrt(width) logits through a nonlinear mechanism: Gaussian logits
            def own(cov_i):  # each input's own covariance (N, P, P)
                if cov_i is None or k.diagonal_batch:
                    return cov_i
                return jnp.moveaxis(jnp.diagonal(cov_i, axis1=0, axis2=1), -1, 0)

            s1 = own(cov1_i)
            s2 = s1 if cov2 is None else own(cov2_i)
            q2 = p1 if cov2 is None else p2
            v = (cov1_i, cov2_i, nngp_i) if val_pos_emb else (cov1, cov2, nngp)

            def lead(m, side):  # (N, ...) -> pairs of the cross block (N1, N2, ...)
                return None if m is None else (m[:, None] if side == 1 else m[None])

            def own_group(s, cov_i, val, mask):  # the pairs of one batch with itself
                if k.diagonal_batch:
                    return (s, s, cov_i, val, None, None, mask, mask)
                return (lead(s, 1), lead(s, 2), cov_i, val, None, None, lead(mask, 1),
                        lead(mask, 2))

            groups = [(lead(s1, 1), lead(s2, 2), nngp_i, v[2],
                       None if ntk is None else (ntk_i if val_pos_emb else ntk), ntk_i,
                       lead(p1, 1), lead(q2, 2)), own_group(s1, cov1_i, v[0], p1)]
            if cov2 is not None:
                groups.append(own_group(s2, cov2_i, v[1], p2))
            mask = None if _logit_mask is None else jnp.asarray(_logit_mask, bool)
            terms = gaussian_logit_pairs(mechanism, QK_std, n_samples, seed, groups,
                                         _ntk_terms or ntk_parameterization_terms, mask)
            out_nngp, out_ntk = affine(terms[0][0], OV_std), affine(terms[0][1], OV_std)
            out_cov1 = affine(terms[1][0], OV_std)
            out_cov2 = None if cov2 is None else affine(terms[2][0], OV_std)

        def unflat(mat, n_batch):
            return None if mat is None else _unflatten_pairs(mat, n_batch, sizes)

        return k.replace(nngp=unflat(out_nngp, 2), ntk=unflat(out_ntk, 2),
                         cov1=unflat(out_cov1, n_cov), cov2=unflat(out_cov2, n_cov),
                         is_gaussian=True)

    return make_layer(name, init_fn, apply_fn, kernel_map,
                      shape_fn=lambda s: tuple(s[:-1]) + (n_chan_out,),
                      mask_fn=_masking.reduce_channels(-1), uses_mask=True)
