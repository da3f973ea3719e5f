"""neural-tangents' option enums for string arguments: `Padding`, `PositionalEmbedding`,
`AttentionMechanism`, `AggregateImplementation`.

Their members are strings (``Padding.SAME == 'SAME'``), so a layer accepts either the member or
its name: ``Conv(8, (3, 3), padding=Padding.SAME)`` is ``Conv(8, (3, 3), padding='SAME')``.

>>> from infwidth import stax
>>> stax.Padding.CIRCULAR == 'CIRCULAR', stax.AttentionMechanism('RELU').name
(True, 'RELU')
"""

import enum


class Padding(enum.StrEnum):
    """Padding of `Conv`, `ConvTranspose`, `ConvLocal` and the pooling layers."""

    CIRCULAR = "CIRCULAR"
    SAME = "SAME"
    VALID = "VALID"


class PositionalEmbedding(enum.StrEnum):
    """``pos_emb_type`` of `GlobalSelfAttention`."""

    NONE = "NONE"
    SUM = "SUM"
    CONCAT = "CONCAT"


class AttentionMechanism(enum.StrEnum):
    """``attention_mechanism`` of `GlobalSelfAttention`."""

    SOFTMAX = "SOFTMAX"
    IDENTITY = "IDENTITY"
    ABS = "ABS"
    RELU = "RELU"


class AggregateImplementation(enum.StrEnum):
    """``implementation`` of `Aggregate`: a dense adjacency tensor or a sparse edge list."""

    DENSE = "DENSE"
    SPARSE = "SPARSE"
