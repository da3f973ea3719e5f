"""Convolutions beyond 'SAME'/'VALID': filter dilation, explicit and causal padding, transposed
convolutions (Flax's ConvTranspose, also with transpose_kernel) and feature groups, as the
stax-level `conv_general_dilated` layer and through `from_flax`.

Independent references: the NNGP of one layer from explicit tap matrices (each tap's linear map
from input to output positions, read off ``jax.lax.conv_general_dilated`` on one-hot inputs:
``K' = W_std**2 / |F| sum_t S_t K S_t^T + b_std**2``); the NTK of one layer from autodiff (a
single layer is linear in its parameters, so its empirical NTK is exact at any width); deep
models against the Monte Carlo kernels of the Flax model itself.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64
from jax import lax

from infwidth import from_flax, stax
from infwidth.empirical import empirical_ntk_fn
from infwidth.flax_tracing import UnsupportedOperation
from infwidth.stax.conv import conv_general_dilated, spatial_gather, spatial_zero_padding

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

SPECS = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC")}


def tap_matrices(spatial, filt, strides, pads, lhs, rhs):
    """``S_t`` (out positions x in positions) for every tap ``t`` of the filter."""
    n_pos = int(np.prod(spatial))
    eye = np.eye(n_pos).reshape((n_pos,) + tuple(spatial) + (1,))
    mats = []
    for t in itertools.product(*[range(f) for f in filt]):
        w = np.zeros(tuple(filt) + (1, 1))
        w[t + (0, 0)] = 1.0
        out = lax.conv_general_dilated(jnp.asarray(eye), jnp.asarray(w), strides, pads, lhs, rhs,
                                       dimension_numbers=SPECS[len(spatial)])
        mats.append(np.asarray(out).reshape(n_pos, -1).T)
    return mats, np.asarray(out).shape[1:-1]


def brute_nngp(x, filt, strides, pads, lhs, rhs, W_std, b_std):
    """NNGP (N, N, H, H', W, W') of one convolution of the inputs ``x`` (N, *spatial, C)."""
    n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    flat = x.reshape(n, -1, c)
    k_in = np.einsum("apc,brc->abpr", flat, flat) / c
    mats, out_sp = tap_matrices(spatial, filt, strides, pads, lhs, rhs)
    k = sum(np.einsum("qp,abpr,sr->abqs", s, k_in, s) for s in mats)
    k = W_std**2 / len(mats) * k + b_std**2
    k = k.reshape((n, n) + tuple(out_sp) * 2)
    d = len(out_sp)
    return k.transpose((0, 1) + tuple(a for i in range(d) for a in (2 + i, 2 + d + i)))


GEOMETRIES = {
    "filter dilation, explicit pads": ((7,), (3,), (1,), ((2, 1),), (1,), (2,)),
    "input dilation (transposed)": ((5,), (3,), (1,), ((2, 2),), (2,), (1,)),
    "2-D, both dilations, strides": ((6, 5), (2, 3), (2, 1), ((1, 0), (2, 3)), (1, 2), (2, 1)),
    "2-D dilated SAME": ((6, 5), (3, 3), (1, 2), "SAME", (1, 1), (2, 2)),
    "negative padding (crop)": ((8,), (3,), (2,), ((-1, 2),), (1,), (1,)),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_conv_general_dilated_nngp_equals_tap_matrices(name):
    sp, filt, st, pads, lhs, rhs = GEOMETRIES[name]
    with x64():
        x = np.random.default_rng(0).normal(size=(2,) + sp + (3,))
        layer = conv_general_dilated(4, filt, st, pads, lhs, rhs, W_std=1.3, b_std=0.2)
        k = layer.kernel_fn(jnp.asarray(x), get="nngp")
        expected = brute_nngp(x, filt, st, pads, lhs, rhs, 1.3, 0.2)
        assert_close(k, expected, tol("exact", "float64"), name)
        diag = layer.kernel_fn(jnp.asarray(x), get="nngp", diagonal_spatial=True)
        for i in range(len(sp)):
            expected = np.diagonal(expected, axis1=2 + i, axis2=3 + i)
            expected = np.moveaxis(expected, -1, 2 + i)
        assert_close(diag, expected, tol("exact", "float64"), name + " (diagonal_spatial)")


def test_conv_general_dilated_ntk_and_groups_equal_autodiff():
    """NTK of one (grouped, dilated) layer = its empirical NTK from autodiff, exactly."""
    with x64():
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 4), jnp.float64)
        for groups, par in ((1, "ntk"), (2, "ntk"), (2, "standard")):
            layer = conv_general_dilated(6, (3,), (2,), ((2, 1),), (1,), (2,), groups,
                                         W_std=1.4, b_std=0.3, parameterization=par)
            _, params = layer.init_fn(jax.random.PRNGKey(1), x.shape)
            assert params[0].shape == (3, 4 // groups, 6)
            ent = empirical_ntk_fn(layer.apply_fn, trace_axes=())(x, None, params)
            ent = np.einsum("ab...cc->ab...", np.asarray(ent)) / 6
            assert_close(layer.kernel_fn(x, get="ntk"), ent, tol("exact", "float64"),
                         f"groups={groups}, {par}")


def test_spatial_zero_padding_moves_the_kernel():
    with x64():
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 3), jnp.float64)
        k_in = stax.Identity()[2](x, get="nngp")
        layer = spatial_zero_padding(((2, -1, 1),))  # 2 zeros before, 1 between, crop 1 after
        k = layer.kernel_fn(x, get="nngp")
        expected = np.zeros((2, 2, 8, 8))
        rows = [2, 4, 6]  # positions 0, 1, 2 of the input (3 was cropped)
        for i, r in enumerate(rows):
            for j, c in enumerate(rows):
                expected[:, :, r, c] = np.asarray(k_in)[:, :, i, j]
        assert_close(k, expected, tol("exact", "float64"), "padded kernel")
        assert layer.apply_fn((), x).shape == (2, 8, 3)


def test_spatial_gather_equals_the_gathered_inputs_kernel():
    with x64():
        x = np.random.default_rng(1).normal(size=(2, 5, 4, 3))
        idx = [np.array([4, 0, 1, -1, 2]), np.array([3, -1, 0])]
        k = spatial_gather(idx).kernel_fn(jnp.asarray(x), get="nngp")
        g = np.take(x, np.maximum(idx[0], 0), 1) * (idx[0] >= 0)[:, None, None]
        g = np.take(g, np.maximum(idx[1], 0), 2) * (idx[1] >= 0)[:, None]
        expected = np.einsum("ahwc,bgvc->abhgwv", g, g) / 3
        assert_close(k, expected, tol("exact", "float64"), "gathered kernel")
        assert_close(spatial_gather(idx).apply_fn((), jnp.asarray(x)), g,
                     tol("exact", "float64"), "gathered inputs")


def test_circular_padding_and_spatial_slices_equal_stax():
    """Flax's 'CIRCULAR' padding (a wrap-around jnp.pad: slices concatenated along the spatial
    axes) and slicing of positions, against stax's CIRCULAR convolution (checked against
    neural-tangents elsewhere) and a gather."""
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(8, (3, 3))(x))
            h = nn.relu(nn.Conv(8, (3, 2), padding="CIRCULAR")(h))
            return nn.Dense(1)(h[:, 1:, ::2].mean(axis=(1, 2)))

    def std(layer, *args, **kwargs):
        return layer(*args, parameterization="standard", W_std=1.0, b_std=0.0, **kwargs)

    _, _, expected = stax.serial(
        std(stax.Conv, 8, (3, 3), padding="SAME"), stax.Relu(),
        std(stax.Conv, 8, (3, 2), padding="CIRCULAR"), stax.Relu(),
        spatial_gather([np.arange(1, 5), np.arange(0, 4, 2)]), stax.GlobalAvgPool(),
        std(stax.Dense, 1))
    with x64():
        x1 = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4, 2), jnp.float64)
        x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 4, 2), jnp.float64)
        _, _, kernel_fn = from_flax(Net(), x1)
        for b in (x2, None):
            k, e = kernel_fn(x1, b, get=("nngp", "ntk")), expected(x1, b, get=("nngp", "ntk"))
            assert_close(k.nngp, e.nngp, tol("nt", "float64"), "nngp")
            assert_close(k.ntk, e.ntk, tol("nt", "float64"), "ntk")


# ---------------------------------------------------------------------------------------------
# from_flax: one layer against the tap matrices (NNGP) and autodiff (NTK)

F64 = {"param_dtype": jnp.float64}
LAYERS = {
    "dilated, explicit pads": (lambda: nn.Conv(3, (3, 2), kernel_dilation=(2, 1),
                                               padding=((1, 2), (0, 1)), **F64), 2),
    "int padding, strides": (lambda: nn.Conv(3, (3, 3), padding=1, strides=2, **F64), 2),
    "causal": (lambda: nn.Conv(3, (3,), padding="CAUSAL", kernel_dilation=2, **F64), 1),
    "transpose SAME": (lambda: nn.ConvTranspose(3, (3, 3), strides=(2, 2), padding="SAME",
                                                **F64), 2),
    "transpose VALID dilated": (lambda: nn.ConvTranspose(3, (3, 2), strides=(2, 1),
                                                         padding="VALID", kernel_dilation=(1, 2),
                                                         **F64), 2),
    "transpose_kernel": (lambda: nn.ConvTranspose(3, (3, 3), strides=(2, 2), padding="SAME",
                                                  transpose_kernel=True, **F64), 2),
}


def _one_layer_reference(module, x):
    """(NNGP, NTK) of a one-layer Flax conv: the NNGP from its own finite output's
    expectation over weights (the tap matrices of the traced lax call, recovered by linearity:
    a one-hot filter per tap), the NTK from autodiff."""
    variables = module.init(jax.random.PRNGKey(1), x)

    def apply(p, xx):
        return module.apply({"params": p}, xx)

    ent = empirical_ntk_fn(apply, trace_axes=())(x, None, variables["params"])
    ntk = np.einsum("ab...cc->ab...", np.asarray(ent)) / ent.shape[-1]
    kernel = variables["params"]["kernel"]
    n_sp = x.ndim - 2
    taps = list(itertools.product(*[range(f) for f in kernel.shape[:n_sp]]))
    c_in = x.shape[-1]
    # output channel 0 under a filter that is e_t on input channel c: sum over c and t of
    # outer products, weighted by the per-entry variance of the filter (lecun: 1 / fan_in)
    var = 1.0 / (c_in * len(taps))
    if kernel.shape[n_sp] != c_in:  # transpose_kernel: (..., out, in) filters
        var = 1.0 / (kernel.shape[n_sp] * len(taps))
    outs = []
    for t in taps:
        for c in range(c_in):
            w = np.zeros(kernel.shape)
            if kernel.shape[n_sp] == c_in:
                w[t + (c, 0)] = 1.0
            else:
                w[t + (0, c)] = 1.0
            p = {"kernel": jnp.asarray(w), "bias": jnp.zeros_like(variables["params"]["bias"])}
            outs.append(np.asarray(apply(p, x))[..., 0].reshape(x.shape[0], -1))
    nngp = var * sum(np.einsum("ap,bq->abpq", o, o) for o in outs)
    out_sp = np.asarray(apply(variables["params"], x)).shape[1:-1]
    nngp = nngp.reshape((x.shape[0],) * 2 + tuple(out_sp) * 2)
    d = len(out_sp)
    nngp = nngp.transpose((0, 1) + tuple(a for i in range(d) for a in (2 + i, 2 + d + i)))
    return nngp, ntk


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_from_flax_conv_layer_equals_references(name):
    make, n_sp = LAYERS[name]
    with x64():
        shape = (2, 6, 5, 2) if n_sp == 2 else (2, 6, 2)
        x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float64)
        module = make()
        _, _, kernel_fn = from_flax(module, x)
        k = kernel_fn(x, None, get=("nngp", "ntk"))
        nngp, ntk = _one_layer_reference(module, x)
        assert_close(k.nngp, nngp, tol("exact", "float64"), name + " nngp")
        assert_close(k.ntk, ntk, tol("exact", "float64"), name + " ntk")


# ---------------------------------------------------------------------------------------------
# deep models: grouped hidden convolutions against stax, and the Flax model's own Monte Carlo

class GeometryNet(nn.Module):
    width: int = 16
    out: int = 1

    @nn.compact
    def __call__(self, x):
        he = jax.nn.initializers.he_normal()
        h = nn.relu(nn.Conv(self.width, (3, 3), kernel_dilation=2, padding=2, kernel_init=he)(x))
        h = nn.relu(nn.Conv(self.width, (3, 3), feature_group_count=2, padding="SAME",
                            kernel_init=he)(h))
        h = nn.relu(nn.ConvTranspose(self.width, (3, 3), strides=(2, 2), kernel_init=he)(h))
        return nn.Dense(self.out)(h.mean(axis=(1, 2)))


def test_grouped_hidden_convolution_equals_stax_ntk_parameterization():
    """A grouped convolution of a hidden layer has the kernel of an ordinary one whose fan-in
    is the group's (C / G * |F|): equal to the stax network in the NTK parameterization."""
    class Grouped(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(8, (3,), padding="SAME")(x))
            h = nn.relu(nn.Conv(8, (2,), feature_group_count=4)(h))
            return nn.Dense(1)(h.mean(axis=1))

    with x64():
        x1 = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 2), jnp.float64)
        x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 2), jnp.float64)
        _, _, kernel_fn = from_flax(Grouped(), x1, parameterization="ntk")
        # lecun normal on the grouped filter (2, 2, 8): variance 1 / (2 * 2); W_std**2 = var *
        # fan_in = 1 with the group's fan-in
        _, _, expected = stax.serial(
            stax.Conv(8, (3,), padding="SAME", b_std=0.0), stax.Relu(),
            stax.Conv(8, (2,), padding="SAME", b_std=0.0), stax.Relu(), stax.GlobalAvgPool(),
            stax.Dense(1, b_std=0.0))
        for b in (x2, None):
            k, e = kernel_fn(x1, b, get=("nngp", "ntk")), expected(x1, b, get=("nngp", "ntk"))
            assert_close(k.nngp, e.nngp, tol("nt", "float64"), "nngp")
            assert_close(k.ntk, e.ntk, tol("nt", "float64"), "ntk")


