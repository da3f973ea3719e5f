"""An up-front check that a kernel fits in memory, with a message that names the sizes and the fix.

Without it a kernel too large for the device fails deep inside XLA ("RESOURCE_EXHAUSTED" or an
INTERNAL error) after minutes of compilation and work.
"""

from __future__ import annotations

import jax
import numpy as np

# an untiled evaluation holds the intermediate kernels of about two layers besides the result
_UNTILED_FACTOR = 2


def available_bytes() -> int | None:
    """Memory the default device can still use: the accelerator's limit, or the host's available
    memory for CPUs (``None`` when it cannot be told)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - some backends do not report
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def _nbytes(x) -> int:
    try:
        itemsize = np.dtype(x.dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys): a few words each
        itemsize = getattr(x.dtype, "itemsize", 8) or 8
    return int(np.prod(x.shape, dtype=np.int64)) * itemsize


def largest_intermediate(jaxpr) -> int:
    """Bytes of the largest value a (closed) jaxpr computes, nested jaxprs included."""
    best = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            if hasattr(v.aval, "shape"):
                best = max(best, _nbytes(v.aval))
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                best = max(best, largest_intermediate(inner))
    return best


def check_fits(abstract, *, tiled: bool, caller: str, largest: int = 0) -> None:
    """Raises a MemoryError before any work when a kernel_fn's result (an abstract
    `jax.eval_shape` output) or, untiled, its largest intermediate array cannot fit in the
    memory the device has."""
    leaves = [x for x in jax.tree_util.tree_leaves(abstract) if hasattr(x, "shape")]
    need = sum(_nbytes(x) for x in leaves)
    peak = need if tiled else max(need, _UNTILED_FACTOR * largest)
    have = available_bytes()
    if have is None or peak <= have:
        return
    shapes = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in leaves[:4])
    what = (f"the result needs {_gib(need)} ({shapes})" if peak == need else
            f"its evaluation in one piece needs about {_gib(peak)} (intermediate kernels of "
            f"{_gib(largest)}; result {shapes})")
    raise MemoryError(
        f"{caller}: {what}, more than the {_gib(have)} of memory available. Ask only for what "
        f"you need (get='ntk'), keep only equal positions (diagonal_spatial=True, enough "
        f"before Flatten), use float32 instead of float64, or evaluate it in tiles with "
        f"infwidth.batch(kernel_fn, batch_size) (automatic tiling: stax.tile_memory).")
