"""neural-tangents' ``_src.monte_carlo`` names (see `infwidth._src`)."""

import jax

from .._random import classic_stream
from ..batching import batch
from ..empirical.monte_carlo import monte_carlo_kernel_fn

__all__ = ["monte_carlo_kernel_fn", "_sample_once_kernel_fn"]


def _sample_once_kernel_fn(kernel_fn, init_fn, batch_size: int = 0, device_count: int = -1,
                           store_on_device: bool = True):
    """``fn(x1, x2, key, get, **kwargs)``: the empirical kernel of one network drawn from
    ``key`` (split into the parameters' key and the dropout key, as `monte_carlo_kernel_fn`
    does), evaluated through `infwidth.batch` when ``batch_size`` or devices ask for it."""
    @classic_stream
    def sample_once(x1, x2, key, get, **apply_fn_kwargs):
        init_key, dropout_key = jax.random.split(key, 2)
        shapes = jax.tree_util.tree_map(lambda a: a.shape, x1)
        _, params = init_fn(init_key, shapes)
        return kernel_fn(x1, x2, get, params, rng=dropout_key, **apply_fn_kwargs)

    if batch_size == 0 and device_count == 0:
        return sample_once
    return batch(sample_once, batch_size, device_count, store_on_device)
