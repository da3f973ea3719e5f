"""Automatic tiling of kernel_fn (infwidth/stax/_tiling.py): with the tile budget forced down to
2 x 2 tiles, kernels still agree with neural-tangents 0.6.5 in float64 (conv, FC, branching,
normalization, indexing, attention, residual builders), for x2=None (upper tiles plus mirror
images, overlapping last tiles) and for two batches; self-correlations stay exactly 1;
gradients pass through the tiles; the switch works and bad values raise.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    REFERENCE_DIR,
    assert_close,
    check_group_against_reference,
    load_reference,
    tol,
    x64,
)

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
import catalogue_attention  # noqa: E402
import catalogue_branching  # noqa: E402
import catalogue_indexing  # noqa: E402
import catalogue_normalization  # noqa: E402
from _catalogue import build  # noqa: E402
from catalogue_conv import CATALOGUE as CONV  # noqa: E402
from catalogue_fc import CATALOGUE as FC  # noqa: E402


@pytest.fixture
def tiny_tiles():
    """Tiles of 2 x 2 pairs (the smallest side) for every kernel_fn called on arrays."""
    old = stax.tile_memory()
    stax.tile_memory(1)
    yield
    stax.tile_memory(old)


def _uses_tiles(kernel_fn, x1, x2=None, **kw) -> bool:
    return "scan" in str(jax.make_jaxpr(lambda a: kernel_fn(a, x2, get="nngp", **kw))(x1))


CONV_REF = load_reference("conv")
CONV_NAMES = sorted(n for n in CONV if n.startswith("ntk-") and "wide-resnet" not in n
                    and "local-raw" not in n)


@pytest.mark.parametrize("name", CONV_NAMES)
def test_tiled_conv_matches_neural_tangents(tiny_tiles, name):
    group, spec, kw = CONV[name]
    with x64():
        kernel_fn = build(stax, spec)[2]
        x1, x2 = jnp.asarray(CONV_REF[f"{group}/x1"]), jnp.asarray(CONV_REF[f"{group}/x2"])
        if kw.get("diagonal_batch", True):
            assert _uses_tiles(kernel_fn, x1, **kw) and _uses_tiles(kernel_fn, x1, x2, **kw)
        get = ("nngp", "ntk")
        k12, k11 = jax.jit(lambda a, b: (kernel_fn(a, b, get=get, **kw),
                                         kernel_fn(a, None, get=get, **kw)))(x1, x2)
        for tag, k in (("12", k12), ("11", k11)):
            for what in get:
                ref = CONV_REF[f"{name}/{what}{tag}"]
                assert getattr(k, what).shape == ref.shape
                assert_close(getattr(k, what), ref, tol("nt", "float64"), f"{what}{tag}")


FC_REF = load_reference("fc")


@pytest.mark.parametrize("name", ["ntk-relu-d3-W1.2-b0.0", "ntk-erf-d2-W1.7-b0.3",
                                  "standard-abs-d3-W1.2-b0.0", "standard-linear"])
def test_tiled_fc_matches_neural_tangents(tiny_tiles, name):
    with x64():
        kernel_fn = build(stax, FC[name])[2]
        x1, x2 = jnp.asarray(FC_REF["x1"]), jnp.asarray(FC_REF["x2"])
        assert _uses_tiles(kernel_fn, x1)
        k12, k11 = jax.jit(lambda a, b: (kernel_fn(a, b, get=("nngp", "ntk")),
                                         kernel_fn(a, None, get=("nngp", "ntk"))))(x1, x2)
        for tag, k in (("12", k12), ("11", k11)):
            assert_close(k.nngp, FC_REF[f"{name}/nngp{tag}"], tol("nt", "float64"), "nngp")
            assert_close(k.ntk, FC_REF[f"{name}/ntk{tag}"], tol("nt", "float64"), "ntk")


_GROUPS = {"attention": catalogue_attention, "branching": catalogue_branching,
           "indexing": catalogue_indexing, "normalization": catalogue_normalization}
_GROUP_CASES = [(topic, g, sorted(cat)[i]) for topic, mod in _GROUPS.items()
                for g, (cat, *_r, kw) in mod.GROUPS.items()
                if kw.get("diagonal_batch", True) for i in (0, -1)]


@pytest.mark.parametrize("topic,group,name", _GROUP_CASES)
def test_tiled_layers_match_neural_tangents(tiny_tiles, topic, group, name):
    check_group_against_reference(stax, _GROUPS[topic].GROUPS, load_reference(topic), group,
                                  name)


def test_self_correlation_stays_exact_in_tiles(tiny_tiles):
    """Sign after Dense: K(x, x) = W_std^2 E[sign(z)^2] + b_std^2 = W_std^2 + b_std^2 exactly,
    also for repeated inputs and in the overlapping last tile (N=5 in tiles of 2)."""
    _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.5), stax.Sign(),
                                  stax.Dense(1, W_std=1.3, b_std=0.2))
    with x64():
        x = jnp.asarray(np.random.RandomState(0).randn(5, 7))
        x = x.at[3].set(x[1])
        assert _uses_tiles(kernel_fn, x)
        k = jax.jit(kernel_fn, static_argnames="get")(x, None, get="nngp")
        np.testing.assert_allclose(np.diag(k), 1.3**2 + 0.2**2, rtol=1e-14)
        np.testing.assert_allclose(k[1, 3], 1.3**2 + 0.2**2, rtol=1e-12)
        np.testing.assert_allclose(k, k.T, rtol=0, atol=0)
        # x2 given as the same array is the symmetric evaluation too
        k_same = jax.jit(lambda a: kernel_fn(a, a, get="nngp"))(x)
        np.testing.assert_allclose(np.diag(k_same), 1.3**2 + 0.2**2, rtol=1e-14)


def test_cov_fields_shapes_and_gradients_through_tiles(tiny_tiles):
    """A full Kernel (cov1, cov2, shapes, flags) and gradients with respect to the inputs are
    those of the untiled evaluation."""
    _, _, kernel_fn = stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
                                  stax.Relu(), stax.AvgPool((2, 2)), stax.Flatten(),
                                  stax.Dense(2))
    with x64():
        rng = np.random.RandomState(1)
        x1, x2 = jnp.asarray(rng.randn(5, 4, 4, 2)), jnp.asarray(rng.randn(3, 4, 4, 2))
        loss = lambda a: jnp.sum(kernel_fn(a, None, get="ntk") ** 2)  # noqa: E731
        tiled = [kernel_fn(x1, None), kernel_fn(x1, x2), jax.grad(loss)(x1)]
        stax.tile_memory(0)
        assert not _uses_tiles(kernel_fn, x1)
        whole = [kernel_fn(x1, None), kernel_fn(x1, x2), jax.grad(loss)(x1)]
    for t, w in zip(tiled[:2], whole[:2]):
        for f in ("nngp", "ntk", "cov1", "cov2"):
            a, b = getattr(t, f), getattr(w, f)
            assert (a is None) == (b is None), f
            if a is not None:
                # ReLU's NTK map has infinite slope at correlation 1: an input paired with
                # itself moves by ~sqrt(rounding) (1e-10 here) with the order of operations
                assert_close(a, b, 1e-9 if f == "ntk" and t.x1_is_x2 else 1e-12, f)
        assert (t.shape1, t.shape2, t.x1_is_x2, t.is_gaussian) == (
            w.shape1, w.shape2, w.x1_is_x2, w.is_gaussian)
    assert_close(tiled[2], whole[2], 1e-8, "grad")  # the same self-pair sensitivity


def test_small_inputs_are_not_tiled_and_bad_budget_raises():
    _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    assert not _uses_tiles(kernel_fn, jnp.ones((64, 3)))  # 16 KiB per array
    assert _uses_tiles(kernel_fn, jnp.ones((2048, 3)))  # 16 MiB per array
    for bad in (-1, 1.5, "big", True):
        with pytest.raises(ValueError, match="tile_memory.*non-negative integer"):
            stax.tile_memory(bad)
