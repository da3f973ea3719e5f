"""nt-stax specs of the U-Net that infwidth.architectures.unet builds (Ronneberger et al. 2015,
arXiv:1505.04597), written layer by layer; ``CASES`` holds the builder keyword arguments and the
kernel_fn keywords for the same networks."""

W, B = 1.3, 0.1
SHAPE1, SHAPE2 = (2, 4, 4, 3), (1, 4, 4, 3)


def _conv(ch, shape=(3, 3), strides=None, name="Conv", param="ntk"):
    return (name, {"out_chan": ch, "filter_shape": shape, "strides": strides, "padding": "SAME",
                   "W_std": W, "b_std": B, "parameterization": param})


def unet_spec(depth, width, n_conv, mult, downsample, readout, param="ntk"):
    ch = [width * mult**level for level in range(depth + 1)]

    def block(c):
        return [_conv(c, param=param), ("Relu", {})] * n_conv

    body = block(ch[depth])
    for level in reversed(range(depth)):
        if downsample == "avgpool":
            down = [("AvgPool", {"window_shape": (2, 2), "strides": (2, 2)})]
        else:
            down = [_conv(ch[level + 1], (2, 2), (2, 2), param=param), ("Relu", {})]
        up = _conv(ch[level], (2, 2), (2, 2), "ConvTranspose", param)
        body = block(ch[level]) + [
            ("FanOut", {"num": 2}),
            ("parallel", {"layers": [[("Identity", {})], down + body + [up]]}),
            ("FanInConcat", {})] + block(ch[level])
    if readout == "pixel":
        return body + [_conv(3, (1, 1), param=param)]
    return body + [("GlobalAvgPool", {}),
                   ("Dense", {"out_dim": 3, "W_std": W, "b_std": B, "parameterization": param})]


def _kwargs(depth, width, n_conv, mult, downsample, readout, param="ntk"):
    return {"depth": depth, "width": width, "n_conv": n_conv, "channel_multiplier": mult,
            "downsample": downsample, "readout": readout, "out_dim": 3, "W_std": W, "b_std": B,
            "parameterization": param}


_ARGS = {  # name -> (depth, width, n_conv, channel_multiplier, downsample, readout, param), kw
    "avgpool-pixel": ((2, 4, 1, 2, "avgpool", "pixel"), {}),
    "conv-pixel-diag": ((2, 4, 1, 2, "conv", "pixel"), {"diagonal_spatial": True}),
    "standard-gap": ((1, 3, 2, 2, "avgpool", "gap", "standard"), {}),
}
CASES = {name: (_kwargs(*a), unet_spec(*a), kw) for name, (a, kw) in _ARGS.items()}
