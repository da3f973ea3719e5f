"""Exact checks of the core kernels in float64, derived independently of the library's code:
the arc-cosine kernel (numpy arccos form), the erf kernel (numpy arcsin form), linear networks
(the NTK as an explicit sum over layers), plus symmetry, positive semi-definiteness, jit,
x2=None and Kernel pass-through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, tol, x64

from infwidth import Kernel, stax


def _data(n1=5, n2=3, d=7, seed=0):
    rng = np.random.RandomState(seed)
    x1 = rng.randn(n1, d)
    x2 = np.concatenate([x1[:1], -2.0 * x1[1:2], rng.randn(n2 - 2, d)])  # identical, collinear
    return x1, x2


def _numpy_relu_family(a, b):
    """E[phi(u)phi(v)] and E[phi'(u)phi'(v)] for phi = a min(x,0) + b max(x,0), via arccos."""

    def maps(c12, v1, v2):
        norm = np.sqrt(v1 * v2)
        theta = np.arccos(np.clip(c12 / norm, -1, 1))
        # phi = b relu(x) - a relu(-x); relu arc-cosine kernel J1 (Cho & Saul 2009)
        j1 = lambda t: (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        j0 = lambda t: (np.pi - t) / (2 * np.pi)
        k = norm * ((a**2 + b**2) * j1(theta) - 2 * a * b * j1(np.pi - theta))
        dk = (a**2 + b**2) * j0(theta) + 2 * a * b * j0(np.pi - theta)
        return k, dk

    return maps


def _numpy_erf(a, b, c):
    def maps(c12, v1, v2):
        d = (1 + 2 * b**2 * v1) * (1 + 2 * b**2 * v2)
        k = a**2 * 2 / np.pi * np.arcsin(2 * b**2 * c12 / np.sqrt(d)) + c**2
        dk = a**2 * 4 * b**2 / np.pi / np.sqrt(d - 4 * b**4 * c12**2)
        return k, dk

    return maps


def _numpy_mlp(x1, x2, depth, maps, W_std, b_std):
    """NTK-parameterized MLP kernels by the standard recursion, in numpy."""
    b2 = 0.0 if b_std is None else b_std**2
    k12 = x1 @ x2.T / x1.shape[1]
    v1, v2 = (x1**2).mean(1)[:, None], (x2**2).mean(1)[None, :]
    k12, v1, v2 = (W_std**2 * k + b2 for k in (k12, v1, v2))
    t12 = k12.copy()
    for _ in range(depth):
        new_k12, dk = maps(k12, v1, v2)
        new_v1, new_v2 = maps(v1, v1, v1)[0], maps(v2, v2, v2)[0]
        k12, v1, v2 = (W_std**2 * k + b2 for k in (new_k12, new_v1, new_v2))
        t12 = k12 + W_std**2 * dk * t12
    return k12, t12


CASES = {
    "relu": (stax.Relu, _numpy_relu_family(0.0, 1.0)),
    "leaky": (lambda: stax.LeakyRelu(0.15), _numpy_relu_family(0.15, 1.0)),
    "abrelu": (lambda: stax.ABRelu(0.7, -1.3), _numpy_relu_family(0.7, -1.3)),
    "abs": (stax.Abs, _numpy_relu_family(-1.0, 1.0)),
    "erf": (lambda: stax.Erf(0.8, 1.6, -0.3), _numpy_erf(0.8, 1.6, -0.3)),
}


@pytest.mark.parametrize("act", sorted(CASES))
@pytest.mark.parametrize("depth,W_std,b_std", [(1, 1.0, None), (3, 1.6, 0.2)])
def test_closed_forms_float64(act, depth, W_std, b_std):
    layer, maps = CASES[act]
    x1, x2 = _data()
    with x64():
        net = [stax.Dense(64, W_std, b_std)]
        for _ in range(depth):
            net += [layer(), stax.Dense(64, W_std, b_std)]
        k = stax.serial(*net).kernel_fn(jnp.asarray(x1), jnp.asarray(x2))
        nngp, ntk = _numpy_mlp(x1, x2, depth, maps, W_std, b_std)
        assert_close(k.nngp, nngp, 1e-7, "nngp")  # arccos near 1 limits numpy to ~1e-8
        assert_close(k.ntk, ntk, 1e-7, "ntk")


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_linear_network_ntk_is_a_sum_over_layers(parameterization):
    """f = z_L with z_l = affine(z_{l-1}): each layer contributes (its weights' and bias'
    gradient inner products) times the product of the later layers' W_std**2."""
    x1, x2 = _data()
    widths, W, B = [7, 11, 13, 2], [1.3, 0.7, 1.9], [0.4, None, 0.8]
    with x64():
        layers = [stax.Dense(w, ws, bs, parameterization=parameterization)
                  for w, ws, bs in zip(widths[1:], W, B)]
        k = stax.serial(*layers).kernel_fn(jnp.asarray(x1), jnp.asarray(x2))
    ks = [x1 @ x2.T / x1.shape[1]]  # covariance of the input of each layer
    for ws, bs in zip(W, B):
        ks.append(ws**2 * ks[-1] + (bs or 0.0) ** 2)
    ntk = 0.0
    for l, bs in enumerate(B):
        later = np.prod([w**2 for w in W[l + 1:]])
        if parameterization == "ntk":
            own = ks[l + 1]  # W_std**2 K_in + b_std**2
        else:
            own = widths[l] * ks[l] + (0.0 if bs is None else 1.0)
        ntk = ntk + own * later
    assert_close(k.nngp, ks[-1], 1e-12, "nngp")
    assert_close(k.ntk, ntk, 1e-12, "ntk")


