"""`stax.BatchNorm`: closed forms, brute-force Monte Carlo of the Gaussian formula (numpy,
float64) and Monte Carlo of the finite network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infwidth import batch, stax
from infwidth.empirical import monte_carlo_kernel_fn
from infwidth.stax import _batch_norm_quad as quad


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _centring(m):
    return np.eye(m) - 1 / m


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def test_isotropic_closed_forms():
    # h ~ N(0, sigma2 I): z is isotropic in r = M - 1 dims, E[zz^T/|z|^2] = I/r and
    # E[(I - zz^T/|z|^2)/|z|^2] = (1 - 1/r) / (sigma2 (r - 2)) I
    m, sigma2 = 7, 1.7
    r = m - 1
    c, theta = sigma2 * np.eye(m), np.eye(m)
    nngp_exact = m / r * _centring(m)
    ntk_exact = m * (1 - 1 / r) / (sigma2 * (r - 2)) * _centring(m)
    nngp, ntk = quad.one_batch(jnp.asarray(c), jnp.asarray(theta), 0.0)
    np.testing.assert_allclose(nngp, nngp_exact, atol=1e-11)
    np.testing.assert_allclose(ntk, ntk_exact, atol=1e-11)
    # the two-batch integral on a batch and its copy (perfectly correlated): the same values
    nngp, ntk = quad.two_batches(*(jnp.asarray(c),) * 3, jnp.asarray(theta), 0.0)
    np.testing.assert_allclose(nngp, nngp_exact, atol=1e-5)
    np.testing.assert_allclose(ntk, ntk_exact, atol=1e-5)


def test_two_inputs_closed_form():
    # two entries: y = +-(1, -1) whatever h is (eps = 0; eps = 1e-12 changes it by ~1e-6)
    _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.4), stax.BatchNorm(eps=0.))
    x = np.array([[1.0, 0.3], [-0.2, 1.0]])
    np.testing.assert_allclose(kernel_fn(x, get="nngp"), [[1, -1], [-1, 1]], atol=1e-12)


def _gaussian_draws(c, n, seed):
    """``n`` draws of ``h ~ N(0, c)`` (rows)."""
    w, v = np.linalg.eigh(c)
    return np.random.default_rng(seed).standard_normal((n, len(c))) @ (
        v * np.sqrt(np.clip(w, 0, None))).T


def _normalised(x):
    """The batch-normalised rows ``y`` of ``x`` and their Jacobians ``dy/dx``."""
    mm = x.shape[1]
    u = x - x.mean(1, keepdims=True)
    q = (u**2).sum(1)
    y = np.sqrt(mm) * u / np.sqrt(q)[:, None]
    jac = np.eye(mm) / np.sqrt(q)[:, None, None] - u[:, :, None] * u[:, None] / q[:, None,
                                                                                  None]**1.5
    return y, np.sqrt(mm) * jac @ _centring(mm)


def _random_kernels(seed, m):
    """A covariance ``c`` and an NTK ``theta`` of ``m`` entries."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((m, 14))
    c = f @ f.T / 14 + 0.2
    g = rng.standard_normal((m, 5))
    return c, g @ g.T / 5 + c


def _assert_matches_samples(value, s, rel):
    """``value`` within 5 standard errors of the samples' mean, entrywise, and within ``rel``
    of it in norm."""
    mean, err = s.mean(0), s.std(0) / np.sqrt(len(s))
    z = np.abs(np.asarray(value) - mean) / err
    assert z.max() < 5, z.max()
    assert _rel(value, mean) < rel


def _brute_force(c, theta, m1, n=40_000, seed=0):
    """Samples of y y^T and J theta J^T for the two groups [:m1], [m1:] of h ~ N(0, c)."""
    h = _gaussian_draws(c, n, seed)
    y1, j1 = _normalised(h[:, :m1])
    y2, j2 = _normalised(h[:, m1:])
    return {"nngp11": np.einsum("ni,nj->nij", y1, y1),
            "ntk11": np.einsum("nij,jk,nlk->nil", j1, theta[:m1, :m1], j1),
            "nngp12": np.einsum("ni,nj->nij", y1, y2),
            "ntk12": np.einsum("nij,jk,nlk->nil", j1, theta[:m1, m1:], j2)}


