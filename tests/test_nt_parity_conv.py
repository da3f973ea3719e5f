"""Convolutional kernels agree with neural-tangents 0.6.5 in float64 (relative error < 1e-6).

Reference values: tests/reference/conv.npz, written by tests/reference/make_conv.py under
neural-tangents from the specs of tests/reference/catalogue_conv.py (1-D and 2-D convolutions,
every padding, strides, non-square images, transposed and locally connected convolutions,
pooling, global pooling, Flatten, both parameterizations, diagonal_spatial True and False).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import architectures, stax

sys.path.insert(0, REFERENCE_DIR)
from _catalogue import build  # noqa: E402
from catalogue_conv import CATALOGUE, WRN_ARGS  # noqa: E402

REF = load_reference("conv")


def _position_diagonal(a):
    """(N1, N2, h, h', w, w') -> (N1, N2, h, w), and the largest entry off the diagonal."""
    n = (a.ndim - 2) // 2
    idx = [np.arange(s) for s in a.shape[2::2]]
    grids = np.meshgrid(*idx, indexing="ij")
    diag = a[(slice(None), slice(None)) + tuple(g for g in grids for _ in (0, 1))]
    mask = np.ones(a.shape[2:], bool)
    mask[tuple(g for g in grids for _ in (0, 1))] = False
    return diag, np.abs(a[..., mask] if n else a).max() if mask.any() else 0.0


@pytest.mark.parametrize("name", sorted(n for n in CATALOGUE if not n.endswith("wide-resnet")))
def test_conv_matches_neural_tangents(name):
    group, spec, kw = CATALOGUE[name]
    with x64():
        kernel_fn = build(stax, spec)[2]
        x1, x2 = jnp.asarray(REF[f"{group}/x1"]), jnp.asarray(REF[f"{group}/x2"])
        # one compiled program for both calls (eager evaluation compiles every small op)
        k12, k11 = jax.jit(lambda a, b: (kernel_fn(a, b, get=("nngp", "ntk"), **kw),
                                         kernel_fn(a, None, get=("nngp", "ntk"), **kw)))(x1, x2)
        assert k12.nngp.dtype == jnp.float64
        for tag, k in (("12", k12), ("11", k11)):
            for what in ("nngp", "ntk"):
                ref = REF[f"{name}/{what}{tag}"]
                got = np.asarray(getattr(k, what))
                if "local-raw" in name:
                    # neural-tangents returns only equal positions when the network ends in
                    # ConvLocal; the full kernel is zero elsewhere.
                    got, off = _position_diagonal(got)
                    assert off == 0.0
                assert got.shape == ref.shape, (what + tag, got.shape, ref.shape)
                assert_close(got, ref, tol("nt", "float64"), f"{what}{tag}")


@pytest.mark.parametrize("param", sorted(WRN_ARGS))
def test_wide_resnet_builder_matches_neural_tangents(param):
    """infwidth.architectures.wide_resnet against neural-tangents' README Wide-ResNet (built
    there from FanOut / parallel / FanInSum), for 'ntk' (two blocks per group, so identity
    shortcuts too) and 'standard' (whose NTK depends on the widths, 16 k, 32 k, 64 k)."""
    with x64():
        kernel_fn = architectures.wide_resnet(parameterization=param, **WRN_ARGS[param])[2]
        x1, x2 = jnp.asarray(REF["wrn/x1"]), jnp.asarray(REF["wrn/x2"])
        k12 = jax.jit(lambda a, b: kernel_fn(a, b, get=("nngp", "ntk")))(x1, x2)
        for what in ("nngp", "ntk"):
            assert_close(getattr(k12, what), REF[f"{param}-wide-resnet/{what}12"],
                         tol("nt", "float64"), what)
