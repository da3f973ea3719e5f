"""GlobalSelfAttention architectures for nt parity; ``GROUPS`` as in catalogue_branching."""


def decay(d):
    """A positional-embedding covariance decay, written to work on numpy and JAX arrays."""
    return 1.0 / (1.0 + 0.5 * d)


def _dense(n, W_std=1.3, b_std=0.1):
    return ("Dense", {"out_dim": n, "W_std": W_std, "b_std": b_std})


def _conv1(n, W_std=1.3, b_std=0.1):
    """Dense at every position of an image (infwidth's Dense takes at most one spatial axis)."""
    return ("Conv", {"out_chan": n, "filter_shape": (1, 1), "W_std": W_std, "b_std": b_std})


def _attn(**kw):
    base = {"n_chan_out": 16, "n_chan_key": 8, "n_chan_val": 8, "n_heads": 2}
    return ("GlobalSelfAttention", {**base, **kw})


def _net(**kw):
    return [_dense(16, 1.4, 0.2), _attn(**kw), ("Relu", {}), _dense(3)]


SEQ = {}
for mech in ("SOFTMAX", "IDENTITY", "ABS", "RELU"):
    SEQ[f"linear-{mech}"] = _net(attention_mechanism=mech, W_key_std=1.3, W_query_std=0.8,
                                 W_value_std=1.2, W_out_std=0.9, b_std=0.3)
SEQ["sqrt-IDENTITY"] = _net(linear_scaling=False, attention_mechanism="IDENTITY",
                            W_key_std=1.1, W_value_std=1.3, b_std=0.2)
SEQ["sqrt-IDENTITY-nobias"] = _net(linear_scaling=False, attention_mechanism="IDENTITY")
for pos in ("SUM", "CONCAT"):
    for val in (False, True):
        SEQ[f"linear-{pos}-val{val}"] = _net(pos_emb_type=pos, val_pos_emb=val,
                                             W_pos_emb_std=0.7, b_std=0.1)
        SEQ[f"sqrt-{pos}-val{val}"] = _net(pos_emb_type=pos, val_pos_emb=val,
                                           linear_scaling=False, attention_mechanism="IDENTITY",
                                           W_pos_emb_std=1.2)
    SEQ[f"linear-{pos}-decay"] = _net(pos_emb_type=pos, pos_emb_decay_fn=decay,
                                      pos_emb_p_norm=1.5, attention_mechanism="RELU")
SEQ["linear-CONCAT-nchan"] = _net(pos_emb_type="CONCAT", n_chan_pos_emb=5, val_pos_emb=True)
SEQ["two-layers"] = [_dense(16, 1.4, 0.2), _attn(b_std=0.2), ("Erf", {}),
                     _attn(attention_mechanism="IDENTITY", pos_emb_type="SUM"), ("Relu", {}),
                     _dense(2)]

def _net2d(**kw):
    return [_conv1(16, 1.4, 0.2), _attn(**kw), ("Relu", {}), _conv1(3)]


IMAGE = {
    "softmax-2d": _net2d(b_std=0.1),
    "decay-2d": _net2d(pos_emb_type="SUM", pos_emb_decay_fn=decay, pos_emb_p_norm=1),
}

GROUPS = {
    "seq": (SEQ, (3, 5, 6), (2, 5, 6), {}),
    "seq_fullbatch": ({k: SEQ[k] for k in ("linear-SOFTMAX", "sqrt-CONCAT-valTrue")},
                      (3, 5, 6), (2, 5, 6), {"diagonal_batch": False}),
    "image": (IMAGE, (2, 3, 2, 4), (3, 3, 2, 4), {}),
}
