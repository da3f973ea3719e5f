"""Einsum as a sequence of plain matrix products, for the empirical kernels' contractions.

XLA on CPU runs a ``dot_general`` with several contracting (or batch) dimensions several times
slower than the same product with those dimensions merged into one (measured: the Jacobian
contraction ``'atp,ctp->ac'`` of a small CNN takes 3x as long as ``'ak,ck->ac'`` on the
reshaped operands). :func:`einsum` therefore takes the pairwise order from
``jax.numpy.einsum_path`` and performs every pairwise step as one batched matrix product
``(B, K, M) x (B, K, N) -> (B, M, N)``, transposing and reshaping the operands around it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


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

    def arrange(x, s, free):
        order = batch + contract + free
        x = jnp.transpose(x, tuple(s.index(l) for l in order))
        return x.reshape(prod(batch), prod(contract), prod(free))

    out = jax.lax.dot_general(arrange(a, sa, free_a), arrange(b, sb, free_b),
                              (((1,), (1,)), ((0,), (0,))), precision=_HIGHEST)
    letters = batch + free_a + free_b
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
        return jnp.einsum(spec, *operands, precision=_HIGHEST)
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
