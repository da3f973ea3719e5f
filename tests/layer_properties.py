"""Properties every new layer's kernel_fn must have (tests/test_contract_new_*.py): the same
kernels with x2=None and x2=copy, under jit, finite values and jax.grad (also with a repeated
input), float32 and float64, with implicit rank promotion raising."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from helpers import assert_close, x64


def check_kernel_properties(make_kernel_fn, x1, rtol32=1e-4, rtol64=1e-9, **kwargs):
    """Runs the property battery on ``make_kernel_fn()`` (built inside each precision)."""
    for wide, rtol in ((False, rtol32), (True, rtol64)):
        with (x64() if wide else _nothing()), jax.numpy_rank_promotion("raise"):
            _check_one(make_kernel_fn(), x1, jnp.float64 if wide else jnp.float32, rtol, kwargs)


def _check_one(kernel_fn, x1, dtype, rtol, kwargs):
    a = jnp.asarray(x1, dtype)
    a = a.at[1].set(a[0])  # a repeated input: correlation exactly 1
    get = ("nngp", "ntk")
    k_none = kernel_fn(a, None, get=get, **kwargs)
    k_copy = kernel_fn(a, jnp.array(a), get=get, **kwargs)
    k_jit = jax.jit(lambda u: kernel_fn(u, None, get=get, **kwargs))(a)
    for f in get:
        v = np.asarray(getattr(k_none, f))
        assert v.dtype == np.dtype(dtype), (f, v.dtype)
        assert np.isfinite(v).all(), f"{f} not finite"
        assert_close(getattr(k_copy, f), v, rtol, f"{f}: x2=copy vs x2=None")
        assert_close(getattr(k_jit, f), v, rtol, f"{f}: jit vs eager")
        np.testing.assert_allclose(v, v.T if v.ndim == 2 else v, rtol=1e-3,
                                   atol=1e-6 * np.abs(v).max())

    def loss(u):
        k = kernel_fn(u, None, get=get, **kwargs)
        return jnp.sum(k.nngp) + jnp.sum(k.ntk)

    g = jax.grad(loss)(a)
    assert np.isfinite(np.asarray(g)).all(), "jax.grad not finite"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
