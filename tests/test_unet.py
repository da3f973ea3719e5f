"""The U-Net builder (infwidth.architectures.unet, Ronneberger et al. 2015, arXiv:1505.04597).

* the finite network runs on 32x32x3 images and its output shapes match init_fn's;
* its kernel runs at 32x32 (per-pixel variances with diagonal_spatial=True, which equal the
  position diagonal of the full pixel-pair kernel);
* the kernel matches neural-tangents 0.6.5 on the same network written layer by layer
  (float64, tests/reference/unet.npz from tests/reference/make_unet.py);
* the kernel matches Monte Carlo estimates of the finite U-Net (infwidth.empirical), with an
  NTK error that shrinks with the width;
* x2=None equals x2 a copy of x1 under jit, and bad arguments raise early.
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, rel_err, tol, x64

from infwidth.architectures import unet
from infwidth.empirical import monte_carlo_kernel_fn

sys.path.insert(0, REFERENCE_DIR)
from catalogue_unet import CASES  # noqa: E402

GET = ("nngp", "ntk")


def _images(n, px, seed=0):
    """Images in JAX's default float (float64 in the JAX_ENABLE_X64=1 leg)."""
    return jnp.asarray(np.random.RandomState(seed).randn(n, px, px, 3), jnp.result_type(float))


def _random_params(init_fn, shape, seed=0):
    """Parameters of the right shapes, drawn with numpy (init_fn's own draws compile for
    seconds; the shapes are what this check needs)."""
    rng = np.random.RandomState(seed)
    found = {}

    def init(key):
        found["out_shape"], params = init_fn(key, shape)
        return params

    params = jax.eval_shape(init, jax.random.PRNGKey(0))
    return found["out_shape"], jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.randn(*s.shape).astype(s.dtype)), params)


@pytest.mark.parametrize("readout,out", [("pixel", (2, 32, 32, 2)), ("gap", (2, 2))])
def test_finite_unet_runs_on_32x32_images(readout, out):
    init_fn, apply_fn, _ = unet(depth=2, width=4, readout=readout, out_dim=2)
    x = _images(2, 32)
    out_shape, params = _random_params(init_fn, x.shape)
    assert out_shape == out
    n_4d = sum(np.ndim(p) == 4 for p in jax.tree_util.tree_leaves(params))  # (W, b) per conv
    # 2 levels x 2 blocks x n_conv=2, the bottleneck's 2, 2 ConvTranspose, the 1x1 readout
    assert n_4d == 2 * (2 * 2 * 2 + 2 + 2 + (readout == "pixel"))
    y = jax.jit(apply_fn)(params, x)
    assert y.shape == out and bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.std(y)) > 0


def test_kernel_at_32x32():
    """Per-pixel kernels (diagonal_spatial=True) at 32x32 are the position diagonal of the full
    pixel-pair kernel (a different computation: full covariances through every layer)."""
    _, _, kernel_fn = unet(depth=2, n_conv=1, downsample="conv", b_std=0.1)
    kernel_fn = jax.jit(kernel_fn, static_argnames=("get", "diagonal_spatial"))
    x = _images(2, 32)
    diag = kernel_fn(x[:1], x[1:], get=GET, diagonal_spatial=True)
    assert diag.nngp.shape == diag.ntk.shape == (1, 1, 32, 32)
    full = kernel_fn(x[:1], x[1:], get=GET)
    assert full.ntk.shape == (1, 1, 32, 32, 32, 32)
    i = jnp.arange(32)
    for f in GET:
        on_diagonal = getattr(full, f)[:, :, i[:, None], i[:, None], i, i]
        assert_close(getattr(diag, f), on_diagonal, tol("exact"), f)
    assert bool(jnp.all(diag.ntk > diag.nngp))  # the NTK adds the positive gradient terms


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_neural_tangents(name):
    kwargs, _, kernel_kwargs = CASES[name]
    ref = load_reference("unet")
    with x64():
        kernel_fn = unet(**kwargs)[2]
        x1, x2 = jnp.asarray(ref["x1"]), jnp.asarray(ref["x2"])
        k = jax.jit(lambda a, b: kernel_fn(a, b, get=GET, **kernel_kwargs))(x1, x2)
        for f in GET:
            assert getattr(k, f).shape == ref[f"{name}/{f}"].shape
            assert_close(getattr(k, f), ref[f"{name}/{f}"], tol("nt", "float64"), f)


