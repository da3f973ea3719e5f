"""Empirical kernels stay exact at any output count on jax 0.10.2, whose ``jax.vmap`` of a
``jax.vjp`` returns wrong conv weight gradients for large cotangent batches (see
infwidth/empirical/_chunks.py and examples/jax_vmap_vjp_conv_bug.py).

The failing pattern is built in plain JAX: a 1x1 convolution to 128 channels on a single
position, then a dense readout to 512 outputs. Its NTK has a closed form (below, float64), so
every path is checked against it where the naive ``jax.jacrev`` contraction is wrong. The Flax
ResNet of neural-tangents' notebook (small: two stages, 8x8 images) checks the same on a real
model against a row-at-a-time Jacobian.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_err, tol
from jax import lax

from infwidth.empirical import _chunks as ch
from infwidth.empirical import (
    empirical_kernel_fn,
    empirical_ntk_fn,
    monte_carlo_kernel_fn,
)

OUT, CIN, COUT = 512, 8, 128  # 512 rows x 128 channels > 2**15: the naive batch is wrong
DN = ("NHWC", "HWIO", "NHWC")


def _f(p, x):
    h = lax.conv_general_dilated(x, p["w1"], (2, 2), "SAME", dimension_numbers=DN)
    h = jax.nn.relu(h).reshape(x.shape[0], -1)
    return h @ p["w2"] / np.sqrt(h.shape[-1]) + p["b"]


def _params(key=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    return {"w1": jax.random.normal(k1, (1, 1, CIN, COUT), jnp.float32),
            "w2": jax.random.normal(k2, (COUT, OUT), jnp.float32),
            "b": jnp.zeros(OUT, jnp.float32)}


def _closed_form(p, x):
    """NTK (N1, N2, O, O) of _f in float64: the 1x1 stride-2 SAME conv on 2x2 inputs reads
    pixel (0, 0), so f = relu(x00 W1) W2 / sqrt(C) + b and each parameter's term is explicit."""
    x0 = np.asarray(x, np.float64)[:, 0, 0, :]
    w1 = np.asarray(p["w1"], np.float64)[0, 0]
    w2 = np.asarray(p["w2"], np.float64)
    z = x0 @ w1
    h, d = np.maximum(z, 0), (z > 0).astype(np.float64)
    eye = np.eye(OUT)
    k = np.einsum("ab,oq->aboq", 1 + h @ h.T / COUT, eye)  # b and W2
    return k + np.einsum("ab,ac,bc,co,cq->aboq", x0 @ x0.T, d, d, w2, w2) / COUT  # W1


def _x(n):
    return jax.random.normal(jax.random.PRNGKey(5), (n, 2, 2, CIN), jnp.float32)


def test_naive_vmapped_vjp_is_wrong_here():
    """The plain-JAX Jacobian contraction is wrong on this pattern (documents the JAX bug;
    skipped once a JAX release computes it right, when the chunking could be relaxed)."""
    p, x = _params(), _x(1)
    jac = jax.jacrev(_f)(p, x)
    flat = [np.asarray(j).reshape(1, OUT, -1) for j in jax.tree_util.tree_leaves(jac)]
    naive = sum(np.einsum("aip,bjp->abij", j, j) for j in flat)
    err = rel_err(naive, _closed_form(p, x))
    if err < 1e-3:
        pytest.skip(f"jax {jax.__version__} computes this batch right (error {err:.2g})")
    assert err > 1e-2 or not np.all(np.isfinite(naive))


@pytest.mark.parametrize("impl", [1, 2, 3])
@pytest.mark.parametrize("vmap_axes", [None, 0])
def test_every_implementation_exact_where_naive_fails(impl, vmap_axes):
    p = _params()
    for n in (1, 2):
        x = _x(n)
        k = empirical_ntk_fn(_f, trace_axes=(), vmap_axes=vmap_axes, implementation=impl)(
            x, None, p)
        assert rel_err(k, _closed_form(p, x)) < tol("exact", np.float32), (n, impl, vmap_axes)


def test_kernel_fn_and_monte_carlo_exact_where_naive_fails():
    p, x = _params(), _x(1)
    exact = _closed_form(p, x)
    k = empirical_kernel_fn(_f, trace_axes=())(x, None, "ntk", p)
    assert rel_err(k, exact) < tol("exact", np.float32)
    # one Monte Carlo draw of these parameters is the empirical NTK itself
    mc = monte_carlo_kernel_fn(lambda key, shape: (None, p), _f, jax.random.PRNGKey(0), 1,
                               trace_axes=(), implementation=1)
    assert rel_err(mc(x, None, "ntk"), exact) < tol("exact", np.float32)


def test_row_limit_reads_single_position_convs():
    p = _params()
    assert ch.row_limit(lambda q: _f(q, _x(1)), p) == 2**15 // COUT
    assert ch.row_limit(lambda q: _f(q, _x(2)), p) is None  # two positions: no bound
    dense = lambda w, x: x @ w
    assert ch.row_limit(dense, jnp.ones((3, 4)), jnp.ones((1, 3))) is None


def _row_at_a_time_ntk(f, v, x):
    """Plain-JAX NTK (N, N, O, O): one VJP per output entry in a loop (exact on every JAX),
    contracted in float64."""
    out, vjp = jax.vjp(lambda q: f(q, x), v)
    eye = jnp.eye(out.size, dtype=out.dtype).reshape((out.size,) + out.shape)
    rows = lax.map(lambda e: jax.tree_util.tree_leaves(vjp(e)[0]), eye)
    j = np.concatenate([np.asarray(r, np.float64).reshape(out.size, -1) for r in rows], 1)
    n, o = out.shape
    return (j @ j.T).reshape(n, o, n, o).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("out", [600])
def test_flax_resnet_all_methods_agree_at_any_output_count(out):
    pytest.importorskip("flax")
    from flax_resnet import resnet_fn

    # 8x8 images: the second stage is 1x1 with 64 channels, so 600 rows exceed 2**15
    f, v, x = resnet_fn((1, 1), out, 32, image=8, n=1)
    ref = _row_at_a_time_ntk(f, v, x)
    for impl in (1, 2, 3):
        k = empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=impl)(x, None, v)
        assert rel_err(k, ref) < 1e-5, (impl, rel_err(k, ref))
