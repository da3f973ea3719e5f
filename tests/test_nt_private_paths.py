"""neural-tangents' private paths (``infwidth._src``), which its own tests import: each name
does what neural-tangents' does, checked against JAX itself or the public function."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from infwidth import NtkImplementation, stax
from infwidth._src import batching, monte_carlo
from infwidth._src.empirical import _DEFAULT_TESTING_NTK_IMPLEMENTATION
from infwidth._src.predict import _is_on_cpu
from infwidth._src.utils import utils


@pytest.mark.parametrize("is_lhs", [False, True])
def test_axis_after_dot_is_where_lax_dot_general_puts_the_axis(is_lhs):
    shape = (2, 3, 4, 5)
    for contracting, batch in [((1,), ()), ((), (2,)), ((1,), (3, 0)), ((0, 2), ()), ((), ())]:
        used = contracting + batch
        free = [i for i in range(4) if i not in used]
        other_shape = [shape[i] for i in contracting] + [shape[i] for i in batch] + [7]
        o_c = tuple(range(len(contracting)))
        o_b = tuple(range(len(contracting), len(used)))
        dn = ((o_c, contracting), (o_b, batch)) if is_lhs else ((contracting, o_c), (batch, o_b))
        # tag each free axis of the input with its own size to find it in the output
        x = jnp.zeros(shape)
        other = jnp.zeros(other_shape)
        args = (other, x) if is_lhs else (x, other)
        out = lax.dot_general(*args, dn).shape
        for axis in free + list(batch):
            pos = utils.axis_after_dot(axis, contracting, batch, len(other_shape) if is_lhs
                                       else None)
            assert out[pos] == shape[axis], (contracting, batch, axis, out, pos)


def test_zip_and_unzip_axes_are_inverse_and_interleave():
    x = jnp.arange(2 * 3 * 4 * 3 * 4).reshape(2, 3, 4, 3, 4)
    z = utils.zip_axes(x, 1)
    assert z.shape == (2, 3, 3, 4, 4)
    assert z[1, 2, 0, 3, 1] == x[1, 2, 3, 0, 1]
    np.testing.assert_array_equal(utils.unzip_axes(z, 1), x)
    assert utils.zip_flat((1, 2), ("a", "b")) == (1, "a", 2, "b")
    assert utils.canonicalize_idx((Ellipsis, 1), 3) == (slice(None), slice(None), 1)
    m = jnp.array([True, False])
    np.testing.assert_array_equal(utils.mask(jnp.ones(2), m), [0.0, 1.0])


def test_private_batching_and_monte_carlo_are_the_public_functions():
    _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    full = kernel_fn(x, None, "nngp")
    for i, batched in enumerate([batching._serial(kernel_fn, 4), batching._parallel(kernel_fn),
                    batching._parallel(batching._serial(kernel_fn, 2)),
                    batching._jit_or_pmap_broadcast(kernel_fn, device_count=0)]):
        np.testing.assert_allclose(batched(x, None, "nngp"), full, rtol=1e-5, atol=1e-6,
                                   err_msg=str(i))
    # mapped over the devices: x1 split along a leading device axis, x2 broadcast to each
    n_dev = jax.local_device_count()
    per_device = batching._jit_or_pmap_broadcast(kernel_fn)
    x1 = jnp.concatenate([x] * n_dev)[: 2 * n_dev].reshape((n_dev, 2, 3))
    out = per_device(x1, x, "nngp")
    assert out.shape == (n_dev, 2, 8)
    for d in range(n_dev):
        np.testing.assert_allclose(out[d], kernel_fn(x1[d], x, "nngp"), rtol=1e-5, atol=1e-6)
    assert _DEFAULT_TESTING_NTK_IMPLEMENTATION is NtkImplementation.STRUCTURED_DERIVATIVES
    assert callable(monte_carlo.monte_carlo_kernel_fn)
    assert _is_on_cpu(x) == all(d.platform == "cpu" for d in x.devices())
    assert _is_on_cpu({"a": np.ones(2)})


def test_every_private_name_neural_tangents_tests_import_exists():
    names = {"batching": ["batch", "_serial", "_parallel", "_jit_or_pmap_broadcast"],
             "utils": ["axis_after_dot", "zip_flat", "unzip_axes", "canonicalize_idx", "mask"]}
    mods = {"batching": batching, "utils": utils}
    for mod, name in itertools.chain.from_iterable(
            ((m, n) for n in ns) for m, ns in names.items()):
        assert hasattr(mods[mod], name), (mod, name)
