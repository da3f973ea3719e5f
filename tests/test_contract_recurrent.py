"""SimpleRNN (issue 21): the kernel recursion against a closed form for two steps (ReLU,
float64), against Monte Carlo of wide finite recurrent networks, kernel properties, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, mc_kernels, rel_err, tol, x64
from layer_properties import check_kernel_properties

from infwidth import stax

W, U, B = 1.1, 1.2, 0.2


def _relu_maps(q, v1, v2):
    s = np.sqrt(v1 * v2)
    th = np.arccos(np.clip(q / s, -1, 1))
    return s * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


def test_two_steps_closed_form_float64():
    """z_0 = U x_0 + b, z_1 = W relu(z_0) + U x_1 + b: the kernels of the states written out."""
    with x64():
        x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 4))
        k = stax.SimpleRNN(8, W, U, B).kernel_fn(x)
        xx = np.einsum("ntd,msd->nmts", x, x) / 4
        kux = U**2 * xx + B**2
        z00 = kux[:, :, 0, 0]
        v0 = np.diag(z00)
        phi00, dphi00 = _relu_maps(z00, v0[:, None], v0[None, :])
        z11 = kux[:, :, 1, 1] + W**2 * phi00
        z10, z01 = kux[:, :, 1, 0], kux[:, :, 0, 1]
        v1 = np.diag(z11)
        kz = np.stack([np.stack([z00, z01], -1), np.stack([z10, z11], -1)], -2)
        var = np.stack([v0, v1], -1)  # (N, T)
        phi, dphi = _relu_maps(kz, var[:, None, :, None], var[None, :, None, :])
        t_ux = kux  # raw inputs have zero NTK: ntk(U x + b) = K_ux
        t_z = t_ux.copy()
        t_z[:, :, 1, 1] = t_ux[:, :, 1, 1] + W**2 * (phi00 + dphi00 * z00)
        assert_close(k.nngp, phi, 1e-9, "nngp")
        assert_close(k.ntk, t_z * dphi, 1e-7, "ntk")  # arccos near correlation 1
        # weights shared across time: the state at t = 1 covaries with t = 0 through x only,
        # and an untied W would drop the W**2 term of z11
        assert rel_err(k.nngp[:, :, 1, 1], _relu_maps(kux[:, :, 1, 1], np.diag(
            kux[:, :, 1, 1])[:, None], np.diag(kux[:, :, 1, 1])[None, :])[0]) > 0.1


def _net(width, readout=256):
    return stax.serial(stax.SimpleRNN(width, W, U, B), stax.Flatten(),
                       stax.Dense(readout, 1.0, 0.1))


@pytest.mark.float32_stream
def test_simple_rnn_matches_monte_carlo():
    x1 = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 2))
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 2))
    k = _net(8).kernel_fn(x1, x2, get=("nngp", "ntk"))
    errs = []
    for width in (64, 512):
        init_fn, apply_fn, _ = _net(width)
        mc = mc_kernels(init_fn, apply_fn, x1, x2, jax.random.PRNGKey(2), 64)
        errs.append((rel_err(mc[0], k.nngp), rel_err(mc[1], k.ntk)))
    assert errs[1][0] < tol("mc") and errs[1][1] < tol("mc"), errs
    assert errs[1][1] < errs[0][1], errs
    assert rel_err(mc[0], 1.2 * np.asarray(k.nngp)) > tol("mc")


def test_simple_rnn_properties():
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 4, 2))
    check_kernel_properties(lambda: stax.serial(
        stax.SimpleRNN(8, W, U, B, activation=stax.Erf()), stax.Flatten(),
        stax.Dense(1)).kernel_fn, x)


def test_simple_rnn_bad_input():
    with pytest.raises(ValueError, match="sequences"):
        stax.SimpleRNN(4).kernel_fn(jnp.ones((2, 3, 3, 2)))
    with pytest.raises(ValueError, match="diagonal_spatial=False"):
        stax.SimpleRNN(4).kernel_fn(jnp.ones((2, 3, 2)), diagonal_spatial=True)
    with pytest.raises(TypeError, match="activation"):
        stax.SimpleRNN(4, activation=jnp.tanh)
    with pytest.raises(ValueError, match="out_dim"):
        stax.SimpleRNN(0)
