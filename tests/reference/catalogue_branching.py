"""Branching architectures (FanOut, FanInSum, FanInProd, FanInConcat, parallel) for nt parity.

``GROUPS`` maps a group name to (catalogue, x1 shape, x2 shape, kernel_fn keyword arguments).
"""


def _dense(n, W_std=1.0, b_std=0.1, param="ntk"):
    return ("Dense", {"out_dim": n, "W_std": W_std, "b_std": b_std, "parameterization": param})


def _residual(width, act, param, branches=2):
    block = [(act, {}), _dense(width, 1.3, 0.2, param)]
    layers = [[("Identity", {})]] + [block] * (branches - 1)
    return [("FanOut", {"num": branches}), ("parallel", {"layers": layers}), ("FanInSum", {})]


FLAT = {}
for param in ("ntk", "standard"):
    for act in ("Relu", "Erf"):
        FLAT[f"residual-{param}-{act}"] = (
            [_dense(32, 1.2, 0.1, param)] + _residual(32, act, param) + [(act, {})]
            + [_dense(3, 1.0, 0.2, param)])
    FLAT[f"residual2x3-{param}"] = (
        [_dense(16, 1.5, None, param)] + _residual(16, "Relu", param, 3)
        + _residual(16, "Erf", param) + [("Relu", {}), _dense(2, 1.1, 0.3, param)])
    FLAT[f"prod-{param}"] = [
        ("FanOut", {"num": 3}),
        ("parallel", {"layers": [[_dense(8, 1.3, 0.2, param)],
                                 [_dense(8, 1.0, None, param), ("Erf", {})],
                                 [_dense(8, 0.7, 0.4, param), ("Relu", {}),
                                  _dense(8, 1.1, 0.0, param)]]}),
        ("FanInProd", {}), _dense(4, 1.2, 0.1, param)]
    FLAT[f"concat-{param}"] = [
        ("FanOut", {"num": 3}),
        ("parallel", {"layers": [[_dense(16, 1.3, 0.2, param)],
                                 [_dense(32, 1.0, None, param), ("Relu", {}),
                                  _dense(8, 1.4, 0.1, param)],
                                 [("Identity", {})]]}),
        ("FanInConcat", {}), _dense(4, 1.2, 0.1, param)]
    FLAT[f"concat-equal-{param}"] = [
        _dense(12, 1.1, 0.1, param), ("Relu", {}),
        ("FanOut", {"num": 2}),
        ("parallel", {"layers": [[_dense(12, 1.3, 0.2, param)], [_dense(12, 0.8, None, param)]]}),
        ("FanInConcat", {"axis": 1}), _dense(4, 1.2, 0.1, param)]

SPATIAL = {
    "concat-spatial": [
        _dense(8, 1.2, 0.1), ("FanOut", {"num": 2}),
        ("parallel", {"layers": [[_dense(8, 1.3, 0.2)], [("Relu", {}), _dense(8, 0.9, None)]]}),
        ("FanInConcat", {"axis": 1}), ("Relu", {}), _dense(3, 1.1, 0.1)],
    "concat-spatial-channel": [
        _dense(8, 1.2, 0.1), ("FanOut", {"num": 2}),
        ("parallel", {"layers": [[_dense(4, 1.3, 0.2)], [("Erf", {}), _dense(8, 0.9, None)]]}),
        ("FanInConcat", {"axis": -1}), _dense(3, 1.1, 0.1)],
    "residual-spatial": [_dense(8, 1.2, 0.1)] + _residual(8, "Relu", "ntk") + [_dense(3)],
    "prod-spatial": [
        ("FanOut", {"num": 2}),
        ("parallel", {"layers": [[_dense(8, 1.3, 0.2)], [_dense(8), ("Relu", {})]]}),
        ("FanInProd", {}), _dense(2)],
}

GROUPS = {
    "flat": (FLAT, (5, 7), (3, 7), {}),
    "spatial": (SPATIAL, (4, 3, 5), (2, 3, 5), {}),
    "spatial_diag": (SPATIAL, (4, 3, 5), (2, 3, 5), {"diagonal_spatial": True}),
}
