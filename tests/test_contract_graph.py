"""Contract tests for Aggregate: analytic vs Monte Carlo kernels of a wide graph network (width
512, 64 draws, tol('mc')), DENSE and SPARSE agreement, closed form and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64

from infwidth import stax

V = 5


def _graph(seed, n):
    """Random directed graphs as weighted dense adjacency and as (tail, head) edge lists."""
    rng = np.random.RandomState(seed)
    edges = rng.randint(0, V, size=(n, 8, 2))
    edges[:, 0] = (1, 0)  # vertex 0 always has a predecessor
    dense = np.zeros((n, V, V))
    for b in range(n):
        for t, h in edges[b]:
            dense[b, t, h] += 1
    return dense, edges.astype(np.int32)


def test_aggregate_matches_monte_carlo():
    dense, sparse = _graph(0, 3)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, V, 4))
    init_a, apply_a, kernel_a = stax.serial(
        stax.Dense(512, 1.3, 0.1), stax.Aggregate(), stax.Relu(), stax.Dense(512, 1.1, 0.2),
        stax.Aggregate(), stax.Erf(), stax.Dense(64, 1.0, 0.1))
    k = kernel_a(x, None, get=("nngp", "ntk"), pattern=(jnp.asarray(dense), None))
    out_shape, params = init_a(jax.random.PRNGKey(1), x.shape)
    assert apply_a(params, x, pattern=dense).shape == out_shape == (3, V, 64)
    mc_nngp, mc_ntk = mc_kernels(init_a, apply_a, x, x, jax.random.PRNGKey(2), 64,
                                 apply_kwargs={"pattern": jnp.asarray(dense)})
    nngp = jnp.einsum("abvv->ab", k.nngp) / V
    ntk = k.ntk[:, :, 0, 0]
    assert rel_err(mc_nngp, nngp) < tol("mc"), rel_err(mc_nngp, nngp)
    assert rel_err(mc_ntk, ntk) < tol("mc"), rel_err(mc_ntk, ntk)
    assert rel_err(mc_nngp, 1.2 * np.asarray(nngp)) > tol("mc")
    assert rel_err(mc_ntk, 1.2 * np.asarray(ntk)) > tol("mc")
    # the SPARSE edge list of the same graphs gives the same outputs and kernels
    sp = stax.Aggregate(implementation="SPARSE")
    de = stax.Aggregate()
    assert_close(sp[1]((), x, pattern=sparse), de[1]((), x, pattern=dense), tol("exact"), "apply")
    k_sp = sp[2](stax.Dense(8)[2](x), pattern=(sparse, None))
    k_de = de[2](stax.Dense(8)[2](x), pattern=(dense, None))
    assert_close(k_sp.nngp, k_de.nngp, tol("exact"), "kernel")


def test_aggregate_closed_form_float64():
    with x64():
        dense, _ = _graph(1, 2)
        x1 = jax.random.normal(jax.random.PRNGKey(0), (2, V, 3))
        x2 = jax.random.normal(jax.random.PRNGKey(1), (1, V, 3))
        d2, _ = _graph(2, 1)
        k = stax.Aggregate()[2](x1, x2, pattern=(dense, d2), get="nngp")
        gram = jnp.einsum("nic,mjc->nmij", x1, x2) / 3
        expected = jnp.einsum("nia,nmij,mjb->nmab", dense, gram, d2)
        assert_close(k, expected, tol("exact", "float64"), "nngp")
        # apply_fn: out[j] = sum_i x[i] A[i, j]
        y = stax.Aggregate()[1]((), x1, pattern=dense)
        assert_close(y, jnp.einsum("nic,nij->njc", x1, dense), tol("exact", "float64"), "apply")


def test_aggregate_errors():
    x = jnp.ones((2, V, 3))
    agg = stax.Aggregate()
    with pytest.raises(ValueError, match=r"Aggregate: kernel_fn\(x1, x2\) got pattern="
                                         r"\(pattern1, None\): pass the graph of x2"):
        agg[2](x, x + 1, pattern=(jnp.ones((2, V, V)), None))
    with pytest.raises(ValueError, match=r"Aggregate: kernel_fn\(x1, x2\) got pattern="
                                         r"\(None, pattern2\)"):
        agg[2](x, x + 1, pattern=(None, jnp.ones((2, V, V))))
    with pytest.raises(ValueError, match=r"Aggregate: pattern has \(dense\) shape \(2, 4, 4\)"):
        agg[2](x, pattern=(jnp.ones((2, 4, 4)), None))
    with pytest.raises(ValueError, match=r"Aggregate: inputs of shape \(N, C\) have no vertex"):
        agg[2](jnp.ones((2, 3)), pattern=(jnp.ones((2, 1, 1)), None))
    with pytest.raises(ValueError, match=r"Aggregate\(implementation='SPARSE'\): pattern must "
                                         r"be an integer array"):
        stax.Aggregate(implementation="SPARSE")[1]((), x, pattern=jnp.ones((2, 4, 2)))
    with pytest.raises(ValueError, match=r"Aggregate\(implementation='CSR'\)"):
        stax.Aggregate(implementation="CSR")
    with pytest.raises(ValueError, match=r"Aggregate\(aggregate_axis=2\): aggregate axes must"):
        stax.Aggregate(aggregate_axis=2)[2](x, pattern=(jnp.ones((2, 3, 3)), None))
    with pytest.raises(ValueError, match="diagonal_spatial=False"):
        agg[2](x, pattern=(jnp.ones((2, V, V)), None), diagonal_spatial=True)
