"""Residual and transformer builders: finite networks run and match their declared shapes, the
looped (repeat) and unrolled forms agree, the scaled residual kernel stays bounded with depth,
and bad arguments raise. (Kernel values: tests/test_nt_parity_architectures.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, tol

from infwidth import architectures


@pytest.mark.parametrize("builder,kwargs,shape", [
    ("dense_resnet", {"depth": 3, "width": 8}, (2, 5)),
    ("wide_resnet", {"block_size": 1, "k": 1}, (2, 4, 4, 3)),
    ("transformer", {"depth": 2, "n_chan": 8, "n_heads": 2}, (2, 3, 5)),
])
def test_builders_run(builder, kwargs, shape):
    init_fn, apply_fn, kernel_fn = getattr(architectures, builder)(**kwargs)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    out = {}

    def init(key):
        out["shape"], p = init_fn(key, x.shape)
        return p

    if builder == "wide_resnet":  # its kernel values are in the parity test; check shapes only
        params = jax.eval_shape(init, jax.random.PRNGKey(1))
        assert jax.eval_shape(apply_fn, params, x).shape == out["shape"] == (2, 10)
        return
    params = jax.jit(init)(jax.random.PRNGKey(1))  # one compilation instead of many eager ops
    out_shape = out["shape"]
    y = jax.jit(apply_fn)(params, x)  # one compilation instead of many eager ones
    assert y.shape == out_shape and bool(jnp.all(jnp.isfinite(y)))
    k = jax.jit(lambda a: kernel_fn(a, get="ntk"))(x)
    assert k.shape == (2, 2) and bool(jnp.all(jnp.isfinite(k)))


def test_repeat_and_unrolled_builders_agree():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    for builder, kw in (("dense_resnet", {"depth": 5}),
                        ("transformer", {"depth": 2, "n_chan": 8, "n_heads": 2})):
        xs = x if builder == "dense_resnet" else x[:, :, None] * jnp.ones(2)
        k1 = jax.jit(getattr(architectures, builder)(use_repeat=True, **kw)[2],
                     static_argnames="get")(xs, get="ntk")
        k2 = jax.jit(getattr(architectures, builder)(use_repeat=False, **kw)[2],
                     static_argnames="get")(xs, get="ntk")
        assert_close(k1, k2, tol("exact"), builder)


def test_sqrt_depth_scaling_keeps_the_kernel_bounded():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4))
    diag = {}
    for scale in (None, "1/sqrt(depth)"):
        diag[scale] = [float(architectures.dense_resnet(depth=d, branch_scale=scale)[2](
            x, get="nngp")[0, 0]) for d in (4, 64)]
    assert diag[None][1] > 5 * diag[None][0]  # grows with depth
    assert diag["1/sqrt(depth)"][1] < 2 * diag["1/sqrt(depth)"][0]  # has a depth limit
    assert np.all(np.isfinite(diag["1/sqrt(depth)"]))


def test_builder_errors():
    with pytest.raises(ValueError, match=r"dense_resnet\(branch_scale='sqrt'\)"):
        architectures.dense_resnet(branch_scale="sqrt")
    with pytest.raises(ValueError, match=r"dense_resnet\(depth=0\)"):
        architectures.dense_resnet(depth=0)
    with pytest.raises(ValueError, match=r"wide_resnet\(activation='tanh'\)"):
        architectures.wide_resnet(activation="tanh")
