"""Networks and padded inputs for the masking parity tests: each builder takes a library's
``stax`` and returns ``(layer, input_name)``; the same code builds the network in
neural-tangents (make_masking.py) and in infwidth (tests/test_masking.py). Every input is
drawn from a fixed seed, and the padded entries carry ``MASK`` (``NaN`` for the 'nan' input)."""

import numpy as np

MASK = -1e9


def inputs(seed=7):
    rng = np.random.RandomState(seed)
    out = {}
    a, b = rng.randn(3, 6, 2), rng.randn(2, 6, 2)
    a[0, 4:], a[2, 5:], b[1, 3:] = MASK, MASK, MASK  # padded sequences of lengths 4, 5, 3
    out["seq"] = (a, b)
    a, b = rng.randn(3, 8, 2), rng.randn(2, 8, 2)
    a[1, 5:], b[0, 6:] = MASK, MASK
    a[2, 2, 1] = MASK  # one channel of one position: the position stays present
    out["seq8"] = (a, b)
    a, b = rng.randn(3, 6, 2), rng.randn(2, 6, 2)
    a[0, 4:], b[1, 2:] = np.nan, np.nan
    out["nan"] = (a, b)
    a, b = rng.randn(2, 4, 4, 2), rng.randn(3, 4, 4, 2)
    a[0, 3:, :], a[1, :, 2:], b[2, 2:, 1:] = MASK, MASK, MASK  # padded images
    out["img"] = (a, b)
    return out


def patterns(seed=8):
    """Adjacency matrices (N, T, T) of random graphs on the 6 nodes of 'seq'."""
    rng = np.random.RandomState(seed)
    return tuple((rng.rand(n, 6, 6) < 0.4).astype(np.float64) for n in (3, 2))


def _catalogue():
    c = {}
    c["conv_pool_dense"] = lambda stax: (stax.serial(
        stax.Conv(3, (2,), padding="SAME", b_std=0.1), stax.Relu(), stax.GlobalAvgPool(),
        stax.Dense(1, b_std=0.2)), "seq")
    c["nan_constant"] = lambda stax: (stax.serial(
        stax.Conv(3, (3,), padding="SAME"), stax.Erf(), stax.GlobalAvgPool(),
        stax.Dense(1)), "nan")
    c["conv_valid_strided_flatten"] = lambda stax: (stax.serial(
        stax.Conv(4, (3,), strides=(2,), padding="VALID", W_std=1.3, b_std=0.2), stax.Erf(),
        stax.Conv(2, (2,), padding="SAME"), stax.Relu(), stax.Flatten(), stax.Dense(1)), "seq8")
    c["window_pools"] = lambda stax: (stax.serial(
        stax.Dense(3, b_std=0.1), stax.Relu(), stax.AvgPool((2,), strides=(2,), padding="SAME"),
        stax.Dense(2), stax.Relu(), stax.SumPool((2,)), stax.GlobalSumPool()), "seq8")
    c["residual"] = lambda stax: (stax.serial(
        stax.Dense(4, b_std=0.1), stax.FanOut(2),
        stax.parallel(stax.serial(stax.Relu(), stax.Dense(4, b_std=0.1)), stax.Identity()),
        stax.FanInSum(), stax.Relu(), stax.GlobalAvgPool()), "seq")
    c["concat_channels"] = lambda stax: (stax.serial(
        stax.Dense(3), stax.FanOut(2),
        stax.parallel(stax.Dense(2, b_std=0.3), stax.serial(stax.Relu(), stax.Dense(3))),
        stax.FanInConcat(-1), stax.Dense(2), stax.Relu(), stax.GlobalAvgPool()), "seq")
    c["concat_positions"] = lambda stax: (stax.serial(
        stax.Dense(3), stax.FanOut(2),
        stax.parallel(stax.Dense(3), stax.Conv(3, (2,), padding="SAME", b_std=0.2)),
        stax.FanInConcat(1), stax.Relu(), stax.GlobalAvgPool()), "seq")
    c["product"] = lambda stax: (stax.serial(
        stax.Dense(3), stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Dense(3, b_std=0.3)),
        stax.FanInProd(), stax.GlobalAvgPool()), "seq")
    c["attention"] = lambda stax: (stax.serial(
        stax.Dense(3, b_std=0.1), stax.GlobalSelfAttention(4, 3, 3, 2, b_std=0.1),
        stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1)), "seq")
    c["attention_pos_emb"] = lambda stax: (stax.serial(
        stax.Dense(3), stax.GlobalSelfAttention(4, 3, 3, 2, pos_emb_type="SUM",
                                                W_pos_emb_std=0.8, val_pos_emb=True),
        stax.Relu(), stax.GlobalAvgPool()), "seq8")
    c["layer_norm"] = lambda stax: (stax.serial(
        stax.Dense(3, b_std=0.2), stax.LayerNorm(axis=(1, 2)), stax.Relu(), stax.Dense(2),
        stax.LayerNorm(), stax.GlobalAvgPool()), "seq")
    c["conv2d_image"] = lambda stax: (stax.serial(
        stax.Conv(3, (2, 2), padding="SAME", b_std=0.1), stax.Relu(), stax.AvgPool((2, 2)),
        stax.Conv(2, (2, 2), padding="VALID"), stax.Relu(), stax.Flatten(), stax.Dense(1)),
        "img")
    c["conv_transpose"] = lambda stax: (stax.serial(
        stax.ConvTranspose(3, (2,), strides=(2,), padding="SAME", b_std=0.1), stax.Relu(),
        stax.GlobalAvgPool()), "seq")
    c["conv_local"] = lambda stax: (stax.serial(
        stax.ConvLocal(3, (2,), padding="SAME", b_std=0.1), stax.Relu(), stax.Dense(2),
        stax.GlobalAvgPool()), "seq")
    c["repeat_dropout"] = lambda stax: (stax.serial(
        stax.Dense(3, b_std=0.1), stax.repeat(stax.serial(stax.Relu(), stax.Dense(3)), 2),
        stax.Dropout(0.5, mode="test"), stax.GlobalAvgPool()), "seq")
    c["image_resize"] = lambda stax: (stax.serial(
        stax.Dense(3), stax.ImageResize((-1, 3, 3, -1), "linear"), stax.Relu(),
        stax.GlobalAvgPool()), "img")
    c["aggregate"] = lambda stax: (stax.serial(
        stax.Dense(3, b_std=0.1), stax.Aggregate(), stax.Relu(), stax.Dense(2),
        stax.GlobalAvgPool()), "seq")
    return c


CATALOGUE = _catalogue()
