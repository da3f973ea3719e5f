"""Einsum as a sequence of plain matrix products, for the empirical kernels' contractions.

XLA on CPU runs a ``dot_general`` with several contracting (or batch) dimensions several times
slower than the same product with those dimensions merged into one (measured: the Jacobian
contraction ``'atp,ctp->ac'`` of a small CNN takes 3x as long as ``'ak,ck->ac'`` on the
reshaped operands). :func:`einsum` therefore takes the pairwise order from
``jax.numpy.einsum_path`` and performs every pairwise step as one batched matrix product
``(B, M, K) x (B, N, K) -> (B, M, N)``, transposing and reshaping the operands around it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _precision():
    """Full float32 precision. On CPU that is the default, and asking for it explicitly keeps
    XLA from its fastest matrix-product kernels (measured 2x slower); elsewhere (TF32 on
    GPUs, bfloat16 passes on TPUs) it must be asked for."""
    return None if jax.default_backend() == "cpu" else _HIGHEST


def _pair(a, sa: str, b, sb: str, keep: set[str]):
    """Contracts ``a[sa]`` with ``b[sb]``; returns the result and its letters. Letters in
    ``keep`` survive (batch letters if in both operands), all others are summed over."""
    only_a = [l for l in sa if l not in sb and l not in keep]
    if only_a:  # summed letters that appear in one operand only
        a = jnp.sum(a, axis=tuple(sa.index(l) for l in only_a))
        sa = "".join(l for l in sa if l not in only_a)
    only_b = [l for l in sb if l not in sa and l not in keep]
    if only_b:
        b = jnp.sum(b, axis=tuple(sb.index(l) for l in only_b))
        sb = "".join(l for l in sb if l not in only_b)
    batch = [l for l in sa if l in sb and l in keep]
    contract = [l for l in sa if l in sb and l not in keep]
    free_a = [l for l in sa if l not in sb]
    free_b = [l for l in sb if l not in sa]
    size = {**dict(zip(sa, a.shape)), **dict(zip(sb, b.shape))}
    prod = lambda ls: math.prod(size[l] for l in ls)

    # layout: XLA's CPU kernels are fastest on row-major (M, K) operands, except for small
    # outputs with long contractions (Jacobian contractions of a few inputs), which run 3x
    # faster with the contraction axis leading (measured, 16 x 16 outputs over 5e5 parameters)
    k_major = prod(free_a) * prod(free_b) <= 1024 and prod(contract) >= 65536

    def arrange(x, s, free):
        order = batch + (contract + free if k_major else free + contract)
        x = jnp.transpose(x, tuple(s.index(l) for l in order))
        shape = (prod(contract), prod(free)) if k_major else (prod(free), prod(contract))
        return x.reshape((prod(batch),) + shape)

    letters = batch + free_a + free_b
    a3, b3 = arrange(a, sa, free_a), arrange(b, sb, free_b)
    if not contract:  # nothing summed: (B, M, 1) x (B, N, 1), an outer product
        out = a3 * jnp.swapaxes(b3, 1, 2)
    else:
        axis = 1 if k_major else 2
        out = jax.lax.dot_general(a3, b3, (((axis,), (axis,)), ((0,), (0,))),
                                  precision=_precision())
    return out.reshape(tuple(size[l] for l in letters)), "".join(letters)


def einsum(spec: str, *operands):
    """``jnp.einsum(spec, *operands)`` (explicit ``->`` form, no ellipsis) computed with merged
    contracting and batch dimensions; same result up to rounding.

    >>> import numpy as np
    >>> a, b = np.random.rand(3, 4, 5), np.random.rand(6, 4, 5)
    >>> bool(np.allclose(einsum('atp,ctp->ac', a, b), np.einsum('atp,ctp->ac', a, b)))
    True
    """
    inputs, out = spec.replace(" ", "").split("->")
    subs = inputs.split(",")
    if len(subs) != len(operands):
        raise ValueError(f"einsum: {len(subs)} subscripts for {len(operands)} operands")
    if any(len(set(sub)) != len(sub) for sub in subs + [out]):  # diagonals: leave to jnp
        return jnp.einsum(spec, *operands, precision=_precision())
    dtype = jnp.result_type(*operands)
    ops = [(jnp.asarray(o, dtype), sub) for o, sub in zip(operands, subs)]
    if len(ops) > 2:
        path, _ = jnp.einsum_path(spec, *operands, optimize="optimal")
        steps = [tuple(s) for s in path[1:]] if path and path[0] == "einsum_path" else path
    else:
        steps = [tuple(range(len(ops)))]
    for step in steps:
        picked = [ops[i] for i in step]
        ops = [o for i, o in enumerate(ops) if i not in step]
        rest = set(out).union(*[s for _, s in ops])
        (a, sa), *others = picked
        if not others:  # a single operand: sums and diagonals only
            a = jnp.einsum(f"{sa}->{''.join(l for l in sa if l in rest)}", a)
            ops.append((a, "".join(dict.fromkeys(l for l in sa if l in rest))))
            continue
        for k, (b, sb) in enumerate(others):
            a, sa = _pair(a, sa, b, sb, rest.union(*[s for _, s in others[k + 1:]]))
        ops.append((a, sa))
    (result, s), = ops
    if s != out:
        result = jnp.einsum(f"{s}->{out}", result)
    return result
