"""Convolutional architectures (issue 4): 1-D and 2-D convolutions with every padding, strides,
non-square images, transposed and locally connected convolutions, window and global pooling,
Flatten, both parameterizations, and diagonal_spatial True/False.

Each entry: name -> (input group, spec, kernel_fn keyword arguments). Inputs are small so the
parity test is fast; x1 and x2 have different batch sizes.
"""

import numpy as np

INPUTS = {"img": ((3, 6, 5, 2), (2, 6, 5, 2)), "seq": ((3, 7, 2), (2, 7, 2)),
          "wrn": ((2, 8, 8, 3), (2, 8, 8, 3))}


def _conv(kind, out, filt, param, padding="VALID", strides=None, W_std=1.3, b_std=0.2):
    kw = {"out_chan": out, "filter_shape": filt, "padding": padding, "W_std": W_std,
          "b_std": b_std, "parameterization": param}
    if strides is not None:
        kw["strides"] = strides
    return (kind, kw)


def _dense(param, out=2):
    return ("Dense", {"out_dim": out, "W_std": 1.1, "b_std": 0.1, "parameterization": param})


def _specs(param):
    c = lambda *a, **k: _conv("Conv", *a, param=param, **k)  # noqa: E731
    relu, erf = ("Relu", {}), ("Erf", {"a": 1.2, "b": 0.8, "c": 0.1})
    return {
        # 2-D, one per padding, strides, readouts
        "valid-flatten": ("img", [c(4, (3, 2)), relu, c(3, (2, 2), strides=(2, 1)), relu,
                                  ("Flatten", {}), _dense(param)], {}),
        "same-gap": ("img", [c(4, (3, 3), padding="SAME"), erf,
                             c(5, (3, 3), padding="SAME", strides=(2, 2), b_std=None),
                             ("GlobalAvgPool", {}), _dense(param)], {}),
        "circular-gsp": ("img", [c(4, (3, 2), padding="CIRCULAR"), relu,
                                 c(3, (2, 3), padding="CIRCULAR", strides=(2, 1)),
                                 ("LeakyRelu", {"alpha": 0.1}), ("GlobalSumPool", {}),
                                 _dense(param)], {}),
        "raw-spatial": ("img", [c(4, (3, 3), padding="SAME"), relu, c(3, (3, 2))], {}),
        "raw-spatial-diag": ("img", [c(4, (3, 3), padding="SAME"), relu, c(3, (3, 2))],
                             {"diagonal_spatial": True}),
        "flatten-diag": ("img", [c(4, (3, 2), padding="SAME"), relu,
                                 c(3, (2, 2), padding="CIRCULAR", strides=(2, 1)), ("Abs", {}),
                                 c(3, (2, 2)), relu, ("Flatten", {}), _dense(param)],
                         {"diagonal_spatial": True}),
        "fullbatch": ("img", [c(4, (3, 3), padding="SAME"), relu, c(3, (2, 2), strides=(2, 2)),
                              relu, ("Flatten", {}), _dense(param)], {"diagonal_batch": False}),
        # pooling
        "avgpool-valid": ("img", [c(4, (3, 3), padding="SAME"), relu,
                                  ("AvgPool", {"window_shape": (2, 2), "strides": (2, 2)}),
                                  ("Flatten", {}), _dense(param)], {}),
        "avgpool-same": ("img", [c(4, (2, 2), padding="SAME"), relu,
                                 ("AvgPool", {"window_shape": (3, 2), "strides": (2, 1),
                                              "padding": "SAME"}),
                                 ("Flatten", {}), _dense(param)], {}),
        "avgpool-same-norm": ("img", [c(4, (2, 2), padding="SAME"), relu,
                                      ("AvgPool", {"window_shape": (3, 2), "strides": (2, 1),
                                                   "padding": "SAME", "normalize_edges": True}),
                                      c(2, (2, 2)), ("GlobalAvgPool", {}), _dense(param)], {}),
        "avgpool-circular": ("img", [c(4, (2, 2)), relu,
                                     ("AvgPool", {"window_shape": (2, 3), "strides": (1, 2),
                                                  "padding": "CIRCULAR"}),
                                     ("Flatten", {}), _dense(param)], {}),
        "sumpool": ("img", [c(4, (2, 2), padding="SAME"), relu,
                            ("SumPool", {"window_shape": (2, 2), "padding": "SAME"}),
                            ("SumPool", {"window_shape": (3, 2), "strides": (2, 2)}),
                            ("Flatten", {}), _dense(param)], {}),
        # transposed and locally connected
        "transpose-valid": ("img", [c(3, (2, 2)), relu,
                                    _conv("ConvTranspose", 3, (3, 2), param, strides=(2, 1)),
                                    relu, ("GlobalAvgPool", {}), _dense(param)], {}),
        "transpose-same": ("img", [_conv("ConvTranspose", 3, (2, 3), param, padding="SAME",
                                         strides=(1, 2)), relu,
                                   _conv("ConvTranspose", 2, (3, 3), param, padding="SAME")],
                           {}),
        "transpose-circular": ("img", [_conv("ConvTranspose", 3, (3, 2), param,
                                             padding="CIRCULAR", strides=(2, 1)), relu,
                                       ("Flatten", {}), _dense(param)], {}),
        "transpose-diag": ("img", [_conv("ConvTranspose", 3, (3, 2), param, padding="SAME",
                                         strides=(2, 1)), relu, ("Flatten", {}),
                                   _dense(param)], {"diagonal_spatial": True}),
        "local": ("img", [_conv("ConvLocal", 3, (3, 2), param), relu,
                          _conv("ConvLocal", 3, (2, 2), param, padding="SAME"), relu,
                          ("Flatten", {}), _dense(param)], {}),
        "local-raw": ("img", [c(3, (2, 2), padding="CIRCULAR"), relu,
                              _conv("ConvLocal", 3, (2, 2), param, strides=(2, 1))], {}),
        "local-diag": ("img", [_conv("ConvLocal", 3, (3, 2), param, padding="CIRCULAR"), relu,
                               c(3, (2, 2)), ("Flatten", {}), _dense(param)],
                       {"diagonal_spatial": True}),
        "local-pool": ("img", [c(3, (2, 2)), relu,
                               _conv("ConvLocal", 3, (2, 2), param, padding="SAME"), relu,
                               ("AvgPool", {"window_shape": (2, 2)}), ("GlobalAvgPool", {}),
                               _dense(param)], {}),
        # 1-D
        "1d-valid": ("seq", [c(4, (3,)), relu, c(3, (2,), strides=(2,)), ("Flatten", {}),
                             _dense(param)], {}),
        "1d-same-pool": ("seq", [c(4, (3,), padding="SAME"), erf,
                                 ("AvgPool", {"window_shape": (2,), "strides": (2,),
                                              "padding": "SAME"}),
                                 c(2, (2,), padding="CIRCULAR"), relu, ("GlobalAvgPool", {}),
                                 _dense(param)], {}),
        "1d-circular-diag": ("seq", [c(4, (4,), padding="CIRCULAR", strides=(2,)), relu,
                                     c(4, (2,), padding="SAME"), ("Flatten", {}),
                                     _dense(param)], {"diagonal_spatial": True}),
        "1d-transpose": ("seq", [_conv("ConvTranspose", 3, (3,), param, strides=(2,)), relu,
                                 _conv("ConvTranspose", 3, (2,), param, padding="CIRCULAR",
                                       strides=(3,))], {}),
    }


