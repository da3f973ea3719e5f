"""Fully connected kernels agree with neural-tangents 0.6.5 in float64 (relative error < 1e-6).

Reference values: tests/reference/fc.npz, written by tests/reference/make_fc.py under
neural-tangents; the same spec builds the network in both libraries.
"""

import sys

import jax.numpy as jnp
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from _catalogue import build  # noqa: E402
from catalogue_fc import CATALOGUE  # noqa: E402

REF = load_reference("fc")


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_fc_matches_neural_tangents(name):
    with x64():
        kernel_fn = build(stax, CATALOGUE[name])[2]
        x1, x2 = jnp.asarray(REF["x1"]), jnp.asarray(REF["x2"])
        k12 = kernel_fn(x1, x2, get=("nngp", "ntk"))
        k11 = kernel_fn(x1, None, get=("nngp", "ntk"))
        assert k12.nngp.dtype == jnp.float64
        for tag, k in (("12", k12), ("11", k11)):
            assert_close(k.nngp, REF[f"{name}/nngp{tag}"], tol("nt", "float64"), f"nngp{tag}")
            assert_close(k.ntk, REF[f"{name}/ntk{tag}"], tol("nt", "float64"), f"ntk{tag}")
