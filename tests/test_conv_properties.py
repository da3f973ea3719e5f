"""Properties and errors of the convolutional kernels (issue 4).

* Translation invariance: with 'CIRCULAR' convolutions and global average pooling, shifting
  both images by the same amount leaves the kernel unchanged (the argument of seed text
  000_0081e9d5b13d6947.txt); shifting only one, or using 'SAME' padding, changes it.
* Flatten and diagonal_spatial: the diagonal_spatial=True kernel is exactly the equal-position
  part of the full kernel, and a Flatten network's kernel is its mean over positions.
* A float64 closed form: one linear circular convolution and global average pooling give
  ``W_std**2 <mean_p x1_p, mean_p x2_p> / C + b_std**2`` for the NNGP.
* Symmetry and positive semi-definiteness of a pooled CNN kernel.
* Bad input raises errors that name the layer and the fix.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, rel_err, tol, x64

from infwidth import architectures, stax


def _images(n=3, shape=(6, 5, 2), seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (n,) + shape)


def _circular_gap():
    return stax.serial(
        stax.Conv(8, (3, 2), padding="CIRCULAR", W_std=1.4, b_std=0.1), stax.Relu(),
        stax.Conv(8, (2, 3), padding="CIRCULAR", W_std=1.3), stax.Erf(),
        stax.GlobalAvgPool(), stax.Dense(1))


def _jit(kernel_fn):
    return jax.jit(kernel_fn, static_argnames=("get", "diagonal_spatial"))


def test_circular_gap_kernel_is_translation_invariant():
    with x64():
        kernel_fn = _jit(_circular_gap()[2])
        x1, x2 = _images(3, seed=1).astype(jnp.float64), _images(2, seed=2).astype(jnp.float64)
        k = kernel_fn(x1, x2, get=("nngp", "ntk"))
        for shift in ((1, 0), (0, 2), (4, 3)):
            s1 = jnp.roll(x1, shift, axis=(1, 2))
            s2 = jnp.roll(x2, shift, axis=(1, 2))
            ks = kernel_fn(s1, s2, get=("nngp", "ntk"))
            assert_close(ks.nngp, k.nngp, tol("exact", "float64"), f"nngp {shift}")
            assert_close(ks.ntk, k.ntk, tol("exact", "float64"), f"ntk {shift}")
        # with stride-1 circular convolutions every layer's kernel is equivariant,
        # K(x1, T x2)[p, p'] = K(x1, x2)[p, p' - s], and the average over all pairs (p, p')
        # does not see even a shift of one image alone
        k_one = kernel_fn(x1, jnp.roll(x2, (1, 2), axis=(1, 2)), get="nngp")
        assert_close(k_one, k.nngp, tol("exact", "float64"), "one image shifted")


def test_flatten_readout_sees_relative_shifts():
    """A Flatten readout keeps only equal positions: invariant to shifting both images, but
    not one of them (so the invariance checks above can fail)."""
    kernel_fn = _jit(stax.serial(stax.Conv(8, (3, 3), padding="CIRCULAR"), stax.Relu(),
                                 stax.Conv(8, (3, 3), padding="CIRCULAR"), stax.Flatten())[2])
    x1, x2 = _images(2, seed=1), _images(2, seed=2)
    k = kernel_fn(x1, x2, get="nngp")
    both = kernel_fn(jnp.roll(x1, (2, 1), axis=(1, 2)), jnp.roll(x2, (2, 1), axis=(1, 2)),
                     get="nngp")
    assert_close(both, k, tol("exact"), "both shifted")
    assert rel_err(kernel_fn(x1, jnp.roll(x2, (2, 1), axis=(1, 2)), get="nngp"), k) > 1e-2


def test_same_padding_breaks_translation_invariance():
    kernel_fn = _jit(stax.serial(stax.Conv(8, (3, 3), padding="SAME"), stax.Relu(),
                                 stax.GlobalAvgPool(), stax.Dense(1))[2])
    x1, x2 = _images(2, seed=1), _images(2, seed=2)
    k = kernel_fn(x1, x2, get="nngp")
    ks = kernel_fn(jnp.roll(x1, 2, axis=1), jnp.roll(x2, 2, axis=1), get="nngp")
    assert rel_err(ks, k) > 1e-3


def test_diagonal_spatial_is_the_equal_position_part_and_flatten_its_mean():
    layers = [stax.Conv(8, (3, 2), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(),
              stax.Conv(8, (2, 2), strides=(2, 1), W_std=1.2), stax.Abs(),
              stax.Conv(8, (2, 2), padding="CIRCULAR", W_std=1.1, b_std=0.1)]
    with x64():
        x1, x2 = _images(3).astype(jnp.float64), _images(2, seed=3).astype(jnp.float64)
        kernel_fn, flat = _jit(stax.serial(*layers)[2]), _jit(stax.serial(*layers,
                                                                            stax.Flatten())[2])
        full = kernel_fn(x1, x2, get=("nngp", "ntk"))
        diag = kernel_fn(x1, x2, get=("nngp", "ntk"), diagonal_spatial=True)
        flat_full = flat(x1, x2, get=("nngp", "ntk"))
        flat_diag = flat(x1, x2, get=("nngp", "ntk"), diagonal_spatial=True)
        for f in ("nngp", "ntk"):
            a, d = np.asarray(getattr(full, f)), np.asarray(getattr(diag, f))
            assert a.shape == (3, 2, 3, 3, 4, 4) and d.shape == (3, 2, 3, 4)
            assert_close(np.einsum("abhhww->abhw", a), d, tol("exact", "float64"), f)
            assert_close(getattr(flat_full, f), d.mean((2, 3)), tol("exact", "float64"), f)
            assert_close(getattr(flat_diag, f), d.mean((2, 3)), tol("exact", "float64"), f)
        # the positions differ, so the mean is not any single position's value
        assert rel_err(d[:, :, 0, 0], d.mean((2, 3))) > 1e-2


def test_linear_circular_conv_gap_closed_form():
    W, b = 1.7, 0.3
    with x64():
        x1, x2 = _images(3).astype(jnp.float64), _images(2, seed=4).astype(jnp.float64)
        kernel_fn = stax.serial(stax.Conv(4, (3, 2), padding="CIRCULAR", W_std=W, b_std=b),
                                stax.GlobalAvgPool())[2]
        nngp = _jit(kernel_fn)(x1, x2, get="nngp")
        m1, m2 = x1.mean((1, 2)), x2.mean((1, 2))
        expected = W**2 * m1 @ m2.T / x1.shape[-1] + b**2
        assert_close(nngp, expected, tol("exact", "float64"), "nngp")


def test_pooled_cnn_kernel_is_symmetric_and_psd():
    with x64():
        x = _images(6, shape=(6, 6, 3)).astype(jnp.float64)
        kernel_fn = stax.serial(stax.Conv(8, (3, 3), padding="SAME", b_std=0.1), stax.Relu(),
                                stax.AvgPool((2, 2), (2, 2)), stax.Conv(8, (2, 2)), stax.Relu(),
                                stax.GlobalAvgPool(), stax.Dense(1))[2]
        k = jax.jit(kernel_fn, static_argnames="get")(x, None, get=("nngp", "ntk"))
        for m in (np.asarray(k.nngp), np.asarray(k.ntk)):
            assert_close(m, m.T, tol("exact", "float64"), "symmetry")
            assert np.linalg.eigvalsh(m).min() > -1e-10 * np.abs(m).max()


def test_myrtle_and_cnn_builders():
    x = _images(2, shape=(32, 32, 3))
    for depth in (5, 7, 10):
        init_fn, apply_fn, kernel_fn = architectures.myrtle(depth=depth, width=4)
        shape, params = init_fn(jax.random.PRNGKey(0), x.shape)
        assert shape == apply_fn(params, x).shape == (2, 10)
        affine = [p for p in params if isinstance(p, tuple) and len(p) == 2]
        assert len(affine) == depth  # depth - 1 convolutions and the readout
    k = jax.jit(architectures.myrtle(depth=5)[2], static_argnames="get")(x, None, get="ntk")
    assert k.shape == (2, 2) and np.all(np.isfinite(k)) and k[0, 0] * k[1, 1] > k[0, 1]**2
    x = x[:, :8, :8]
    _, _, kernel_fn = architectures.cnn(depth=2, readout="flatten")
    assert kernel_fn(x, get="nngp").shape == (2, 2)
    with pytest.raises(ValueError, match=r"myrtle\(depth=6\)"):
        architectures.myrtle(depth=6)
    with pytest.raises(ValueError, match=r"cnn\(readout='max'\)"):
        architectures.cnn(readout="max")


# ----------------------------------------------------------------------------------------------
# errors

X4 = jnp.ones((2, 6, 5, 3))


@pytest.mark.parametrize("build, match", [
    (lambda: stax.Conv(4, (3, 3), padding="SAM"),
     r"Conv\(padding='SAM'\): padding must be one of 'VALID', 'SAME', 'CIRCULAR'"),
    (lambda: stax.AvgPool((2, 2), padding="full"), r"AvgPool\(padding='full'\)"),
    (lambda: stax.Conv(4, (3, 0)), r"Conv\(filter_shape=\(3, 0\)\)"),
    (lambda: stax.Conv(4, (3, 3), strides=(1,)), r"Conv\(strides=\(1,\)\)"),
    (lambda: stax.Conv(4, (3, 3), dimension_numbers=("NCHW", "OIHW", "NCW")),
     r"Conv\(dimension_numbers=.*each with 2 spatial letter"),
    (lambda: stax.ConvLocal(0, (3, 3)), r"ConvLocal\(out_chan=0\)"),
    (lambda: stax.Conv(4, (3, 3), parameterization="mean-field"), r"Conv\(parameterization="),
    (lambda: stax.AvgPool((2, 2), normalize_edges="yes"), r"AvgPool\(normalize_edges"),
    (lambda: stax.GlobalAvgPool(channel_axis=0), r"GlobalAvgPool\(batch_axis=0, channel_axis"),
])
def test_bad_arguments_raise_at_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("layers, x, kwargs, match", [
    # wrong rank: a 2-D filter on sequences
    ([stax.Conv(4, (3, 3))], jnp.ones((2, 7, 3)), {}, r"Conv: filter_shape has 2 entries"),
    ([stax.AvgPool((2,))], X4, {}, r"AvgPool: window_shape has 1 entries"),
    # filter larger than the image with VALID padding
    ([stax.Conv(4, (7, 2))], X4, {}, r"Conv\(filter_shape=\(7, 2\), padding='VALID'\).*"
                                      r"padding='SAME'"),
    ([stax.AvgPool((2, 6))], X4, {}, r"AvgPool\(window_shape=\(2, 6\), padding='VALID'\)"),
    # pooling asked for the diagonal only
    ([stax.Conv(4, (3, 3)), stax.Relu(), stax.AvgPool((2, 2))], X4,
     {"diagonal_spatial": True}, r"AvgPool: .*diagonal_spatial=False"),
    ([stax.Conv(4, (3, 3)), stax.Relu(), stax.GlobalAvgPool()], X4,
     {"diagonal_spatial": True}, r"GlobalAvgPool: .*diagonal_spatial"),
])
def test_bad_inputs_raise(layers, x, kwargs, match):
    init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    with pytest.raises(ValueError, match=match):  # raised while tracing, before any work
        _jit(kernel_fn)(x, **kwargs)
    if not kwargs:
        with pytest.raises(ValueError, match=match):
            init_fn(jax.random.PRNGKey(0), x.shape)


def test_dense_on_images_is_a_one_by_one_convolution():
    """As in neural-tangents, Dense acts at every position of an image: the same finite
    network and the same kernels as Conv with a 1x1 filter (a different code path)."""
    net = [stax.Conv(4, (3, 3), padding="SAME"), stax.Relu()]
    dense = stax.serial(*net, stax.Dense(3, W_std=1.5, b_std=0.2))
    conv = stax.serial(*net, stax.Conv(3, (1, 1), W_std=1.5, b_std=0.2))
    with x64():
        x = jnp.asarray(np.random.RandomState(0).randn(2, 5, 4, 3))
        for diagonal_spatial in (False, True):
            kd = dense.kernel_fn(x, None, ("nngp", "ntk"), diagonal_spatial=diagonal_spatial)
            kc = conv.kernel_fn(x, None, ("nngp", "ntk"), diagonal_spatial=diagonal_spatial)
            assert_close(kd.nngp, kc.nngp, tol("exact", "float64"), "nngp")
            assert_close(kd.ntk, kc.ntk, tol("exact", "float64"), "ntk")
        _, pd = dense.init_fn(jax.random.PRNGKey(0), x.shape)
        _, pc = conv.init_fn(jax.random.PRNGKey(0), x.shape)
        w, b = pd[-1]
        pc[-1] = (w.reshape(1, 1, *w.shape), b.reshape(1, 1, 1, -1))
        assert_close(dense.apply_fn(pd, x), conv.apply_fn(pc, x), tol("exact", "float64"), "f")