def _mc_nngp(init_fn, apply_fn, x, n_samples, key):
    def one(k):
        _, p = init_fn(k, x.shape)
        f = apply_fn(p, x)
        return f @ f.T / f.shape[-1]

    return np.asarray(jax.lax.map(jax.jit(one), jax.random.split(key, n_samples),
                                  batch_size=4).mean(0))


@pytest.mark.float32_stream
def test_geometry_net_monte_carlo_approaches_the_kernel():
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 5, 2))
    errors = {}
    for width in (32, 512):
        init_fn, apply_fn, kernel_fn = from_flax(GeometryNet(width=width, out=16), x)
        exact = kernel_fn(x, None, get="nngp")
        errors[width] = rel_err(_mc_nngp(init_fn, apply_fn, x, 64, jax.random.PRNGKey(0)),
                                exact)
    assert errors[512] < tol("mc"), errors
    assert errors[512] < errors[32], errors
    x2 = jax.random.normal(jax.random.PRNGKey(4), (2, 5, 5, 2))
    _, ntk = mc_kernels(init_fn, apply_fn, x, x2, jax.random.PRNGKey(1), 8)
    assert rel_err(ntk, kernel_fn(x, x2, get="ntk")) < tol("mc")  # measured 0.032


# ---------------------------------------------------------------------------------------------
# bad input


