"""Operator kernels (PINN kernels), NTK saliency and benign overfitting, checked independently:
Monte Carlo over wide finite networks differentiated by autodiff in x, a hand-written float64
closed form, finite differences, and learning-curve theory against measured interpolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import x64

from infwidth import stax
from infwidth.analysis import (
    elasticity,
    gradient,
    identity,
    laplacian,
    learning_curve_from_spectrum,
    ntk_saliency,
    operator_kernel,
    spearman,
    stack,
)

W1, B1, W2, B2 = 1.5, 0.3, 1.0, 0.1


def _erf_net(width=1):
    return stax.serial(stax.Dense(width, W1, B1), stax.Erf(), stax.Dense(1, W2, B2))


def test_laplacian_kernels_match_monte_carlo():
    """[Lap f; f] at three 2-D points, with the Lap-Lap diagonal (coincident points): analytic
    NNGP against the empirical covariance of Lap f (autodiff of apply_fn in x) over finite
    networks, within 4 standard errors plus a 1/width allowance."""
    x = jnp.array([[0.3, -0.2], [0.5, 0.4], [-0.6, 0.1]])
    init_fn, apply_fn, kernel_fn = _erf_net(256)
    k = operator_kernel(kernel_fn, x, None, stack(laplacian(), identity()))
    k = np.asarray(k).reshape(6, 6)  # rows: (point, [Lap f, f])

    @jax.jit
    def sample(key):
        _, p = init_fn(key, (1, 2))

        def lap(xi):
            return jnp.trace(jax.hessian(lambda z: apply_fn(p, z[None])[0, 0])(xi))

        return jnp.stack([jax.vmap(lap)(x), apply_fn(p, x)[:, 0]], axis=1).reshape(-1)

    n = 1500
    s = np.asarray(jax.lax.map(sample, jax.random.split(jax.random.PRNGKey(0), n)))
    prods = s[:, :, None] * s[:, None, :]
    mc, se = prods.mean(0), prods.std(0) / np.sqrt(n)
    scale = np.sqrt(np.outer(np.diag(k), np.diag(k)))
    assert np.all(np.abs(mc - k) < 4 * se + 0.02 * scale), np.abs(mc - k) / (se + 1e-12)
    assert k[0, 0] > 1.0  # the Laplacian of an Erf network has real variance


def test_laplacian_ntk_matches_empirical_ntk_of_finite_networks():
    """The NTK of [Lap f; f]: the tangent kernel sum_p d(L f(x))/dp d(L f(y))/dp of finite
    networks (autodiff in x inside autodiff in the parameters), averaged over draws. For one
    hidden layer its mean is the infinite-width NTK at any width, so the tolerance is Monte
    Carlo error only (5 standard errors)."""
    x = jnp.array([[0.3, -0.2], [0.5, 0.4]])
    init_fn, apply_fn, kernel_fn = _erf_net(128)
    k = np.asarray(operator_kernel(kernel_fn, x, None, stack(laplacian(), identity()),
                                   get="ntk")).reshape(4, 4)

    def lap_and_value(p):
        def lap(xi):
            return jnp.trace(jax.hessian(lambda z: apply_fn(p, z[None])[0, 0])(xi))

        return jnp.stack([jax.vmap(lap)(x), apply_fn(p, x)[:, 0]], axis=1).reshape(-1)

    @jax.jit
    def sample(key):
        _, p = init_fn(key, (1, 2))
        jac = jax.jacrev(lap_and_value)(p)
        flat = jnp.concatenate([j.reshape(4, -1) for j in jax.tree_util.tree_leaves(jac)], 1)
        return flat @ flat.T

    n = 800
    s = np.asarray(jax.lax.map(sample, jax.random.split(jax.random.PRNGKey(1), n)))
    mc, se = s.mean(0), s.std(0) / np.sqrt(n)
    assert np.all(np.abs(mc - k) < 5 * se + 1e-6), np.abs(mc - k) / (se + 1e-12)
    assert k[0, 0] > 1.0 and np.all(se < 0.01 * k[0, 0])  # resolves a 5% error


def test_tanh_laplacian_kernel_matches_weight_space_quadrature_float64():
    """Lap_x Lap_y k(x, y) = W2^2 E[|w|^4 tanh''(w.x + b) tanh''(w.y + b)] for one hidden
    layer (w ~ N(0, W1^2 / d I), b ~ N(0, B1^2)): a 3-D Gauss-Hermite integral over the weights,
    independent of the kernel's quadrature over pre-activations and its Price derivatives.
    Its fourth derivatives of tanh need more nodes than the kernel's own (25 nodes alone are
    off by 30% at (0.5, 0.4))."""
    x = np.array([[0.3, -0.2], [0.5, 0.4]])
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    weights = weights / np.sqrt(np.pi)
    g = np.sqrt(2.0) * nodes
    w0, w1, b = np.meshgrid(g * W1 / np.sqrt(2), g * W1 / np.sqrt(2), g * B1, indexing="ij")
    mass = weights[:, None, None] * weights[None, :, None] * weights[None, None, :]
    t2 = [(lambda t: -2 * t * (1 - t * t))(np.tanh(w0 * xi[0] + w1 * xi[1] + b)) for xi in x]
    r4 = (w0 ** 2 + w1 ** 2) ** 2
    ref = np.array([[W2 ** 2 * np.sum(mass * r4 * a * c) for c in t2] for a in t2])
    with x64():
        kernel_fn = stax.serial(stax.Dense(1, W1, B1), stax.Tanh(), stax.Dense(1, W2, B2))[2]
        k = np.asarray(operator_kernel(kernel_fn, jnp.asarray(x), None, laplacian()))[:, 0, :, 0]
    np.testing.assert_allclose(k, ref, rtol=1e-4)


def test_derivative_kernels_match_hand_written_closed_form_float64():
    """The one-hidden-layer Erf NNGP written out by hand (Williams 1997), differentiated by
    jax, against operator_kernel at distinct and coincident points, to 1e-9."""
    with x64():
        x = jnp.array([[0.3, -0.2], [0.5, 0.4], [0.3, -0.2]])  # rows 0 and 2 coincide

        def k(a, b):
            s = lambda u, v: W1**2 * (u @ v) / 2 + B1**2
            z = 2 * s(a, b) / jnp.sqrt((1 + 2 * s(a, a)) * (1 + 2 * s(b, b)))
            return W2**2 * 2 / jnp.pi * jnp.arcsin(z) + B2**2

        grad_grad = jax.vmap(jax.vmap(jax.jacfwd(jax.grad(k, 1), 0), (None, 0)), (0, None))(x, x)
        _, _, kernel_fn = _erf_net()
        got_gg = operator_kernel(kernel_fn, x, None, gradient())  # (3, 2, 3, 2)
        np.testing.assert_allclose(got_gg, np.transpose(grad_grad, (0, 2, 1, 3)), rtol=1e-9,
                                   atol=1e-12)
        assert float(jnp.max(jnp.abs(got_gg[0] - got_gg[2]))) < 1e-12  # a copy: the same point


def test_elasticity_kernel_is_symmetric_psd_and_matches_closed_form_float64():
    """Navier-Cauchy kernel of a 2-D displacement field from the hand-written Erf kernel."""
    with x64():
        lam, mu = 2.0, 0.5
        x = jnp.array([[0.1, 0.2], [-0.3, 0.4], [0.2, -0.5]])
        _, _, kernel_fn = _erf_net()
        got = np.asarray(operator_kernel(kernel_fn, x, None, elasticity(lam, mu))).reshape(6, 6)

        def k(a, b):
            s = lambda u, v: W1**2 * (u @ v) / 2 + B1**2
            z = 2 * s(a, b) / jnp.sqrt((1 + 2 * s(a, a)) * (1 + 2 * s(b, b)))
            return W2**2 * 2 / jnp.pi * jnp.arcsin(z) + B2**2

        def block(a, b):  # L_x L_y [k(x, y) I]: sum over the shared component c
            h4 = jax.jacfwd(jax.jacfwd(jax.hessian(k, 1), 0), 0)(a, b)  # x_i x_j y_k y_l
            eye = jnp.eye(2)
            # (L1 applied to e_c) in x: mu Lap delta_pc + (lam + mu) d_p d_c
            op = lambda p, c, i, j: mu * eye[p, c] * eye[i, j] + (lam + mu) * eye[c, i] * eye[p, j]
            coef = jnp.array([[[[op(p, c, i, j) for j in range(2)] for i in range(2)]
                               for c in range(2)] for p in range(2)])
            return jnp.einsum("pcij,qckl,ijkl->pq", coef, coef, h4)

        want = np.array([[block(a, b) for b in x] for a in x]).transpose(0, 2, 1, 3).reshape(6, 6)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        assert np.min(np.linalg.eigvalsh((got + got.T) / 2)) > -1e-9


@pytest.mark.parametrize("act,get", [(stax.Relu(), "nngp"), (stax.Sign(), "ntk")])
def test_rough_activation_with_second_derivatives_raises(act, get):
    _, _, kernel_fn = stax.serial(stax.Dense(8), act, stax.Dense(1))
    with pytest.raises(ValueError, match=r"(ABRelu|Sign).*stax\.Tanh\(\), stax\.Gelu\(\)"):
        operator_kernel(kernel_fn, jnp.zeros((2, 2)), None, laplacian(), get=get)
    # the plain kernel (no derivatives) still works
    assert operator_kernel(kernel_fn, jnp.ones((2, 2)), get="nngp").shape == (2, 1, 2, 1)


def test_operator_kernel_bad_arguments():
    _, _, kernel_fn = _erf_net()
    with pytest.raises(ValueError, match="get must be 'nngp' or 'ntk'"):
        operator_kernel(kernel_fn, jnp.ones((2, 2)), get="cov1")
    with pytest.raises(TypeError, match="expected an Operator"):
        operator_kernel(kernel_fn, jnp.ones((2, 2)), None, "laplacian")
    with pytest.raises(ValueError, match=r"shapes \(N1, d\)"):
        operator_kernel(kernel_fn, jnp.ones((2, 2, 1)))
    with pytest.raises(ValueError, match="n_outputs"):
        operator_kernel(kernel_fn, jnp.ones((2, 2)), None, elasticity(), n_outputs=3)


def test_ntk_saliency_gradient_matches_finite_differences_float64():
    with x64():
        _, _, kernel_fn = stax.serial(stax.Conv(4, (2, 2), padding="SAME"), stax.Gelu(),
                                      stax.Flatten(), stax.Dense(1))
        x = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 1))
        s = ntk_saliency(kernel_fn, x)
        direction = jax.random.normal(jax.random.PRNGKey(2), x.shape)
        eps = 1e-5
        plus = ntk_saliency(kernel_fn, x + eps * direction).diagonal
        minus = ntk_saliency(kernel_fn, x - eps * direction).diagonal
        fd = (plus - minus) / (2 * eps)
        analytic = jnp.sum(s.gradient * direction, axis=(1, 2, 3))
        np.testing.assert_allclose(analytic, fd, rtol=1e-6)
        np.testing.assert_allclose(s.diagonal, jnp.diag(kernel_fn(x, None, "ntk")), rtol=1e-12)


def test_spearman_hand_values():
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert spearman([1, 2, 3], [1, 1, 1]) == 0.0
    with pytest.raises(ValueError, match="one size"):
        spearman([1, 2], [1, 2, 3])


def _interpolation_error(lam, n, noise_var, reps, seed):
    """Ridgeless NNGP regression (a Dense network: the linear kernel) of y = z_1 + z_2 + z_3
    with Gaussian features z of covariance diag(lam), noisy labels; MSE against the clean
    target on fresh points."""
    _, _, kernel_fn = stax.Dense(1)
    rng = np.random.default_rng(seed)
    errs = []
    for _ in range(reps):
        z = rng.standard_normal((n + 300, lam.size)) * np.sqrt(lam)
        y = z[:, :3].sum(1)
        k = np.asarray(kernel_fn(z * np.sqrt(lam.size), None, "nngp"))
        noisy = y[:n] + np.sqrt(noise_var) * rng.standard_normal(n)
        pred = k[n:, :n] @ np.linalg.solve(k[:n, :n], noisy)
        errs.append(np.mean((pred - y[n:]) ** 2))
    return np.mean(errs), np.std(errs) / np.sqrt(reps)


def _spiked(n):  # 3 strong directions and a long flat tail of n^2 / 8 weak ones (mass 1)
    d = n * n // 8
    return np.concatenate([np.ones(3), np.full(d, 1.0 / d)])


def _power_law(n):  # lambda_k = k^-2: no long weak tail
    return np.arange(1, n * n // 8 + 4) ** -2.0


def test_benign_overfitting_spiked_versus_power_law():
    """Interpolating noisy labels (noise variance 0.25): the excess error over the noise floor
    falls towards 0 with N for the spiked spectrum and stays at about the noise level for the
    power law, as the learning-curve theory predicts; measured and predicted agree."""
    with x64():
        noise = 0.25
        for spectrum, n in [(_spiked, 16), (_spiked, 64), (_power_law, 16), (_power_law, 64)]:
            lam = spectrum(n)
            a = np.zeros(lam.size)
            a[:3] = np.sqrt(lam[:3])
            theory = float(learning_curve_from_spectrum(lam, a, [n], noise_var=noise).error[0])
            measured, se = _interpolation_error(lam, n, noise, reps=8, seed=n)
            assert abs(measured - theory) < 4 * se + 0.1 * theory, (spectrum, n, measured, theory)
        big = 1024
        lam_s, lam_p = _spiked(big), _power_law(big)
        a_s, a_p = np.zeros(lam_s.size), np.zeros(lam_p.size)
        a_s[:3], a_p[:3] = 1.0, np.sqrt(lam_p[:3])
        spiked = float(learning_curve_from_spectrum(lam_s, a_s, [16, 64, big], noise_var=noise)
                       .error[-1])
        power = float(learning_curve_from_spectrum(lam_p, a_p, [big], noise_var=noise).error[0])
        assert spiked < 0.01 * 1.5 and power > 0.9 * noise
