"""Behaviours neural-tangents 0.6.5 accepts, with its numbers (float64, relative error < 1e-6).

Reference values: tests/reference/dropin.npz, written by tests/reference/make_dropin.py under
neural-tangents from the shared builders in tests/reference/catalogue_dropin.py: Dense on
inputs with spatial axes, convolutions with ``filter_shape=()``, pooling without spatial axes,
Aggregate without a pattern, DotGeneral, ImageResize, a user-written layer through
``stax.layer``/``stax.requires``, the parameters ``init_fn`` draws for a key, an NTK-vector
product, the ``Diagonal``/``Bool`` algebra and ``unmask_fn``.
"""

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

import infwidth
from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from catalogue_dropin import CATALOGUE, INIT  # noqa: E402

REF = load_reference("dropin")


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_kernels_match_neural_tangents(name):
    with x64():
        layer, which, kwargs = CATALOGUE[name](stax, jnp)
        x1, x2 = jnp.asarray(REF[f"x/{which}/1"]), jnp.asarray(REF[f"x/{which}/2"])
        kernel_fn = jax.jit(layer.kernel_fn, static_argnums=(2,),
                            static_argnames=("diagonal_spatial", "pattern"))
        for tag, (a, b) in (("12", (x1, x2)), ("11", (x1, None))):
            k = kernel_fn(a, b, ("nngp", "ntk"), **kwargs)
            assert k.nngp.dtype == jnp.float64
            assert_close(k.nngp, REF[f"{name}/nngp{tag}"], tol("nt", "float64"), f"nngp{tag}")
            assert_close(k.ntk, REF[f"{name}/ntk{tag}"], tol("nt", "float64"), f"ntk{tag}")
        # the finite network runs on the same inputs with the kernel's output shape
        out_shape, params = layer.init_fn(jax.random.PRNGKey(0), x1.shape)
        y = layer.apply_fn(params, x1, **({"pattern": None} if "pattern" in kwargs else {}))
        assert y.shape == tuple(out_shape)


def test_image_resize_after_a_convolution_is_t_k_t():
    """After an odd number of convolutions neural-tangents stores the spatial axes reversed
    and its ImageResize then resizes the wrong axes (its kernel has the geometry (W, H) of the
    transposed image); infwidth's is T K T^T with T the resize matrices, checked here with
    explicit matrices built from jax.image.resize of the identity."""
    with x64():
        x = jnp.asarray(np.random.RandomState(0).randn(2, 4, 5, 2))
        conv = stax.Conv(3, (2, 2))
        k = stax.serial(conv, stax.ImageResize((-1, 6, 7, -1), "linear")).kernel_fn(x, None,
                                                                                   "nngp")
        kc = conv.kernel_fn(x, None, "nngp")  # (2, 2, 3, 3, 4, 4)

        def resize_matrix(n_in, n_out):
            return np.asarray(jax.image.resize(jnp.eye(n_in), (n_in, n_out), "linear"))

        th, tw = resize_matrix(3, 6), resize_matrix(4, 7)
        expected = np.einsum("nmaAbB,ah,AH,bw,BW->nmhHwW", kc, th, th, tw, tw)
        assert_close(k, expected, tol("exact", "float64"), "nngp")


def test_dot_general_without_factors_is_the_identity():
    """neural-tangents' DotGeneral() (no lhs, no rhs) returns NaN kernels (it multiplies by
    jnp.array(None)); infwidth's is the identity its docstring promises."""
    with x64():
        x = jnp.asarray(REF["x/seq/1"])
        net = [stax.Dense(3), stax.Relu()]
        k = stax.serial(*net, stax.DotGeneral(), stax.Dense(1)).kernel_fn(x, None, "ntk")
        assert_close(k, stax.serial(*net, stax.Dense(1)).kernel_fn(x, None, "ntk"),
                     tol("exact", "float64"), "ntk")


def test_aggregate_without_pattern_is_the_identity_graph():
    with x64():
        layer, which, _ = CATALOGUE["aggregate_identity"](stax, jnp)
        x1 = jnp.asarray(REF[f"x/{which}/1"])
        k = layer.kernel_fn(x1, None, "nngp")  # no pattern at all (neural-tangents raises)
        assert_close(k, REF["aggregate_identity/nngp11"], tol("nt", "float64"), "nngp")
        _, apply_fn, _ = stax.Aggregate()
        assert_close(apply_fn((), x1), x1, tol("exact", "float64"), "apply_fn")


@pytest.mark.parametrize("name", sorted(INIT))
def test_same_key_same_parameters(name):
    """init_fn draws neural-tangents' parameters, leaf by leaf, from the same key, although
    current JAX's default stream (jax_threefry_partitionable=True since 0.5) differs from the
    one neural-tangents' JAX used: infwidth's layers draw with the classic stream."""
    build, shape = INIT[name]
    with x64():
        _, params = build(stax).init_fn(jax.random.PRNGKey(1), shape)
    leaves = jax.tree_util.tree_leaves(params)
    expected = [REF[k] for k in sorted((k for k in REF if k.startswith(f"init/{name}/")),
                                       key=lambda k: int(k.rsplit("/", 1)[1]))]
    assert len(leaves) == len(expected)
    for i, (a, b) in enumerate(zip(leaves, expected)):
        assert a.shape == b.shape, f"leaf {i}"
        assert_close(a, b, tol("exact", "float64"), f"leaf {i}")


