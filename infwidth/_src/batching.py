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


pmap = jax.pmap  # a module attribute, as in neural-tangents (whose tests stub it with vmap)


def _jit_or_pmap_broadcast(f, device_count: int = -1):
    """``f`` compiled over its array arguments, the others (``get``, flags, keywords that are
    not arrays) held static, with neural-tangents' semantics: ``device_count=0`` jits ``f``;
    otherwise (``-1``: all local devices) ``f`` is mapped over the leading (device) axis of
    its first argument, every other array argument broadcast to each device, and every output
    gets the leading device axis. (`infwidth.batch` is the public way to place work on
    devices.)"""
    if device_count == -1:
        device_count = jax.local_device_count()
    cache: dict = {}

    def is_arrays(a) -> bool:
        leaves = jax.tree_util.tree_leaves(a)
        return bool(leaves) and all(isinstance(v, (jax.Array, np.ndarray)) for v in leaves)

    def broadcast(a):
        return a if device_count == 0 else jax.numpy.broadcast_to(a, (device_count,) + a.shape)

    def call(x, *args, **kwargs):
        idx = [i for i, a in enumerate(args) if is_arrays(a)]
        other = {i: a for i, a in enumerate(args) if i not in idx}
        kw_arrays = {k: v for k, v in kwargs.items() if is_arrays(v)}
        kw_other = {k: v for k, v in kwargs.items() if k not in kw_arrays}

        def run(x_, *args_np, **kw_np):
            merged = {**dict(zip(idx, args_np)), **other}
            return f(x_, *(merged[i] for i in range(len(args))), **kw_np, **kw_other)

        try:
            key = (tuple(idx), tuple(other.items()), tuple(sorted(kw_other.items())))
            hash(key)
        except TypeError:
            key = None
        compiled = cache.get(key) if key is not None else None
        if compiled is None:
            compiled = jax.jit(run) if device_count == 0 else pmap(run)
            if key is not None:
                cache[key] = compiled
        args_np = jax.tree_util.tree_map(broadcast, [args[i] for i in idx])
        kw_np = jax.tree_util.tree_map(broadcast, kw_arrays)
        return compiled(x, *args_np, **kw_np)

    return call