def _monte_carlo(width, n_samples, out_dim, get, x):
    init_fn, apply_fn, _ = unet(depth=2, width=width, n_conv=1, channel_multiplier=1,
                                out_dim=out_dim)
    mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(1), n_samples,
                               standard_error=True)
    return mc(x, None, get)


@functools.cache
def _exact_4x4():
    """The analytic kernels of the Monte Carlo tests' U-Net, in float64 (compiled once)."""
    with x64():
        kernel_fn = jax.jit(unet(depth=2, n_conv=1)[2], static_argnames="get")
        k = kernel_fn(jnp.asarray(_images(2, 4), jnp.float64), get=GET)
        return {f: np.asarray(getattr(k, f)) for f in GET}


@pytest.mark.float32_stream
def test_monte_carlo_ntk_error_shrinks_with_width():
    x, exact = _images(2, 4), _exact_4x4()["ntk"]
    errs, ses = [], []
    for width, n_samples in ((8, 8), (128, 32)):  # the draws cost little next to compiling
        est = _monte_carlo(width, n_samples, 1, "ntk", x)
        errs.append(rel_err(est.mean, exact))
        ses.append(float(np.linalg.norm(est.stderr) / np.linalg.norm(exact)))
    # per-draw fluctuations ~ 1 / sqrt(width): the standard error falls by ~ sqrt(16 * 4)
    assert errs[1] < 0.25 * errs[0], errs
    assert errs[1] < 0.05 and errs[1] < 3 * ses[1], (errs, ses)


@pytest.mark.float32_stream
def test_monte_carlo_nngp():
    """The NNGP estimate averages 64 output channels of 256 draws; its error is the sampling
    noise (the estimated standard error), well below 0.05."""
    x, exact = _images(2, 4), _exact_4x4()["nngp"]
    est = _monte_carlo(64, 256, 64, "nngp", x)
    err = rel_err(est.mean, exact)
    se = float(np.linalg.norm(est.stderr) / np.linalg.norm(exact))
    assert err < 0.05 and err < 3 * se, (err, se)


def test_x2_none_equals_copy_under_jit():
    """(Eager evaluation compiles every small operation separately and takes far longer; the
    doctest runs it.)"""
    _, _, kernel_fn = unet(depth=1, n_conv=1, b_std=0.2)
    x = _images(3, 4)
    jitted = jax.jit(kernel_fn, static_argnames="get")
    k_none, k_copy = jitted(x, None, get=GET), jitted(x, jnp.array(x), get=GET)
    for f in GET:
        np.testing.assert_array_equal(getattr(k_none, f), getattr(k_copy, f))
        k = getattr(k_none, f)  # symmetric under swapping the images and the pixels
        assert_close(k, jnp.transpose(k, (1, 0, 3, 2, 5, 4)), tol("exact"), f"{f} symmetric")


def test_errors():
    with pytest.raises(ValueError, match=r"unet\(depth=-1\)"):
        unet(depth=-1)
    with pytest.raises(ValueError, match=r"unet\(downsample='max'\)"):
        unet(downsample="max")
    with pytest.raises(ValueError, match=r"unet\(readout='flatten'\)"):
        unet(readout="flatten")
    with pytest.raises(ValueError, match=r"width"):
        unet(width=0)
    init_fn, _, kernel_fn = unet(depth=2)
    with pytest.raises(ValueError, match=r"multiples of 2\*\*depth = 4.*\(1, 6, 6, 3\)"):
        init_fn(jax.random.PRNGKey(0), (1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"unet\(depth=2\): x1"):
        kernel_fn(jnp.ones((1, 6, 6, 3)))
    with pytest.raises(ValueError, match=r"unet\(downsample='avgpool'\).*diagonal_spatial"):
        kernel_fn(jnp.ones((1, 4, 4, 3)), diagonal_spatial=True)  # pooling needs pixel pairs
    with pytest.raises(ValueError, match=r"unet\(readout='gap'\).*diagonal_spatial"):
        unet(downsample="conv", readout="gap")[2](jnp.ones((1, 4, 4, 3)), diagonal_spatial=True)