def test_gaussian_formula_vs_brute_force_monte_carlo():
    m1, m2 = 7, 6
    c, theta = _random_kernels(3, m1 + m2)
    nngp11, ntk11 = quad.one_batch(jnp.asarray(c[:m1, :m1]), jnp.asarray(theta[:m1, :m1]), 0.)
    nngp12, ntk12 = quad.two_batches(jnp.asarray(c[:m1, :m1]), jnp.asarray(c[m1:, m1:]),
                                     jnp.asarray(c[:m1, m1:]), jnp.asarray(theta[:m1, m1:]),
                                     0.)
    samples = _brute_force(c, theta, m1)
    for key, value in (("nngp11", nngp11), ("ntk11", ntk11), ("nngp12", nngp12),
                       ("ntk12", ntk12)):
        _assert_matches_samples(value, samples[key], 0.05)


def _net(width, readout=True, **bn):
    layers = [stax.Dense(width, W_std=1.5, b_std=0.1), stax.Relu(),
              stax.Dense(width, W_std=1.3, b_std=0.2),
              stax.BatchNorm(gamma_std=1.1, beta_std=0.4, **bn)]
    return stax.serial(*layers, *([stax.Dense(1, W_std=1.2, b_std=0.1)] if readout else []))


def _shallow(width, readout=True):
    layers = [stax.Dense(width, W_std=1.5, b_std=0.1), stax.BatchNorm(gamma_std=1.1,
                                                                      beta_std=0.4)]
    return stax.serial(*layers, *([stax.Dense(1, W_std=1.2, b_std=0.1)] if readout else []))


def test_finite_networks_converge():
    # two batches, each normalised with its own statistics; the NNGP of the BatchNorm outputs
    # (averaged over its channels), the NTK of the network read out by Dense(1)
    x1 = np.random.default_rng(0).standard_normal((6, 8))
    x2 = np.random.default_rng(1).standard_normal((5, 8))
    exact_nngp = _shallow(8, readout=False).kernel_fn(x1, x2, get="nngp", diagonal_batch=False)
    exact_ntk = _shallow(8).kernel_fn(x1, x2, get="ntk", diagonal_batch=False)
    errors = {}
    for width in (256, 2048):
        mc = monte_carlo_kernel_fn(*_shallow(width, readout=False)[:2], jax.random.PRNGKey(2),
                                   2)
        mc_ntk = monte_carlo_kernel_fn(*_shallow(width)[:2], jax.random.PRNGKey(2), 4)
        errors[width] = (_rel(mc(x1, x2, get="nngp"), exact_nngp),
                         _rel(mc_ntk(x1, x2, get="ntk"), exact_ntk))
    assert max(errors[2048]) <= 0.05, errors
    assert errors[2048][0] < errors[256][0] and errors[2048][1] < errors[256][1], errors


def test_copy_equals_none_and_batch_does_not_tile():
    x = np.random.default_rng(0).standard_normal((5, 3))
    kernel_fn = _net(8)[2]
    one = kernel_fn(x, None, diagonal_batch=False)
    copy = kernel_fn(x, np.array(x), diagonal_batch=False)
    for f in ("nngp", "ntk", "cov1"):
        np.testing.assert_array_equal(getattr(one, f), getattr(copy, f))
    batched = batch(kernel_fn, batch_size=2)(x, None, get=("nngp", "ntk"))
    plain = kernel_fn(x, None, get=("nngp", "ntk"))
    np.testing.assert_array_equal(batched[0], plain[0])
    np.testing.assert_array_equal(batched[1], plain[1])
    np.testing.assert_allclose(jax.jit(lambda a: kernel_fn(a, get="ntk"))(x), plain[1],
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_and_grad(dtype):
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(dtype)
    with jax.enable_x64(dtype == np.float64):
        kernel_fn = _net(8)[2]
        ntk = kernel_fn(jnp.asarray(x), get="ntk")
        assert ntk.dtype == dtype and np.all(np.isfinite(ntk))
        # (the kernel's sum is constant: the normalised outputs sum to zero over the batch)
        def loss(a):
            return kernel_fn(a, get="ntk")[0, 1]

        # a finite difference of the float64 kernel agrees with the gradient
        if dtype == np.float64:
            grad = jax.grad(loss)(jnp.asarray(x))
            assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
            d = np.zeros_like(x)
            d[1, 2] = 1e-5
            fd = (loss(x + d) - loss(x - d)) / 2e-5
            np.testing.assert_allclose(grad[1, 2], fd, rtol=1e-5)
    with jax.enable_x64(True):
        ref = _net(8)[2](x.astype(np.float64), get="ntk")
    np.testing.assert_allclose(ntk, ref, rtol=1e-3 if dtype == np.float32 else 1e-12)


def test_two_batches_float32():
    # the (s, t) quadrature of two batches reaches s * t ~ e^100, beyond float32's range;
    # float32 inputs give float32 results (also with x64 on)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((9, 12))
    b = rng.standard_normal((9, 12))
    c, theta = a @ a.T / 12, b @ b.T / 12
    blocks = (c[:5, :5], c[5:, 5:], c[:5, 5:], theta[:5, 5:])
    ref = quad.two_batches(*(jnp.asarray(b) for b in blocks), 0.0)
    f32 = quad.two_batches(*(jnp.asarray(b, jnp.float32) for b in blocks), 0.0)
    for got, want in zip(f32, ref):
        assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))


