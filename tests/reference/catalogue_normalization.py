"""LayerNorm and Dropout architectures for nt parity; ``GROUPS`` as in catalogue_branching."""


def _dense(n, W_std=1.3, b_std=0.1, param="ntk"):
    return ("Dense", {"out_dim": n, "W_std": W_std, "b_std": b_std, "parameterization": param})


FLAT = {}
for param in ("ntk", "standard"):
    FLAT[f"layernorm-{param}"] = [_dense(16, 1.5, 0.3, param), ("LayerNorm", {}), ("Relu", {}),
                                  _dense(8, 1.2, 0.1, param), ("LayerNorm", {"eps": 0.1}),
                                  ("Erf", {}), _dense(2, 1.0, 0.2, param)]
    FLAT[f"dropout-train-{param}"] = [_dense(16, 1.5, 0.3, param), ("Relu", {}),
                                      ("Dropout", {"rate": 0.7}), _dense(8, 1.2, 0.1, param),
                                      ("Erf", {}), ("Dropout", {"rate": 0.4}),
                                      _dense(2, 1.0, 0.2, param)]
    FLAT[f"dropout-test-{param}"] = [_dense(16, 1.5, 0.3, param), ("Relu", {}),
                                     ("Dropout", {"rate": 0.7, "mode": "test"}),
                                     _dense(2, 1.0, 0.2, param)]
FLAT["layernorm-batch"] = [_dense(16, 1.5, 0.3), ("LayerNorm", {"axis": (0, 1)}), ("Relu", {}),
                           _dense(2)]
FLAT["dropout-last"] = [_dense(16, 1.5, 0.3), ("Relu", {}), _dense(4), ("Dropout", {"rate": 0.5})]

SPATIAL = {
    "layernorm-channel": [_dense(8, 1.5, 0.3), ("LayerNorm", {}), ("Relu", {}), _dense(3)],
    "layernorm-all": [_dense(8, 1.5, 0.3), ("LayerNorm", {"axis": (1, 2), "eps": 0.01}),
                      ("Relu", {}), _dense(3)],
    "dropout": [_dense(8, 1.5, 0.3), ("Relu", {}), ("Dropout", {"rate": 0.6}), _dense(3),
                ("Dropout", {"rate": 0.8})],
}

GROUPS = {
    "flat": (FLAT, (5, 7), (3, 7), {}),
    "flat_fullbatch": ({k: FLAT[k] for k in ("layernorm-ntk", "dropout-train-standard")},
                       (5, 7), (3, 7), {"diagonal_batch": False}),
    "spatial": (SPATIAL, (4, 3, 5), (2, 3, 5), {}),
    "spatial_diag": (SPATIAL, (4, 3, 5), (2, 3, 5), {"diagonal_spatial": True}),
}