def wide_resnet_spec(block_size, k, W_std, b_std, param):
    """The Wide-ResNet of neural-tangents' README (pre-activation blocks, projection shortcut
    in the first block of each group), with global average pooling for its AvgPool + Flatten."""
    def conv(ch, strides):
        return _conv("Conv", ch, (3, 3), param, padding="SAME", strides=strides, W_std=W_std,
                     b_std=b_std)

    spec = [conv(16, (1, 1))]
    for ch, strides in ((16, (1, 1)), (32, (2, 2)), (64, (2, 2))):
        for i in range(block_size):
            main = [("Relu", {}), conv(int(ch * k), strides if i == 0 else (1, 1)), ("Relu", {}),
                    conv(int(ch * k), (1, 1))]
            short = [conv(int(ch * k), strides)] if i == 0 else [("Identity", {})]
            spec += [("FanOut", {"num": 2}), ("parallel", {"layers": [main, short]}),
                     ("FanInSum", {})]
    return spec + [("GlobalAvgPool", {}), ("Dense", {"out_dim": 10, "W_std": 1.0, "b_std": 0.0,
                                                     "parameterization": param})]


WRN_ARGS = {"ntk": dict(block_size=2, k=0.25, W_std=1.3, b_std=0.1),
            "standard": dict(block_size=1, k=0.25, W_std=1.2, b_std=0.2)}

CATALOGUE = {}
for _param in ("ntk", "standard"):
    for _name, _entry in _specs(_param).items():
        CATALOGUE[f"{_param}-{_name}"] = _entry
    CATALOGUE[f"{_param}-wide-resnet"] = ("wrn", wide_resnet_spec(param=_param,
                                                                  **WRN_ARGS[_param]), {})


def inputs(seed=0):
    """Deterministic float64 inputs for each group: {group: (x1, x2)}."""
    rng = np.random.RandomState(seed)
    return {g: (rng.randn(*s1), rng.randn(*s2)) for g, (s1, s2) in INPUTS.items()}


def run(stax, jnp, to_arrays, seed=0):
    """Evaluates every entry on (x1, x2) and on (x1, None); ``to_arrays(kernel)`` returns
    (nngp, ntk) in infwidth's layout. Returns a flat dict of arrays (with the inputs)."""
    from _catalogue import build

    xs = inputs(seed)
    out = {}
    for g, (x1, x2) in xs.items():
        out[f"{g}/x1"], out[f"{g}/x2"] = x1, x2
    for name, (group, spec, kw) in CATALOGUE.items():
        kernel_fn = build(stax, spec)[2]
        x1, x2 = (jnp.asarray(x) for x in xs[group])
        for tag, k in (("12", kernel_fn(x1, x2, **kw)), ("11", kernel_fn(x1, None, **kw))):
            nngp, ntk = to_arrays(k)
            out[f"{name}/nngp{tag}"] = np.asarray(nngp)
            out[f"{name}/ntk{tag}"] = np.asarray(ntk)
    return out