def test_images_and_layouts():
    # statistics over the batch and the positions; channels first gives the same kernel
    x = np.random.default_rng(0).standard_normal((3, 4, 2))
    last = stax.serial(stax.Conv(4, (2,), W_std=1.2), stax.BatchNorm(), stax.Dense(1))
    first = stax.serial(stax.Conv(4, (2,), W_std=1.2, dimension_numbers=("NCH", "OIH", "NCH")),
                        stax.BatchNorm(batch_axis=0, channel_axis=1),
                        stax.Dense(1, batch_axis=0, channel_axis=1))
    k_last = last.kernel_fn(x, get="nngp")
    k_first = first.kernel_fn(np.moveaxis(x, -1, 1), get="nngp")
    np.testing.assert_allclose(k_first, k_last, rtol=1e-12)
    # each channel's 3 x 3 normalised entries have mean 0 and mean square 1
    var = np.einsum("aabb->ab", k_last)
    np.testing.assert_allclose(var.mean(), 1.0, rtol=1e-10)
    np.testing.assert_allclose(k_last.sum(), 0.0, atol=1e-10)


def test_eval_mode_is_affine():
    x = np.random.default_rng(0).standard_normal((4, 3))
    net = stax.serial(stax.Dense(1024, W_std=1.4), stax.BatchNorm(mode="eval", mean=0.5,
                                                                 var=2.0, beta_std=0.3),
                      stax.Dense(1))
    exact = net.kernel_fn(x)
    gram = x @ x.T / 3 * 1.4**2
    np.testing.assert_allclose(exact.nngp, (gram + 0.25) / (2 + 1e-12), rtol=1e-12)
    mc = monte_carlo_kernel_fn(net.init_fn, net.apply_fn, jax.random.PRNGKey(0), 4)(x)
    assert _rel(mc.ntk, exact.ntk) < 0.1


def test_bad_inputs():
    x = np.ones((1, 3))
    with pytest.raises(ValueError, match="at least 2 entries"):
        stax.serial(stax.Dense(4), stax.BatchNorm()).kernel_fn(x, get="nngp")
    with pytest.raises(ValueError, match="NTK of batch normalisation is infinite"):
        stax.serial(stax.Dense(4), stax.BatchNorm()).kernel_fn(np.eye(3))
    with pytest.raises(ValueError, match="diagonal_batch=False"):
        stax.serial(stax.Dense(4), stax.BatchNorm()).kernel_fn(np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match="batch axis 0"):
        stax.serial(stax.Dense(4), stax.BatchNorm(axis=-2)).kernel_fn(np.ones((4, 2, 3)))
    with pytest.raises(ValueError, match="channel axis"):
        stax.BatchNorm(axis=(0, 1)).init_fn(None, (4, 3))
    with pytest.raises(ValueError, match="mode must be"):
        stax.BatchNorm(mode="test")
    with pytest.raises(ValueError, match="not Gaussian"):  # attention needs Gaussian inputs
        stax.serial(stax.Dense(4), stax.BatchNorm(), stax.Flatten(), stax.Relu()).kernel_fn(
            np.ones((4, 2, 3)), diagonal_spatial=False)


# --- a ReLU-family nonlinearity right after BatchNorm (train mode, one batch) ---------------


