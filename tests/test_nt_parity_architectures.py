"""The residual and transformer builders (infwidth.architectures) agree with the same networks
written layer by layer in neural-tangents 0.6.5, in float64 (relative error < 1e-6).

Reference values: tests/reference/architectures.npz (tests/reference/make_groups.py).
"""

import sys

import jax
import jax.numpy as jnp
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import architectures

sys.path.insert(0, REFERENCE_DIR)
from catalogue_architectures import CASES  # noqa: E402

REF = load_reference("architectures")


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_matches_neural_tangents(name):
    builder, kwargs = CASES[name][:2]
    with x64():
        kernel_fn = getattr(architectures, builder)(**kwargs)[2]
        x1, x2 = jnp.asarray(REF[f"{name}/x1"]), jnp.asarray(REF[f"{name}/x2"])
        get = ("nngp", "ntk")
        k12, k11 = jax.jit(lambda a, b: (kernel_fn(a, b, get=get), kernel_fn(a, None, get=get)))(
            x1, x2)
        for tag, k in (("12", k12), ("11", k11)):
            for f in ("nngp", "ntk"):
                assert_close(getattr(k, f), REF[f"{name}/{name}/{f}{tag}"],
                             tol("nt", "float64"), f"{f}{tag}")