def test_empirical_ntk_vp_fn_matches_neural_tangents():
    with x64():
        _, apply_fn, _ = stax.serial(stax.Dense(8, b_std=0.5), stax.Erf(), stax.Dense(3))
        w0, b0, w1 = (jnp.asarray(REF[f"ntk_vp/param/{i}"]) for i in range(3))
        params = [(w0, b0), (), (w1, None)]
        x1, x2 = jnp.asarray(REF["x/flat/1"]), jnp.asarray(REF["x/flat/2"])
        cot = jnp.asarray(np.random.RandomState(3).randn(4, 3))
        out = infwidth.empirical_ntk_vp_fn(apply_fn, x1, x2, params)(cot)
        assert_close(out, REF["ntk_vp/out12"], tol("nt", "float64"), "x1, x2")
        out = infwidth.empirical_ntk_vp_fn(apply_fn, x1, None, params)(cot[:1].repeat(5, 0))
        assert_close(out, REF["ntk_vp/out11"], tol("nt", "float64"), "x1, None")
        # and it is the full empirical NTK (no trace) applied to the cotangents
        ntk = infwidth.empirical_ntk_fn(apply_fn, trace_axes=())(x1, x2, params)  # (5, 4, 3, 3)
        assert_close(jnp.einsum("nmij,mj->ni", ntk, cot), REF["ntk_vp/out12"],
                     tol("nt", "float64"), "vs the NTK")


def test_diagonal_and_bool_algebra_match_neural_tangents():
    B = stax.Bool
    reqs = [stax.Diagonal(input=i, output=o) for i, o in itertools.product(B, B)]
    assert [[int(d.input), int(d.output)] for d in reqs] == REF["diagonal/pairs"].tolist()
    for op, f in (("rshift", lambda a, b: a >> b), ("lshift", lambda a, b: a << b),
                  ("and", lambda a, b: a & b)):
        got = [[[int(f(a, b).input), int(f(a, b).output)] for b in reqs] for a in reqs]
        assert got == REF[f"diagonal/{op}"].tolist(), op
    assert [bool(d) for d in reqs] == REF["diagonal/bool"].tolist()
    assert [[int(a & b) for b in B] for a in B] == REF["bool/and"].tolist()


def test_unmask_fn_matches_neural_tangents():
    with x64():
        x = jnp.asarray(REF["unmask/x"])
        res = stax.unmask_fn(lambda v: {"a": stax.MaskedArray(v, v > 0.5), "b": v})(x)
    np.testing.assert_array_equal(res["a"], REF["unmask/a"])
    np.testing.assert_array_equal(res["b"], REF["unmask/b"])


def test_requires_refuses_a_diagonal_kernel_it_cannot_use():
    @stax.layer
    def NeedsFullBatch():
        @stax.requires(diagonal_batch=False)
        def kernel_fn(k, **kwargs):
            return k
        return (lambda key, s: (s, ()), lambda p, x, **kw: x, kernel_fn)

    layer = stax.serial(stax.Dense(2), NeedsFullBatch())
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match="needs diagonal_batch=False.*call kernel_fn with "
                                         "diagonal_batch=False"):
        layer.kernel_fn(x, None, "nngp")
    assert layer.kernel_fn(x, None, "nngp", diagonal_batch=False).shape == (3, 3)


@pytest.mark.parametrize("build, match", [
    (lambda: stax.DotGeneral(lhs=1.0, rhs=1.0), r"DotGeneral\(lhs=..., rhs=...\)"),
    (lambda: stax.DotGeneral(rhs=jnp.ones((2, 3)), dimension_numbers=(((1,), (2,)), ((), ()))),
     r"DotGeneral\(dimension_numbers=.*axis 2 of the constant rhs is out of range"),
    (lambda: stax.DotGeneral(rhs=jnp.ones((2, 3)), dimension_numbers=(((1,), (0, 1)), ((), ()))),
     r"DotGeneral\(dimension_numbers=.*must come in pairs"),
    (lambda: stax.DotGeneral(rhs=jnp.ones(2), batch_axis=1, channel_axis=1),
     r"DotGeneral\(batch_axis=1, channel_axis=1\): the batch and channel axes must differ"),
    (lambda: stax.ImageResize((3, 4, -1), "linear"), r"ImageResize\(shape=\(3, 4, -1\)\)"),
    (lambda: stax.ImageResize((-1, 4, -1), "bicubicc"), r"ImageResize\(method='bicubicc'\)"),
    (lambda: stax.Conv(3, (), strides=(2,)), r"Conv\(filter_shape=\(\), strides=\(2,\)\)"),
])
def test_bad_arguments_name_the_argument(build, match):
    with pytest.raises((ValueError, NotImplementedError), match=match):
        build()


def test_bad_inputs_raise_before_work():
    with pytest.raises(ValueError, match=r"contract or batch the channel axis 1.*must stay free"):
        stax.DotGeneral(rhs=jnp.ones(3), dimension_numbers=(((1,), (0,)), ((), ()))).kernel_fn(
            jnp.ones((2, 3)))
    over_batch = stax.DotGeneral(rhs=jnp.ones(2), dimension_numbers=(((0,), (0,)), ((), ())))
    with pytest.raises(ValueError, match=r"sum over the batch axis 0.*diagonal_batch=False"):
        over_batch.kernel_fn(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"inputs of shape \(5, 3\) do not match the constant"):
        over_batch.init_fn(None, (5, 3))
    with pytest.raises(ValueError, match=r"Conv\(filter_shape=\(\)\): .*\(N, C\)"):
        stax.Conv(3, ()).kernel_fn(jnp.ones((2, 4, 3)))
    with pytest.raises(ValueError, match="ImageResize: this layer mixes positions"):
        stax.serial(stax.Dense(2), stax.ImageResize((-1, 3, -1), "linear")).kernel_fn(
            jnp.ones((2, 4, 3)), diagonal_spatial=True)