def _net():
    return stax.serial(stax.Dense(32, 1.4, 0.1), stax.Relu(), stax.Dense(32, 1.2, 0.3),
                       stax.Erf(), stax.Dense(1, 0.9, 0.05))


def test_symmetric_psd_and_x2_none_equals_x1():
    x1, _ = _data(n1=8)
    with x64():
        kernel_fn = _net().kernel_fn
        k_none = kernel_fn(jnp.asarray(x1))
        k_same = kernel_fn(jnp.asarray(x1), jnp.asarray(x1.copy()))
    for name in ("nngp", "ntk"):
        a = np.asarray(getattr(k_none, name))
        assert_close(a, a.T, 1e-14, name + " symmetric")
        assert np.linalg.eigvalsh(a).min() > -1e-10 * np.abs(a).max()
        # x2=None gives each input correlation exactly 1 with itself; a separate copy gives
        # 1 - O(1e-16), which arccos (infinite slope at 1) turns into O(1e-8) in ReLU's NTK map.
        assert_close(a, getattr(k_same, name), 1e-12 if name == "nngp" else 1e-8,
                     name + " x2=None vs x2=x1")
    assert k_none.cov2 is None and k_none.x1_is_x2
    assert_close(np.diag(np.asarray(k_none.nngp)), k_none.cov1, 1e-12, "cov1 is the diagonal")


def test_sign_flipped_inputs_are_not_taken_for_identical_ones():
    """Inputs differing by an even number of sign flips (the vertices of the cube {-1, 1}^4)
    are different inputs: kernel_fn(x1, x2) is the block of kernel_fn(x) and, for Dense alone,
    the inner products x1 . x2 / d exactly (a fingerprint that cancelled sign bits in pairs
    took (1, 1, 1, 1) and (-1, -1, 1, 1) for the same input)."""
    x = 1.0 - 2.0 * ((np.arange(16)[:, None] >> np.arange(4)) & 1)
    with x64():
        dense = stax.Dense(1).kernel_fn(x[:5], x[3:], "nngp")
        np.testing.assert_allclose(np.asarray(dense), x[:5] @ x[3:].T / 4, atol=1e-15)
        kernel_fn = stax.serial(stax.Dense(1, b_std=0.1), stax.Relu(), stax.Dense(1)).kernel_fn
        full = kernel_fn(x, None, "ntk")
        np.testing.assert_allclose(np.asarray(kernel_fn(x[:5], x[3:], "ntk")),
                                   np.asarray(full)[:5, 3:], rtol=1e-12, atol=1e-12)


