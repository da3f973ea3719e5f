"""nt-stax specs equivalent to infwidth.architectures builders (dense_resnet, wide_resnet,
transformer); ``BUILDERS`` holds the builder keyword arguments for the same networks."""

W, B = 1.3, 0.1


def _dense(n, W_std=W, b_std=B):
    return ("Dense", {"out_dim": n, "W_std": W_std, "b_std": b_std})


def _res(branch, shortcut=(("Identity", {}),)):
    return [("FanOut", {"num": 2}), ("parallel", {"layers": [list(shortcut), branch]}),
            ("FanInSum", {})]


def dense_resnet(depth, width, c=1.0):
    spec = [_dense(width)]
    for _ in range(depth):  # Scale(c) after Dense(W, b) is Dense(c W, c b)
        spec += _res([("Relu", {}), _dense(width, W * c, B * c)])
    return spec + [("Relu", {}), _dense(1)]


def _conv(ch, strides=None):
    return ("Conv", {"out_chan": ch, "filter_shape": (3, 3), "strides": strides,
                     "padding": "SAME", "W_std": W, "b_std": B})


def wide_resnet(block_size, k):
    spec = [_conv(16)]
    for g, ch in enumerate((16 * k, 32 * k, 64 * k)):
        s = (1, 1) if g == 0 else (2, 2)
        main = [("Relu", {}), _conv(ch, s), ("Relu", {}), _conv(ch)]
        spec += _res(main, [_conv(ch, s)])
        for _ in range(block_size - 1):
            spec += _res([("Relu", {}), _conv(ch, (1, 1)), ("Relu", {}), _conv(ch)])
    return spec + [("GlobalAvgPool", {}), _dense(10, 1.0, 0.0)]  # nt README's readout


def transformer(depth, n_chan, n_heads):
    attn = ("GlobalSelfAttention", {
        "n_chan_out": n_chan, "n_chan_key": n_chan // n_heads, "n_chan_val": n_chan // n_heads,
        "n_heads": n_heads, "W_key_std": W, "W_query_std": W, "W_value_std": W,
        "W_out_std": 1.0, "b_std": B, "pos_emb_type": "SUM"})
    spec = [_dense(n_chan)]
    for _ in range(depth):
        spec += _res([("LayerNorm", {}), attn])
        spec += _res([("LayerNorm", {}), _dense(4 * n_chan), ("Relu", {}), _dense(n_chan)])
    return spec + [("LayerNorm", {}), ("GlobalAvgPool", {}), _dense(1)]


# name -> (builder name, builder kwargs, nt spec, x1 shape, x2 shape)
CASES = {
    "dense_resnet": ("dense_resnet", {"depth": 4, "width": 16, "W_std": W, "b_std": B},
                     dense_resnet(4, 16), (4, 5), (3, 5)),
    "dense_resnet-scaled": ("dense_resnet", {"depth": 9, "width": 16, "W_std": W, "b_std": B,
                                             "branch_scale": "1/sqrt(depth)"},
                            dense_resnet(9, 16, 9**-0.5), (4, 5), (3, 5)),
    "wide_resnet": ("wide_resnet", {"block_size": 2, "k": 1, "W_std": W, "b_std": B},
                    wide_resnet(2, 1), (2, 4, 4, 3), (1, 4, 4, 3)),
    "transformer": ("transformer", {"depth": 2, "n_chan": 16, "n_heads": 2, "W_std": W,
                                    "b_std": B},
                    transformer(2, 16, 2), (3, 4, 5), (2, 4, 5)),
}
GROUPS = {name: ({name: c[2]}, c[3], c[4], {}) for name, c in CASES.items()}
