"""Aggregate (DENSE and SPARSE, 1 and 2 vertex axes, a subset of axes) agrees with
neural-tangents 0.6.5 in float64: kernels (relative error < 1e-6) and apply_fn outputs.

Reference values: tests/reference/graph.npz (tests/reference/make_graph.py).
"""

import sys

import jax
import jax.numpy as jnp
import pytest
from helpers import REFERENCE_DIR, assert_close, load_reference, tol, x64

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from _catalogue import build  # noqa: E402
from catalogue_graph import CASES  # noqa: E402

REF = load_reference("graph")


@pytest.mark.parametrize("name", sorted(CASES))
def test_graph_matches_neural_tangents(name):
    spec = CASES[name][0]
    with x64():
        kernel_fn = build(stax, spec)[2]
        x1, x2, p1, p2 = (jnp.asarray(REF[f"{name}/{v}"]) for v in ("x1", "x2", "p1", "p2"))

        @jax.jit
        def kernels(x1, x2, p1, p2):
            get = ("nngp", "ntk")
            return (kernel_fn(x1, x2, get=get, pattern=(p1, p2)),
                    kernel_fn(x1, None, get=get, pattern=(p1, None)),
                    kernel_fn(x1, None, get=get, pattern=(p1, p1)))

        k12, k11, k11b = kernels(x1, x2, p1, p2)
        for tag, k in (("12", k12), ("11", k11), ("11", k11b)):
            for f in ("nngp", "ntk"):
                assert_close(getattr(k, f), REF[f"{name}/{f}{tag}"], tol("nt", "float64"),
                             f"{f}{tag}")
        agg = [s for s in spec if s[0] == "Aggregate"][0][1]
        y = stax.Aggregate(**agg)[1]((), x1, pattern=p1)
        assert_close(y, REF[f"{name}/apply"], tol("exact", "float64"), "apply")
