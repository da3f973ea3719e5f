"""Time and peak-memory estimates of the three empirical-NTK implementations, from shapes only,
and the choice between them.

Time is counted in flop-equivalents, as Novak et al. 2022 ("Fast Finite Width Neural Tangent
Kernel", arXiv:2206.08720, Table 1) count it, with every materialised Jacobian entry charged
``MEM_FLOPS`` (memory traffic dominates on CPU). Memory is the largest set of arrays each
implementation holds at once: both Jacobians and the backward passes' working set for
Jacobian contraction; one block of cotangents and JVP intermediates for NTK-vector products;
the derivatives with respect to the layers' outputs and the local weight Jacobians for
structured derivatives; plus the kernel itself. ``AUTO`` takes the fastest implementation
whose memory fits in :func:`memory_limit`; an explicitly chosen implementation that does not
fit raises before any work, naming the sizes and the fixes.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from . import _structured as sd
from ._axes import _leaves, trace_size

MEM_FLOPS = 30.0  # cost of writing one Jacobian entry, in flops
_NAMES = {1: "jacobian_contraction", 2: "ntk_vector_products", 3: "structured_derivatives"}
_LIMIT: list = [None]  # bytes; None: detected from the device


def memory_limit(nbytes: int | None = None, *, reset: bool = False) -> int:
    """The memory (bytes) an empirical NTK may use; with ``nbytes``, sets it first.

    By default the memory of the default device: ``bytes_limit`` of accelerators, the physical
    memory (or the cgroup limit, if lower) on CPU. ``reset=True`` returns to that default.
    ``implementation='auto'`` only picks implementations that fit; an explicit one that does
    not fit raises.

    >>> from infwidth.empirical import memory_limit
    >>> old = memory_limit()
    >>> memory_limit(2**30)
    1073741824
    >>> memory_limit(reset=True) == old
    True
    """
    if reset:
        _LIMIT[0] = None
    if nbytes is not None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
            raise ValueError(f"memory_limit(nbytes={nbytes!r}): nbytes must be a positive int.")
        _LIMIT[0] = int(nbytes)
    return _LIMIT[0] if _LIMIT[0] is not None else _device_memory()


def _device_memory() -> int:
    dev = jax.devices()[0]
    stats = getattr(dev, "memory_stats", lambda: None)() if dev.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
            if text.isdigit():
                total = min(total, int(text))
        except OSError:
            pass
    return int(total)


class EmpiricalMemoryError(MemoryError, ValueError):
    """An empirical NTK whose estimated peak memory exceeds :func:`memory_limit`."""


def _batch(x):
    ls = _leaves(x)
    return ls[0].shape[0] if ls and np.ndim(ls[0]) else 1


class _Shapes:
    """The sizes the estimates need, read from one trace of ``f(params, x1)``."""

    def __init__(self, f, x1, x2, params, vm, fx1, fx2, axes, kwargs):
        leaves, p_def = jax.tree_util.tree_flatten(params)
        closed = sd.trace_jaxpr(
            lambda ls, a: f(jax.tree_util.tree_unflatten(p_def, ls), a, **kwargs), leaves, x1)
        self.vm = vm is not None
        self.same = x2 is None
        self.n1 = max(_batch(x1), 1)
        self.n2 = max(_batch(x1 if x2 is None else x2), 1)
        self.fwd1 = sd.flops(closed.jaxpr)
        self.fwd2 = self.fwd1 * self.n2 / self.n1
        self.tape1 = max(sd.activation_entries(closed.jaxpr), 1.0)
        self.tape2 = self.tape1 * self.n2 / self.n1
        self.sites = sd.analyse(closed.jaxpr, len(leaves))[1]
        self.leaf_sizes = [float(np.size(l)) for l in leaves]
        self.p = float(sum(self.leaf_sizes))
        self.o1 = float(sum(np.size(l) for l in _leaves(fx1)))
        self.o2 = float(sum(np.size(l) for l in _leaves(fx2)))
        red = float(np.prod([trace_size(a, l.shape) for a, l in zip(axes, _leaves(fx1))]))
        self.pairs = self.o1 * self.o2 / red
        itemsize = [np.dtype(l.dtype).itemsize for l in _leaves(fx1)] or [4]
        self.itemsize = max(itemsize)
        # output entries whose Jacobians are formed: both sides unless x2 is None
        self.o_jac = self.o1 + (0.0 if self.same else self.o2)
        # backward passes: one per output entry, over one example (vmap) or the whole batch
        self.rows_fwd = (self.o1 * self.fwd1 / self.n1 + self.o2 * self.fwd2 / self.n2
                         if self.vm else self.o1 * self.fwd1 + self.o2 * self.fwd2)
        self.rows_tape = self.o1 * self.tape1 / (self.n1 if self.vm else 1)


def estimate_costs(s: _Shapes) -> dict:
    """Flop-equivalents of implementations 1, 2, 3."""
    costs = {1: 2 * s.rows_fwd + (s.o1 + s.o2) * s.p * MEM_FLOPS + s.pairs * s.p}
    per_pair = (s.fwd1 / s.n1 + s.fwd2 / s.n2) if s.vm else (s.fwd1 + s.fwd2)
    n_pairs = s.n1 * s.n2 if s.vm else 1
    costs[2] = 3 * s.o1 / (s.n1 if s.vm else 1) * n_pairs * per_pair
    structured = s.rows_fwd
    for leaf, site in s.sites.items():
        y_eff = float(np.prod(site.y_shape)) / (s.n1 if s.vm else 1)
        if _is_dense(site):
            structured += (s.o1 + s.o2) * y_eff * MEM_FLOPS + s.pairs * y_eff
        else:
            w = s.leaf_sizes[leaf]
            structured += (s.o1 + s.o2) * (y_eff + w) * MEM_FLOPS + s.pairs * w
    rest = s.p - sum(s.leaf_sizes[i] for i in s.sites)
    costs[3] = structured + (s.o1 + s.o2) * rest * MEM_FLOPS + s.pairs * rest
    return costs


def _is_dense(site) -> bool:
    return site.primitive.name == "dot_general" and not site.params["dimension_numbers"][1][0]


def estimate_memory(s: _Shapes, ntvp_step: int, ntvp_tape: int, ntvp_chunk: int) -> dict:
    """Peak bytes of implementations 1, 2, 3 (the parameters themselves not counted)."""
    jac = s.o_jac * s.p
    mem = {1: 2 * jac + s.rows_tape + s.pairs}
    if s.vm:
        outs = max(s.o1 / s.n1, 1.0)
        block = max(1.0, min(s.n1, ntvp_step / (outs * s.p), ntvp_tape / (outs * s.tape2)))
        mem[2] = block * outs * (2 * s.p + s.tape2) + s.pairs
    else:
        rows = max(1.0, min(s.o1, ntvp_chunk / max(s.p, 1.0)))
        mem[2] = rows * (2 * s.p + s.tape2) + s.pairs
    local = 0.0  # derivatives by the layers' outputs, and local weight Jacobians
    for leaf, site in s.sites.items():
        local += s.o_jac * float(np.prod(site.y_shape)) / (s.n1 if s.vm else 1)
        if not _is_dense(site):
            local += s.o_jac * s.leaf_sizes[leaf]
    rest = s.p - sum(s.leaf_sizes[i] for i in s.sites)
    mem[3] = local + 2 * s.o_jac * rest + s.rows_tape + s.pairs
    return {k: v * s.itemsize for k, v in mem.items()}


def _gib(b: float) -> str:
    return f"{b / 2**30:.3g} GiB"


def choose(impl: int, f, x1, x2, params, vm, fx1, fx2, axes, kwargs, caller: str,
           ntvp_step: int, ntvp_tape: int, ntvp_chunk: int) -> int:
    """The implementation to run: ``impl`` itself if it fits in memory (else a ValueError);
    for 0 (auto) the fastest that fits."""
    s = _Shapes(f, x1, x2, params, vm, fx1, fx2, axes, kwargs or {})
    mem = estimate_memory(s, ntvp_step, ntvp_tape, ntvp_chunk)
    limit = memory_limit()
    if impl != 0:
        if mem[impl] > limit:
            raise EmpiricalMemoryError(_message(caller, f"implementation={_NAMES[impl]!r}", s, mem,
                                       limit, vm))
        return impl
    fits = [k for k in (1, 2, 3) if mem[k] <= limit]
    if not fits:
        raise EmpiricalMemoryError(_message(caller, "implementation='auto'", s, mem, limit, vm))
    costs = estimate_costs(s)
    return min(fits, key=costs.get)


def _message(caller, what, s: _Shapes, mem, limit, vm) -> str:
    est = ", ".join(f"{_NAMES[k]} {_gib(v)}" for k, v in mem.items())
    fixes = []
    if vm is None:
        fixes.append("vmap_axes=0 if examples do not interact (Jacobians per example)")
    if s.pairs > s.n1 * s.n2:
        fixes.append("trace_axes over the output channels (e.g. trace_axes=(-1,))")
    fixes += ["a smaller batch of inputs (infwidth.batch tiles the kernel)",
              "implementation='auto' or 'ntk_vector_products' (the least memory)",
              "infwidth.empirical.memory_limit(nbytes) if more memory is available"]
    need = mem.get(_key(what), min(mem.values()))
    return (f"{caller}({what}): estimated peak memory {_gib(need)} exceeds the memory limit "
            f"{_gib(limit)} ({int(s.o1)} outputs of f(x1) and "
            f"{int(s.o2)} of f(x2), {int(s.p)} parameters, batches {s.n1} and {s.n2}; "
            f"estimates: {est}). Fixes: " + "; ".join(fixes) + ".")


def _key(what: str) -> int:
    for k, name in _NAMES.items():
        if name in what:
            return k
    return 0