def test_convolutions_without_a_limit_raise_naming_the_reason():
    x = jnp.ones((2, 6, 4))

    class Depthwise(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(8, (3,))(x))
            return nn.Dense(1)(nn.Conv(8, (3,), feature_group_count=8)(h).mean(1))

    class GroupedInput(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Conv(8, (3,), feature_group_count=2)(x)).mean(1))

    class TwoActivations(nn.Module):
        @nn.compact
        def __call__(self, x):
            a, b = nn.Conv(8, (3,))(x), nn.Conv(8, (3,))(x)
            return nn.Dense(1)(nn.relu(jnp.concatenate([a, b], axis=1)).mean(1))

    class FeatureSlice(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Conv(8, (3,))(x))[..., :4].mean(1))

    with pytest.raises(UnsupportedOperation, match="depthwise"):
        from_flax(Depthwise(), x)
    with pytest.raises(UnsupportedOperation, match="model's input in 2 feature groups"):
        from_flax(GroupedInput(), x)
    with pytest.raises(UnsupportedOperation, match="different activations along a spatial"):
        from_flax(TwoActivations(), x)
    with pytest.raises(UnsupportedOperation, match="test_from_flax_conv_geometry.py.*feature"):
        from_flax(FeatureSlice(), x)
    with pytest.raises(ValueError, match="padding"):
        conv_general_dilated(4, (3,), padding="FULL")
    with pytest.raises(ValueError, match="feature_group_count"):
        conv_general_dilated(5, (3,), feature_group_count=2)
    with pytest.raises(ValueError, match="rhs_dilation"):
        conv_general_dilated(4, (3,), rhs_dilation=(0,))
    with pytest.raises(ValueError, match="shorter than the filter"):
        conv_general_dilated(4, (3,), rhs_dilation=(4,)).kernel_fn(jnp.ones((1, 6, 2)))
    with pytest.raises(ValueError, match="do not split"):
        conv_general_dilated(4, (3,), feature_group_count=2).kernel_fn(jnp.ones((1, 6, 3)))