def _abrelu(y, a, b):
    """``(phi(y), phi'(y))`` of ``ABRelu(a, b)``."""
    return np.where(y > 0, b * y, a * y), np.where(y > 0, b, a)


def _brute_force_abrelu(c, theta, a, b, n=200_000, seed=0):
    """Samples of phi(y) phi(y)^T and D J theta J^T D for y the normalised h ~ N(0, c)."""
    y, jac = _normalised(_gaussian_draws(c, n, seed))
    phi, dphi = _abrelu(y, a, b)
    return (np.einsum("ni,nj->nij", phi, phi),
            np.einsum("ni,nij,jk,nlk,nl->nil", dphi, jac, theta, jac, dphi))


@pytest.mark.parametrize("a,b", [(0.0, 1.0), (0.1, 1.0), (-1.0, 1.0), (-0.5, 2.0)])
def test_abrelu_after_formula_vs_brute_force_monte_carlo(a, b):
    c, theta = _random_kernels(3, 7)
    values = quad.one_batch_abrelu(jnp.asarray(c), jnp.asarray(theta), 0.0, a, b)
    for value, s in zip(values, _brute_force_abrelu(c, theta, a, b)):
        _assert_matches_samples(value, s, 0.02)


def test_abrelu_after_linear_case_is_batch_norm_scaled():
    # ABRelu(a, a) is the linear map a x: a**2 times BatchNorm's own kernel (its closed forms
    # are tested above), to rounding
    rng = np.random.default_rng(1)
    f = rng.standard_normal((6, 9))
    c, theta = f @ f.T / 9 + 0.1, np.eye(6) + 0.3
    nngp, ntk = quad.one_batch_abrelu(jnp.asarray(c), jnp.asarray(theta), 1e-3, 0.7, 0.7)
    nngp0, ntk0 = quad.one_batch(jnp.asarray(c), jnp.asarray(theta), 1e-3)
    np.testing.assert_allclose(nngp, 0.49 * nngp0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ntk, 0.49 * ntk0, rtol=1e-12, atol=1e-14)


def _brute_force_abrelu_two(c, theta, m1, a, b, n=200_000, seed=0):
    """Samples of phi(y1) phi(y2)^T and D1 J1 theta12 J2^T D2 for two groups of h ~ N(0, c)
    normalised separately."""
    h = _gaussian_draws(c, n, seed)
    (y1, j1), (y2, j2) = _normalised(h[:, :m1]), _normalised(h[:, m1:])
    (p1, d1), (p2, d2) = _abrelu(y1, a, b), _abrelu(y2, a, b)
    return (np.einsum("ni,nj->nij", p1, p2),
            np.einsum("ni,nij,jk,nlk,nl->nil", d1, j1, theta[:m1, m1:], j2, d2))


@pytest.mark.parametrize("a,b", [(0.0, 1.0), (-1.0, 1.0), (-0.5, 2.0)])
def test_abrelu_after_two_batches_formula_vs_brute_force_monte_carlo(a, b):
    # kernel_fn(x1, x2): each batch normalised with its own statistics, then phi
    m1, m2 = 5, 6
    c, theta = _random_kernels(4, m1 + m2)
    values = quad.two_batches_abrelu(jnp.asarray(c[:m1, :m1]), jnp.asarray(c[m1:, m1:]),
                                     jnp.asarray(c[:m1, m1:]), jnp.asarray(theta[:m1, m1:]),
                                     0.0, a, b)
    for value, s in zip(values, _brute_force_abrelu_two(c, theta, m1, a, b)):
        # (small entries of mixed sign: the z-scores are the sharp test)
        _assert_matches_samples(value, s, 0.05)