def test_jit_equals_eager_and_kernel_passes_back():
    x1, x2 = _data()
    x1, x2 = jnp.asarray(x1), jnp.asarray(x2)
    first = stax.serial(stax.Dense(8, 1.5, 0.2), stax.Relu())
    second = stax.serial(stax.Dense(8, 0.8), stax.Erf(), stax.Dense(1))
    whole = stax.serial(first, second).kernel_fn
    eager = whole(x1, x2, get=("nngp", "ntk"))
    jitted = jax.jit(whole, static_argnames="get")(x1, x2, get=("nngp", "ntk"))
    resumed = second.kernel_fn(first.kernel_fn(x1, x2))
    assert isinstance(resumed, Kernel)
    for name in ("nngp", "ntk"):
        assert_close(getattr(jitted, name), getattr(eager, name), tol("exact"), name + " jit")
        assert_close(getattr(resumed, name), getattr(eager, name), tol("exact"), name + " resumed")


def test_get_semantics():
    x1, x2 = _data()
    kernel_fn = _net().kernel_fn
    k = kernel_fn(x1, x2)
    assert isinstance(k, Kernel)
    assert_close(kernel_fn(x1, x2, get="ntk"), k.ntk, tol("exact"), "get='ntk'")
    pair = kernel_fn(x1, x2, get=("ntk", "nngp"))
    assert pair._fields == ("ntk", "nngp")
    assert_close(pair[1], k.nngp, tol("exact"), "tuple order")
    assert kernel_fn(x1, x2, get="nngp").shape == (5, 3)
    k_nngp_only = stax.serial(stax.Dense(4), stax.Relu()).kernel_fn(x1, get=("nngp", "cov1"))
    assert k_nngp_only.cov1.shape == (5,)


def test_dtypes():
    x1, x2 = _data()
    k = _net().kernel_fn(jnp.asarray(x1, jnp.float32), jnp.asarray(x2, jnp.float32))
    assert k.nngp.dtype == jnp.float32 and k.ntk.dtype == jnp.float32
    with x64():
        k = _net().kernel_fn(jnp.asarray(x1), jnp.asarray(x2))
        assert k.nngp.dtype == jnp.float64 and k.ntk.dtype == jnp.float64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", sorted(CASES))
def test_finite_values_and_gradients_at_degenerate_inputs(act, dtype):
    """Identical, collinear and zero inputs: values and gradients w.r.t. the inputs and a
    hyperparameter (W_std) are finite."""
    layer = CASES[act][0]
    x = np.array([[1.0, 2.0, -1.0], [1.0, 2.0, -1.0], [-2.0, -4.0, 2.0], [0.0, 0.0, 0.0]])

    def total(x, w_std):
        net = stax.serial(stax.Dense(4, w_std, 0.0), layer(), stax.Dense(4, w_std),
                          layer(), stax.Dense(1, w_std))
        k = net.kernel_fn(x, None, get=("nngp", "ntk"))
        return jnp.sum(k.nngp) + jnp.sum(k.ntk)

    ctx = x64() if dtype == "float64" else _nullcontext()
    with ctx:
        xj = jnp.asarray(x, dtype)
        value = total(xj, 1.3)
        gx, gw = jax.grad(total, argnums=(0, 1))(xj, jnp.asarray(1.3, dtype))
        assert np.isfinite(value) and np.all(np.isfinite(gx)) and np.isfinite(gw)
        # and the gradient is right: compare with a central finite difference in W_std (h is
        # large because angles near 0 or pi carry ~1e-8 rounding noise, as any arccos does)
        if dtype == "float64":
            h = 1e-3
            fd = (total(xj, 1.3 + h) - total(xj, 1.3 - h)) / (2 * h)
            assert abs(float(gw) - float(fd)) < 1e-4 * max(1.0, abs(float(fd)))


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
