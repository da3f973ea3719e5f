"""Index kernels (batch, spatial, strided and integer indices) agree with neural-tangents 0.6.5
in float64 (relative error < 1e-6), sequences and images, full and diagonal spatial layouts.

Reference values: tests/reference/indexing.npz, written by tests/reference/make_indexing.py.
"""

import sys

import jax
import jax.numpy as jnp
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from _catalogue import build  # noqa: E402
from catalogue_indexing import GROUPS  # noqa: E402

REF = load_reference("indexing")
CASES = [(g, n) for g, (cat, *_) in GROUPS.items() for n in sorted(cat)]


@pytest.mark.parametrize("group,name", CASES)
def test_indexing_matches_neural_tangents(group, name):
    catalogue, _, _, kwargs = GROUPS[group]
    with x64():
        kernel_fn = build(stax, catalogue[name])[2]
        x1, x2 = jnp.asarray(REF[f"{group}/x1"]), jnp.asarray(REF[f"{group}/x2"])
        # one compilation per network is much cheaper than dozens of eager ones
        k12, k11 = jax.jit(lambda a, b: (kernel_fn(a, b, get=("nngp", "ntk"), **kwargs),
                                         kernel_fn(a, None, get=("nngp", "ntk"), **kwargs)))(x1, x2)
        assert k12.nngp.dtype == jnp.float64
        for tag, k in (("12", k12), ("11", k11)):
            for f in ("nngp", "ntk"):
                ref = REF[f"{group}/{name}/{f}{tag}"]
                assert getattr(k, f).shape == ref.shape
                assert_close(getattr(k, f), ref, tol("nt", "float64"), f"{f}{tag}")
