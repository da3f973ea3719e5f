"""neural-tangents' ``_src.batching`` names (see `infwidth._src`): its private ``_serial``
(tiles on one device), ``_parallel`` (rows split over devices) and
``_jit_or_pmap_broadcast`` as calls of `infwidth.batch` and `jax.jit`."""

import jax
import numpy as np

from ..batching import batch

__all__ = ["batch", "_serial", "_parallel", "_jit_or_pmap_broadcast"]


def _serial(kernel_fn, batch_size: int, store_on_device: bool = True):
    return batch(kernel_fn, batch_size, device_count=0, store_on_device=store_on_device)


def _parallel(kernel_fn, device_count: int = -1):
    return batch(kernel_fn, 0, device_count=device_count)


def _jit_or_pmap_broadcast(f, device_count: int = -1):
    """``f`` compiled, its arguments that are not arrays (``get``, flags) held static
    (infwidth places work on devices through `infwidth.batch`)."""
    def is_arrays(a) -> bool:
        leaves = jax.tree_util.tree_leaves(a)
        return bool(leaves) and all(isinstance(v, (jax.Array, np.ndarray)) for v in leaves)

    def call(*args, **kwargs):
        dynamic = {i: a for i, a in enumerate(args) if is_arrays(a)}
        dynamic_kw = {k: v for k, v in kwargs.items() if is_arrays(v)}

        def run(dyn, dyn_kw):
            full = [dyn[i] if i in dyn else a for i, a in enumerate(args)]
            rest = {k: v for k, v in kwargs.items() if k not in dyn_kw}
            return f(*full, **dyn_kw, **rest)

        return jax.jit(run)(dynamic, dynamic_kw)

    return call
