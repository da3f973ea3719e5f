"""Branching kernels (FanOut, FanInSum/Prod/Concat, parallel) agree with neural-tangents 0.6.5
in float64 (relative error < 1e-6), flat and spatial inputs, full and diagonal spatial layouts.

Reference values: tests/reference/branching.npz (tests/reference/make_groups.py).
"""

import sys

import pytest
from helpers import REFERENCE_DIR, check_group_against_reference, group_cases, load_reference

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from catalogue_branching import GROUPS  # noqa: E402

REF = load_reference("branching")


@pytest.mark.parametrize("group,name", group_cases(GROUPS))
def test_branching_matches_neural_tangents(group, name):
    check_group_against_reference(stax, GROUPS, REF, group, name)