def test_abrelu_after_two_batches_linear_case_and_limits():
    # ABRelu(a, a) is a x: a**2 times BatchNorm's two-batch kernel (tested above); the cross
    # kernel of one batch with itself (the same group twice, normalised separately but with
    # identical statistics) is the one-batch kernel, to quadrature accuracy
    rng = np.random.default_rng(2)
    f = rng.standard_normal((11, 15))
    c, theta = f @ f.T / 15 + 0.1, np.eye(11) + 0.3
    blocks = [jnp.asarray(x) for x in (c[:5, :5], c[5:, 5:], c[:5, 5:], theta[:5, 5:])]
    nngp, ntk = quad.two_batches_abrelu(*blocks, 1e-3, 0.7, 0.7)
    nngp0, ntk0 = quad.two_batches(*blocks, 1e-3)
    np.testing.assert_allclose(nngp, 0.49 * nngp0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ntk, 0.49 * ntk0, rtol=1e-12, atol=1e-14)
    one = [jnp.asarray(x) for x in (c[:6, :6], theta[:6, :6])]
    self_nngp, self_ntk = quad.two_batches_abrelu(one[0], one[0], one[0], one[1], 0.0, 0.1, 1.)
    nngp1, ntk1 = quad.one_batch_abrelu(*one, 0.0, 0.1, 1.0)
    assert _rel(self_nngp, nngp1) < 1e-5 and _rel(self_ntk, ntk1) < 1e-4


def test_abrelu_after_two_batches_finite_networks_converge():
    # two batches through BatchNorm (own statistics) and Relu: the NNGP of the activations
    # (averaged over channels) and the NTK of the network read out by Dense(16)
    x1 = np.random.default_rng(0).standard_normal((6, 8))
    x2 = np.random.default_rng(1).standard_normal((5, 8))
    bn = dict(gamma_std=1.1, beta_std=0.4)
    kw = dict(diagonal_batch=False)
    exact_nngp = _bn_relu(8, **bn).kernel_fn(x1, x2, get="nngp", **kw)
    exact_ntk = _bn_relu(8, readout=16, **bn).kernel_fn(x1, x2, get="ntk", **kw)
    errors = {}
    for width in (256, 2048):
        nngp = monte_carlo_kernel_fn(*_bn_relu(width, **bn)[:2], jax.random.PRNGKey(2),
                                     2)(x1, x2, get="nngp")
        ntk = monte_carlo_kernel_fn(*_bn_relu(width, readout=16, **bn)[:2],
                                    jax.random.PRNGKey(2), 4)(x1, x2, get="ntk")
        errors[width] = (_rel(nngp, exact_nngp), _rel(ntk, exact_ntk))
    assert max(errors[2048]) <= 0.05, errors
    assert errors[2048][0] < errors[256][0] and errors[2048][1] < errors[256][1], errors


