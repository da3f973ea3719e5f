"""Every activation of issue 3 agrees with neural-tangents 0.6.5 in float64 (relative error
< 1e-6), on (x1, x2) and on (x1, None), under both parameterizations and several depths.

Reference values: tests/reference/activations.npz, written by
tests/reference/make_activations.py under neural-tangents.

For an input paired with itself (the diagonal of the (x1, None) kernels), neural-tangents'
RectifiedMonomial returns NaN (it divides by sin(theta) = 0) or values with large rounding
errors, and Sign (an arcsine, with infinite slope at correlation 1) turns a rounding error of
1e-16 in the input Gram matrix into errors of 1e-2 after three layers. For those two the
diagonal is left out; ours must still be finite everywhere.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from _catalogue import build  # noqa: E402
from catalogue_activations import CATALOGUE  # noqa: E402

REF = load_reference("activations")


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_activation_matches_neural_tangents(name):
    with x64():
        kernel_fn = jax.jit(build(stax, CATALOGUE[name])[2], static_argnames="get")
        x1, x2 = jnp.asarray(REF["x1"]), jnp.asarray(REF["x2"])
        k12 = kernel_fn(x1, x2, get=("nngp", "ntk"))
        k11 = kernel_fn(x1, None, get=("nngp", "ntk"))
        assert k12.nngp.dtype == jnp.float64
        for tag, k in (("12", k12), ("11", k11)):
            for what in ("nngp", "ntk"):
                ours, ref = np.asarray(getattr(k, what)), REF[f"{name}/{what}{tag}"]
                assert np.all(np.isfinite(ours)), f"{what}{tag} not finite"
                known = np.ones(ref.shape, bool)
                if tag == "11" and ("rectified" in name or "sign" in name):
                    known &= ~np.eye(len(ref), dtype=bool)
                assert np.isfinite(ref[known]).all()
                assert_close(ours[known], ref[known], tol("nt", "float64"), f"{what}{tag}")
