"""Attention kernels with ``1 / sqrt(d_key)`` logits: expectations over Gaussian logits.

With independent query and key weights and logits ``q . k / sqrt(n_chan_key)``
(`GlobalSelfAttention(..., linear_scaling=False)`), the logits do not converge to a constant as
the widths grow: by the central limit theorem they converge to a Gaussian field, independent of
the values, with covariance (Hron et al. 2020, "Infinite attention: NNGP and NTK for deep
attention networks", arXiv:2006.10540, section 3)::

    Cov(G(x)[p, q], G(x')[p', q']) = QK**2 * K(x_p, x'_p') * K(x_q, x'_q'),

``K`` the covariance of the layer's input (with positional embeddings, their interpolation),
``QK = W_query_std * W_key_std``. As the number of heads grows the output is Gaussian with, for
the attention weights ``A = mechanism(G)`` taken row by row (queries ``p``, keys ``q``)::

    nngp_out(x, x')[p, p'] = OV**2 E[(A V A'^T)[p, p']] + b_std**2,    V = cov of the values,
    ntk_out = OV**2 E[A (2 V + T_v) A'^T]
              + QK**2 OV**2 ((K + T) * E[X(K)] + K * E[X(K + T)]) + b_std**2,

where ``T``, ``T_v`` are the input NTK (of the logits' and the values' inputs),
``X(W)[p, p'] = sum J_p[q, r] V[q, q'] J'_p'[q', r'] W[r, r']`` and ``J_p`` is the Jacobian of
the mechanism's row ``p`` in its logits (the query and key weights and the inputs move the
logits with tangent covariance ``QK**2 ((K + T)[p, p'] K[r, r'] + K[p, p'] (K + T)[r, r'])``).
The first term is the value and output weights (``2 V``) and the values' inputs (``T_v``).

* ``'RELU'`` and ``'ABS'`` act entry by entry, so every expectation is a two-dimensional one:
  the arc-cosine kernels of `ABRelu` of the pair ``(G[p, q], G'[p', q'])``. Exact.
* ``'SOFTMAX'`` couples a whole row of logits: the expectations are over the joint Gaussian
  of ``2 P`` rows of ``P`` logits, estimated by Monte Carlo with ``n_samples`` draws of fixed,
  common random numbers (``seed``): the kernel is a deterministic function of its inputs (so
  jit, `infwidth.batch` and ``x2`` = a copy of ``x1`` give the same values), symmetric in its
  two inputs (the draws are closed under exchanging them and under sign flips of the logits),
  and its error is the Monte Carlo error, ``O(1 / sqrt(n_samples))``: measured relative
  Frobenius errors are in `GlobalSelfAttention`'s docstring.

The logits of a pair of inputs are drawn as ``QK * S Z S^T`` with ``S`` the symmetric square
root of the pair's ``2P x 2P`` input covariance and ``Z`` a ``2P x 2P`` matrix of independent
standard normals: ``Cov((S Z S^T)[a, b], (S Z S^T)[c, d]) = K[a, c] K[b, d]``, exactly the
covariance above, whatever the rank of ``K``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .activations import abrelu_dual

_HIGHEST = jax.lax.Precision.HIGHEST
_NEG_INF = -1e20  # the logit of an absent key, as in attention.py
ELEMENTWISE_DUALS = {"RELU": (0.0, 1.0), "ABS": (-1.0, 1.0)}
_PAIR_BLOCK = 2**22  # entries of the (pairs, samples, P, P) arrays held at once
_MAX_BLOCK = 8  # pairs per block


def _mm(spec, *args):
    return jnp.einsum(spec, *args, precision=_HIGHEST)


def ntk_parameterization_terms(nngp, values, x_k, x_kt, cab, tg, qk2):
    """The NTK term (before ``OV**2``) of the NTK parameterization from the expectations of
    one pair: ``values = E[A (2 V + T_v) A'^T]``, ``x_k = E[X(K)]``, ``x_kt = E[X(K + T)]``
    (module docstring). Other parameterizations weigh each weight's share differently
    (`from_flax` of attention in the standard parameterization)."""
    return values + qk2 * ((cab + tg) * x_k + cab * x_kt)


def _elementwise_pair(dual, qk2, ca, cb, cab, vab, tv, tg, combine=ntk_parameterization_terms):
    """Exact (nngp, ntk) terms of one pair for an entrywise mechanism: sums over keys of the
    two-dimensional dual kernels of the logit pairs (see the module docstring)."""
    nngp_fn, d_nngp_fn = dual
    cov = qk2 * cab[:, None, :, None] * cab[None, :, None, :]  # [p, q, p', q']
    da, db = jnp.diagonal(ca), jnp.diagonal(cb)
    var_a = (qk2 * da[:, None] * da[None, :])[:, :, None, None]
    var_b = (qk2 * db[:, None] * db[None, :])[None, None, :, :]
    e_phi = nngp_fn(cov, var_a, var_b)
    nngp = _mm("pqrs,qs->pr", e_phi, vab)
    if tv is None:
        return nngp, None
    e_dphi = d_nngp_fn(cov, var_a, var_b)
    values = _mm("pqrs,qs->pr", e_phi, 2 * vab + tv)
    x_k = _mm("pqrs,qs->pr", e_dphi, vab * cab)
    x_kt = _mm("pqrs,qs->pr", e_dphi, vab * (cab + tg))
    return nngp, combine(nngp, values, x_k, x_kt, cab, tg, qk2)


def _softmax_x(sa, sb, v, w):
    """``X(W)`` of the module docstring for softmax rows ``sa`` (s, P, K), ``sb``: the
    Jacobian ``diag(s) - s s^T`` of each row, contracted with ``V`` and ``W``."""
    sv = _mm("spq,qr->spr", sa, v)   # (A V)[p, q']
    sw = _mm("spq,qr->spr", sa, w)
    vb = _mm("qr,sur->squ", v, sb)   # (V A'^T)[q, p']
    wb = _mm("qr,sur->squ", w, sb)
    term_a = _mm("spq,qr,sur->spu", sa, v * w, sb)
    term_b = _mm("spq,squ->spu", sa, vb * wb)
    term_c = _mm("spr,sur->spu", sv * sw, sb)
    term_d = _mm("spr,sur->spu", sv, sb) * _mm("spr,sur->spu", sw, sb)
    return term_a - term_b - term_c + term_d


def _softmax_pair(draws, chunk, qk, ca, cb, cab, vab, tv, tg, absent_a, absent_b,
                  combine=ntk_parameterization_terms):
    """Monte Carlo (nngp, ntk) terms of one pair for softmax attention (module docstring)."""
    p = ca.shape[0]
    joint = jnp.block([[ca, cab], [cab.T, cb]])
    joint = (joint + joint.T) / 2
    w, u = jnp.linalg.eigh(joint)
    # eigenvalues within rounding of zero (an input paired with itself, collinear positions)
    # are zero: their square roots, ~sqrt(eps), would carry rounding into the logits
    floor = 2 * p * 64 * jnp.finfo(joint.dtype).eps * jnp.max(jnp.abs(w))
    root = _mm("ij,j,kj->ik", u, jnp.sqrt(jnp.where(w > floor, w, 0)), u)
    root = (root + root.T) / 2
    ra, rb = root[:p], root[p:]
    with_ntk = tv is not None

    def weights(r, z, absent):
        logits = qk * _mm("pi,sij,qj->spq", r, z, r)
        if absent is not None:
            logits = jnp.where(absent, jnp.asarray(_NEG_INF, logits.dtype), logits)
        return jax.nn.softmax(logits, axis=-1)

    def step(acc, z):
        sa, sb = weights(ra, z, absent_a), weights(rb, z, absent_b)
        terms = [_mm("spq,qr,sur->pu", sa, vab, sb)]
        if with_ntk:
            terms += [_mm("spq,qr,sur->pu", sa, 2 * vab + tv, sb),
                      _softmax_x(sa, sb, vab, cab).sum(0),
                      _softmax_x(sa, sb, vab, cab + tg).sum(0)]
        return [a + t for a, t in zip(acc, terms)], None

    n_terms = 4 if with_ntk else 1
    zeros = [jnp.zeros((p, p), ca.dtype) for _ in range(n_terms)]
    sums, _ = jax.lax.scan(step, zeros, draws.reshape((-1, chunk) + draws.shape[1:]))
    means = [s / draws.shape[0] for s in sums]
    if not with_ntk:
        return means[0], None
    nngp, values, x_k, x_kt = means
    return nngp, combine(nngp, values, x_k, x_kt, cab, tg, qk**2)


def logit_draws(n_samples: int, n_pos: int, seed: int, dtype):
    """The common random numbers: ``n_samples`` matrices ``(2P, 2P)``, closed under exchanging
    the two inputs' blocks and under ``Z -> -Z`` (so ``n_samples`` is a multiple of 4), the
    same numbers in every dtype."""
    # drawn in float32 whatever ``dtype``: float32 and float64 kernels then use the same draws
    base = jax.random.normal(jax.random.PRNGKey(seed), (n_samples // 4, 2 * n_pos, 2 * n_pos),
                             jnp.float32).astype(dtype)
    perm = jnp.concatenate([jnp.arange(n_pos, 2 * n_pos), jnp.arange(n_pos)])
    swapped = base[:, perm][:, :, perm]
    return jnp.concatenate([base, -base, swapped, -swapped])


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 5))
def gaussian_logit_pairs(mechanism: str, qk: float, n_samples: int, seed: int, groups,
                         combine=ntk_parameterization_terms, logit_mask=None):
    """(nngp, ntk) terms (before ``OV**2`` and the bias) of groups of pairs of inputs
    ``(a, b)``. Each group is ``(ca, cb, cab, vab, tv, tg, absent_a, absent_b)``, stacked over
    the same leading (pair) axes: ``ca``, ``cb`` (..., P, P) the logit inputs' own
    covariances, ``cab``, ``vab``, ``tv``, ``tg`` (..., P, P) the cross covariance of the
    logits' inputs, of the values, the values' NTK and the logits' inputs' NTK (``tv`` None:
    no NTK for this group), ``absent_*`` (..., P) masks of absent positions, or None.

    All pairs of all groups go through one map with blocks of a fixed size, so a pair's value
    does not depend on the group or batch it came in: an input paired with itself gets the
    same bits in the cross kernel (``nngp[a, a]``) as in its own covariance (``cov1[a]``).
    Compiled once per shape (eager calls of ``kernel_fn`` reuse it). ``combine`` (static: a
    hashable function) assembles a pair's NTK term from its expectations
    (`ntk_parameterization_terms`). ``logit_mask`` (P, P) (softmax only): query-key pairs
    that never attend (a causal mask), the same for every input.
    """
    p = groups[0][2].shape[-1]
    dtype = groups[0][2].dtype
    with_ntk = any(g[4] is not None for g in groups)
    masked = any(g[6] is not None or g[7] is not None for g in groups)
    leads = []
    cols: list[list[jax.Array]] = [[] for _ in range(8)]
    for ca, cb, cab, vab, tv, tg, absent_a, absent_b in groups:
        lead = cab.shape[:-2]
        leads.append(lead)
        if with_ntk and tv is None:
            tv = tg = jnp.zeros((), dtype)
        mats = (ca, cb, cab, vab) + ((tv, tg) if with_ntk else ())
        for i, m in enumerate(mats):
            cols[i].append(jnp.broadcast_to(m, lead + (p, p)).reshape((-1, p, p)))
        if masked:
            for i, m in ((6, absent_a), (7, absent_b)):
                m = jnp.zeros((p,), bool) if m is None else m
                cols[i].append(jnp.broadcast_to(m, lead + (p,)).reshape((-1, 1, 1, p)))
    xs = [jnp.concatenate(c) if c else None for c in cols]
    n_pairs = sum(c.shape[0] for c in cols[2])  # rows of xs[2]
    if mechanism in ELEMENTWISE_DUALS:
        dual = abrelu_dual(*ELEMENTWISE_DUALS[mechanism])
        per_pair = p**4 * (3 if with_ntk else 2)

        def one(args):
            a, b, c, v, t, g, _, _ = args
            return _elementwise_pair(dual, qk**2, a, b, c, v, t, g, combine)
    else:
        draws = logit_draws(n_samples, p, seed, dtype)
        chunk = max(d for d in range(1, min(64, draws.shape[0]) + 1)
                    if draws.shape[0] % d == 0)
        per_pair = chunk * p * p * 12

        def one(args):
            a, b, c, v, t, g, ma, mb = args
            if logit_mask is not None:
                ma = logit_mask if ma is None else ma | logit_mask
                mb = logit_mask if mb is None else mb | logit_mask
            return _softmax_pair(draws, chunk, qk, a, b, c, v, t, g, ma, mb, combine)

    # blocks of a fixed size (padded), the same whatever the number of pairs
    block = int(min(_MAX_BLOCK, max(1, _PAIR_BLOCK // per_pair)))
    pad = -n_pairs % block
    xs = [None if m is None else jnp.concatenate([m, jnp.repeat(m[-1:], pad, 0)]) for m in xs]
    nngp, ntk = jax.lax.map(one, tuple(xs), batch_size=block)
    out, start = [], 0
    for lead in leads:
        size = int(np.prod(lead, dtype=int))
        out.append((nngp[start:start + size].reshape(lead + (p, p)),
                    None if ntk is None else ntk[start:start + size].reshape(lead + (p, p))))
        start += size
    return out