def test_abrelu_after_two_batches_copy_cov_and_dtypes():
    x = np.random.default_rng(0).standard_normal((5, 6))
    kernel_fn = _bn_relu(8, act=lambda: stax.LeakyRelu(0.1), readout=1, gamma_std=0.8,
                         beta_std=0.3)[2]
    one = kernel_fn(x, None, diagonal_batch=False)
    copy = kernel_fn(x, np.array(x), diagonal_batch=False)
    for f in ("nngp", "ntk", "cov1", "cov2"):
        np.testing.assert_array_equal(getattr(one, f if f != "cov2" else "cov1"),
                                      getattr(copy, f))
    x2 = np.random.default_rng(1).standard_normal((4, 6))
    k12 = kernel_fn(x, x2, diagonal_batch=False)
    np.testing.assert_allclose(k12.cov2, kernel_fn(x2, None, diagonal_batch=False).nngp,
                               rtol=1e-12)
    k21 = kernel_fn(x2, x, diagonal_batch=False)
    np.testing.assert_allclose(k21.nngp, np.asarray(k12.nngp).T, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(k21.ntk, np.asarray(k12.ntk).T, rtol=1e-7, atol=1e-10)
    f32 = kernel_fn(jnp.asarray(x, jnp.float32), jnp.asarray(x2, jnp.float32),
                    diagonal_batch=False)
    assert f32.ntk.dtype == jnp.float32
    np.testing.assert_allclose(f32.ntk, k12.ntk, rtol=2e-4, atol=2e-5)
    grad = jax.grad(lambda x2: kernel_fn(x, x2, "ntk", diagonal_batch=False).sum())(x2)
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0


def _bn_relu(width, act=stax.Relu, readout=0, **bn):
    return stax.serial(stax.Dense(width, W_std=1.5, b_std=0.1), stax.BatchNorm(**bn), act(),
                       *([stax.Dense(readout, W_std=1.2, b_std=0.1)] if readout else []))


@pytest.mark.parametrize("act", [stax.Relu, lambda: stax.LeakyRelu(0.2), stax.Abs])
def test_abrelu_after_finite_networks_converge(act):
    # the NNGP of the activations after the nonlinearity (averaged over channels) and the NTK
    # of the network read out by Dense(16), with the learned scale and shift
    x = np.random.default_rng(0).standard_normal((6, 8))
    bn = dict(gamma_std=1.1, beta_std=0.4)
    exact_nngp = _bn_relu(8, act, **bn).kernel_fn(x, None, get="nngp")
    exact_ntk = _bn_relu(8, act, readout=16, **bn).kernel_fn(x, None, get="ntk")
    errors = {}
    for width in (256, 2048):
        nngp = monte_carlo_kernel_fn(*_bn_relu(width, act, **bn)[:2], jax.random.PRNGKey(2),
                                     2)(x, get="nngp")
        ntk = monte_carlo_kernel_fn(*_bn_relu(width, act, readout=16, **bn)[:2],
                                    jax.random.PRNGKey(2), 4)(x, get="ntk")
        errors[width] = (_rel(nngp, exact_nngp), _rel(ntk, exact_ntk))
    assert max(errors[2048]) <= 0.05, errors
    assert errors[2048][0] < errors[256][0] and errors[2048][1] < errors[256][1], errors


def test_abrelu_after_images_are_entries_of_one_batch():
    # BatchNorm of a 1x1 convolution's outputs normalises over the batch and the positions:
    # the kernel of 3 images of 4 positions is the flat kernel of their 12 pixels as a batch
    x = np.random.default_rng(5).standard_normal((3, 4, 2))
    layers = (stax.BatchNorm(gamma_std=0.9, beta_std=0.3), stax.Relu(), stax.Dense(1))
    image = stax.serial(stax.Conv(8, (1,), W_std=1.4, b_std=0.2), *layers)[2](
        x, None, diagonal_spatial=False)
    flat = stax.serial(stax.Dense(8, W_std=1.4, b_std=0.2), *layers)[2](x.reshape(12, 2))
    for f in ("nngp", "ntk"):
        full = np.asarray(getattr(flat, f)).reshape(3, 4, 3, 4).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(getattr(image, f), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_abrelu_after_dtypes_grad_and_consistency(dtype):
    # 5 inputs in 6 dimensions: a centred covariance of full rank 4 (of rank 3 or less the
    # NTK's tail integral, E[1/|u|^2] in 3 dimensions, is accurate to about 1e-8 only)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 6)), dtype)
    kernel_fn = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2), stax.BatchNorm(gamma_std=1.0),
                            stax.Relu(), stax.Dense(4, W_std=1.2), stax.Relu(), stax.Dense(1))[2]
    k = kernel_fn(x, None)
    k_jit = jax.jit(lambda x: kernel_fn(x, None))(x)
    full = kernel_fn(x, None, diagonal_batch=False)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for f in ("nngp", "ntk"):
        v = np.asarray(getattr(k, f), np.float64)
        assert getattr(k, f).dtype == dtype and np.isfinite(v).all()
        np.testing.assert_allclose(v, v.T, rtol=tol, atol=tol)
        assert np.linalg.eigvalsh((v + v.T) / 2).min() > -tol * np.abs(v).max()
        np.testing.assert_allclose(getattr(k_jit, f), v, rtol=tol, atol=tol)
        np.testing.assert_allclose(getattr(full, f), v, rtol=tol, atol=tol)
    np.testing.assert_allclose(full.cov1, full.nngp, rtol=tol, atol=tol)
    grad = jax.grad(lambda x: kernel_fn(x, None, "ntk").sum())(x)
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0


def test_nonlinearity_after_batch_norm_bad_combinations():
    x = np.random.default_rng(0).standard_normal((5, 3))
    with pytest.raises(ValueError, match="jumps"):  # Erf & co: tests/test_batch_norm_nonlinear
        stax.serial(stax.Dense(4), stax.BatchNorm(), stax.Sign()).kernel_fn(x)
    with pytest.raises(ValueError, match="diagonal_batch=False"):
        stax.serial(stax.Dense(4), stax.BatchNorm(), stax.Relu()).kernel_fn(x, x[:4] + 1)
    # BatchNorm, Dense, Relu: Gaussian again, the ordinary rule
    k = stax.serial(stax.Dense(4), stax.BatchNorm(), stax.Dense(4), stax.Relu()).kernel_fn(x)
    assert np.isfinite(np.asarray(k.ntk)).all()
