"""GlobalSelfAttention kernels (every mechanism, both scalings, positional embeddings) agree
with neural-tangents 0.6.5 in float64 (relative error < 1e-6), sequences and images,
diagonal and full batch.

Reference values: tests/reference/attention.npz (tests/reference/make_groups.py).
"""

import sys

import pytest
from helpers import REFERENCE_DIR, check_group_against_reference, group_cases, load_reference

from infwidth import stax

sys.path.insert(0, REFERENCE_DIR)
from catalogue_attention import GROUPS  # noqa: E402

REF = load_reference("attention")


@pytest.mark.parametrize("group,name", group_cases(GROUPS))
def test_attention_matches_neural_tangents(group, name):
    check_group_against_reference(stax, GROUPS, REF, group, name)
