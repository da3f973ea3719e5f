"""MaxPool / GlobalMaxPool (issue 21): the Monte Carlo rule against the closed form for
two-position windows (max(a, b) = (a + b + |a - b|) / 2) in float64, against Monte Carlo of
wide finite CNNs, kernel properties and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64
from layer_properties import check_kernel_properties

from infwidth import stax


def _abs_dual(c, s1, s2):
    """E|X||Y| for centred Gaussians with variances s1, s2 and covariance c."""
    s = np.sqrt(s1 * s2)
    r = np.clip(c / s, -1, 1)
    return 2 / np.pi * s * (np.sqrt(1 - r**2) + r * np.arcsin(r))


def test_window_of_two_closed_form_float64():
    with x64():
        x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 2))
        x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 2))
        base = stax.Conv(8, (3,), padding="SAME", W_std=1.3, b_std=0.1)
        k0 = base.kernel_fn(x, x2)
        k = stax.serial(base, stax.MaxPool((2,), (2,))).kernel_fn(x, x2)
        q, c1, c2 = (np.asarray(a) for a in (k0.nngp, k0.cov1, k0.cov2))
        expected = np.zeros((3, 2, 3, 3))
        for o in range(3):
            for p in range(3):
                i, j = 2 * o, 2 * p
                a, b = q[:, :, i, j], q[:, :, i, j + 1]
                c, d = q[:, :, i + 1, j], q[:, :, i + 1, j + 1]
                total, diff = a + b + c + d, a - b - c + d
                s1 = (c1[:, i, i] + c1[:, i + 1, i + 1] - 2 * c1[:, i, i + 1])[:, None]
                s2 = (c2[:, j, j] + c2[:, j + 1, j + 1] - 2 * c2[:, j, j + 1])[None, :]
                expected[:, :, o, p] = total / 4 + _abs_dual(diff, s1, s2) / 4
        assert k.nngp.shape == (3, 2, 3, 3) and k.cov1.shape == (3, 3, 3)
        assert_close(k.nngp, expected, 0.015, "nngp")
        assert rel_err(k.nngp, expected * 1.05) > 0.03


NETS = {
    "maxpool_relu": lambda w: stax.serial(
        stax.Conv(w, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
        stax.MaxPool((2, 2), (2, 2), rectify=True), stax.Flatten(), stax.Dense(256, 1.1, 0.1)),
    "global_max": lambda w: stax.serial(
        stax.Conv(w, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
        stax.MaxPool((2, 2), padding="SAME", rectify=True),
        stax.Conv(w, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.GlobalMaxPool(),
        stax.Dense(256, 1.1, 0.1)),
}


@pytest.mark.float32_stream
@pytest.mark.parametrize("name", sorted(NETS))
def test_max_pool_matches_monte_carlo(name):
    x1 = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2))
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 2))
    k = NETS[name](8).kernel_fn(x1, x2, get=("nngp", "ntk"))
    errs = []
    for width, n in ((32, 16), (256, 16)):
        init_fn, apply_fn, _ = NETS[name](width)
        mc = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), n)
        errs.append((rel_err(mc[0], k.nngp), rel_err(mc[1], k.ntk)))
    assert errs[1][0] < tol("mc") and errs[1][1] < tol("mc"), errs
    assert errs[1][1] < errs[0][1], errs
    assert rel_err(mc[0], 1.2 * np.asarray(k.nngp)) > tol("mc")


def test_max_pool_properties():
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 2))
    check_kernel_properties(lambda: stax.serial(
        stax.Conv(8, (2,), padding="SAME"), stax.MaxPool((2,), rectify=True, n_samples=256),
        stax.Conv(8, (2,)), stax.GlobalMaxPool(n_samples=256), stax.Dense(1)).kernel_fn, x)


def test_max_pool_bad_input():
    x = jnp.ones((2, 4, 4, 3))
    with pytest.raises(ValueError, match="MaxPool.*not Gaussian"):
        stax.serial(stax.Conv(4, (3, 3)), stax.Relu(), stax.MaxPool((2, 2))).kernel_fn(x)
    with pytest.raises(ValueError, match="diagonal_spatial=False"):
        stax.serial(stax.Conv(4, (3, 3)), stax.MaxPool((2, 2))).kernel_fn(
            x, diagonal_spatial=True)
    with pytest.raises(ValueError, match="padding must be 'VALID' or 'SAME'"):
        stax.MaxPool((2, 2), padding="CIRCULAR")
    with pytest.raises(ValueError, match="n_samples"):
        stax.GlobalMaxPool(n_samples=0)
    with pytest.raises(ValueError, match="window_shape"):
        stax.serial(stax.Conv(4, (3, 3)), stax.MaxPool((5, 5))).kernel_fn(x)
