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


def check_fits(abstract, *, tiled: bool, caller: str) -> None:
    """Raises a MemoryError before any work when the result of a kernel_fn (an abstract
    `jax.eval_shape` output) cannot fit in the memory the device has."""
    leaves = [x for x in jax.tree_util.tree_leaves(abstract) if hasattr(x, "shape")]
    need = sum(int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize for x in leaves)
    have = available_bytes()
    if have is None or need * (1 if tiled else _UNTILED_FACTOR) <= have:
        return
    shapes = ", ".join(f"{tuple(x.shape)} {np.dtype(x.dtype).name}" for x in leaves[:4])
    raise MemoryError(
        f"{caller}: the result needs {_gib(need)} ({shapes}), more than the {_gib(have)} of "
        f"memory available. Ask only for what you need (get='ntk'), keep only equal positions "
        f"(diagonal_spatial=True, enough before Flatten), use float32 instead of float64, or "
        f"evaluate it in tiles written to host memory or disk with infwidth.batch(kernel_fn, "
        f"batch_size) on smaller pieces of x1 and x2.")
