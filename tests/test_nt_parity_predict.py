"""Predictions agree with neural-tangents 0.6.5 in float64 (relative error < tol('nt')).

Reference values: tests/reference/predict.npz, written by tests/reference/make_predict.py under
neural-tangents. Both libraries make the same calls (tests/reference/catalogue_predict.py::run)
on the same stored kernels; also checks that infwidth's own kernel_fn gives those kernels, so
the ensemble predictions match end to end.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import predict, stax

sys.path.insert(0, REFERENCE_DIR)
from _catalogue import build  # noqa: E402
from catalogue_predict import ARCH, run  # noqa: E402

REF = load_reference("predict")
DATA = {k: v for k, v in REF.items() if not k.startswith("out/")}
EXPECTED = {k[4:]: v for k, v in REF.items() if k.startswith("out/")}


@pytest.fixture(scope="module")
def ours():
    with x64():
        out = run(predict, jnp, jax, DATA)
    return out


def test_every_reference_output_is_produced(ours):
    assert sorted(ours) == sorted(EXPECTED)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_matches_neural_tangents(ours, key):
    assert ours[key].shape == EXPECTED[key].shape, key
    assert ours[key].dtype == np.float64, key
    assert np.all(np.isfinite(ours[key])), key
    # ODE outputs go through an adaptive solver at rtol 1.4e-8 on both sides.
    assert_close(ours[key], EXPECTED[key], tol("nt", "float64"), key)


def test_kernels_match_so_end_to_end_ensembles_match():
    with x64():
        kernel_fn = build(stax, ARCH)[2]
        x_train, x_test = jnp.asarray(DATA["x_train"]), jnp.asarray(DATA["x_test"])
        fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, jnp.asarray(
            DATA["y_train"]))
        r = fn(jnp.asarray(DATA["times"]), x_test, None, True)
        for g in ("nngp", "ntk"):
            assert_close(getattr(r, g).mean, EXPECTED[f"ens/1.0/t/{g}/mean"], tol("nt", "float64"),
                         g)
            assert_close(getattr(r, g).covariance, EXPECTED[f"ens/1.0/t/{g}/cov"],
                         tol("nt", "float64"), g)
