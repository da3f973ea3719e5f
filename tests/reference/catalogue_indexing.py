"""Index / Slice architectures for nt parity; ``GROUPS`` as in catalogue_branching."""


def _dense(n, W_std=1.3, b_std=0.1):
    return ("Dense", {"out_dim": n, "W_std": W_std, "b_std": b_std})


def _conv1(n, W_std=1.3, b_std=0.1):
    """Dense at every position of an image (infwidth's Dense takes at most one spatial axis)."""
    return ("Conv", {"out_chan": n, "filter_shape": (1, 1), "W_std": W_std, "b_std": b_std})


SEQ = {
    "last-token": [_dense(8, 1.4, 0.2), ("Relu", {}), ("Index", {"idx": (slice(None), -1)}),
                   _dense(2)],
    "window-then-token": [_dense(8, 1.4, 0.2), ("Relu", {}),
                          ("Index", {"idx": (slice(None), slice(1, 4))}), _dense(8),
                          ("Erf", {}), ("Index", {"idx": (Ellipsis, 0, slice(None))}),
                          _dense(2)],
    "batch-slice": [_dense(8), ("Index", {"idx": (slice(0, 2), slice(None, None, -1))}),
                    ("Relu", {}), _dense(2)],
}
IMAGE = {
    "strided": [_conv1(8, 1.4, 0.2), ("Relu", {}),
                ("Index", {"idx": (slice(None), slice(1, None), slice(None, None, 2))}),
                _conv1(3)],
    "row": [_conv1(8), ("Index", {"idx": (Ellipsis, 1, slice(None))}), ("Relu", {}),
            _dense(2)],
}
GROUPS = {
    "seq": (SEQ, (3, 5, 4), (2, 5, 4), {}),
    "image": (IMAGE, (3, 3, 4, 2), (2, 3, 4, 2), {}),
    "image_diag": (IMAGE, (3, 3, 4, 2), (2, 3, 4, 2), {"diagonal_spatial": True}),
}
