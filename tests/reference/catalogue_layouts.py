"""Networks on inputs whose batch and channel axes are not (0, -1): convolutions with
``dimension_numbers``, pooling, LayerNorm, GlobalAvgPool and Flatten with ``batch_axis`` /
``channel_axis`` (make_layouts.py, tests/test_nt_parity_layouts.py). ``CATALOGUE[name] =
(spec, filter_spec, build)``; ``build(stax, spec, filter_spec)`` gives the network for inputs
in the layout ``spec`` (letters N, C, H, W) and ``inputs(spec)`` the inputs."""

import numpy as np

BASE = (3, 6, 5, 2)  # N, H, W, C


def inputs(spec):
    rng = np.random.RandomState(7)
    x1 = rng.randn(*BASE)
    x2 = rng.randn(2, *BASE[1:])
    perm = ["NHWC".index(c) for c in spec]
    return np.transpose(x1, perm), np.transpose(x2, perm)


def _in_filter_order(values, filter_spec):
    return tuple(values["HW".index(c)] for c in filter_spec if c in "HW")


def _conv_pool_flatten(stax, spec, filter_spec):
    b, c = spec.index("N"), spec.index("C")
    dn = (spec, filter_spec, spec)
    return stax.serial(
        stax.Conv(4, _in_filter_order((2, 3), filter_spec), _in_filter_order((1, 2), filter_spec),
                  "SAME", W_std=1.5, b_std=0.2, dimension_numbers=dn),
        stax.Relu(),
        stax.AvgPool((2, 1), padding="SAME", batch_axis=b, channel_axis=c),
        stax.Conv(3, _in_filter_order((2, 2), filter_spec), None, "CIRCULAR", W_std=1.2,
                  dimension_numbers=dn),
        stax.Erf(),
        stax.Flatten(b, int(b > c)),
        stax.Dense(2, batch_axis=int(b > c), channel_axis=int(b < c)))


def _layer_norm_gap(stax, spec, filter_spec):
    b, c = spec.index("N"), spec.index("C")
    dn = (spec, filter_spec, spec)
    return stax.serial(
        stax.Conv(4, _in_filter_order((3, 2), filter_spec), None, "VALID", W_std=1.3,
                  b_std=0.1, dimension_numbers=dn),
        stax.LayerNorm(axis=(c, spec.index("H")), batch_axis=b, channel_axis=c),
        stax.Gelu(),
        stax.SumPool((2, 2), (1, 2), "VALID", batch_axis=b, channel_axis=c),
        stax.GlobalAvgPool(batch_axis=b, channel_axis=c),
        stax.Dense(1, batch_axis=int(b > c), channel_axis=int(b < c)))


def _attention_graph(stax, spec, filter_spec):
    b, c = spec.index("N"), spec.index("C")
    return stax.serial(
        stax.Conv(4, (1, 1), W_std=1.2, b_std=0.1, dimension_numbers=(spec, filter_spec, spec)),
        stax.Aggregate(aggregate_axis=spec.index("W"), batch_axis=b, channel_axis=c),
        stax.Relu(),
        stax.GlobalSelfAttention(4, 3, 3, 2, attention_mechanism="IDENTITY", W_key_std=1.1,
                                 batch_axis=b, channel_axis=c),
        stax.GlobalAvgPool(b, c))


def kernel_kwargs(name):
    """Keyword arguments of ``kernel_fn``: the graphs (over the W axis) of the graph networks."""
    if "graph" not in name:
        return {}
    rng = np.random.RandomState(3)
    return {"pattern": (rng.rand(BASE[0], BASE[2], BASE[2]), rng.rand(2, BASE[2], BASE[2]))}


CATALOGUE = {
    "nchw_oihw/attention_graph": ("NCHW", "OIHW", _attention_graph),
    "nwch_iohw/attention_graph": ("NWCH", "IOHW", _attention_graph),
    "nchw_oihw/conv_pool_flatten": ("NCHW", "OIHW", _conv_pool_flatten),
    "hwcn_iwho/conv_pool_flatten": ("HWCN", "IWHO", _conv_pool_flatten),
    "cnwh_hwio/conv_pool_flatten": ("CNWH", "HWIO", _conv_pool_flatten),
    "nchw_hwio/layer_norm_gap": ("NCHW", "HWIO", _layer_norm_gap),
    "wchn_owih/layer_norm_gap": ("WCHN", "OWIH", _layer_norm_gap),
    "nhwc_oihw/layer_norm_gap": ("NHWC", "OIHW", _layer_norm_gap),
}


def masked_inputs(spec, value=-1e9):
    """``inputs(spec)`` with the last positions of the W axis of some inputs marked absent."""
    x1, x2 = inputs(spec)
    w = spec.index("W")
    for x, lengths in ((x1, (5, 3, 2)), (x2, (4, 1))):
        for i, n in enumerate(lengths):
            index = [slice(None)] * x.ndim
            index[spec.index("N")], index[w] = i, slice(n, None)
            x[tuple(index)] = value
    return x1, x2


MASKED = {
    "masked/nchw_oihw/layer_norm_gap": ("NCHW", "OIHW", _layer_norm_gap),
    "masked/nchw_oihw/conv_pool_flatten": ("NCHW", "OIHW", _conv_pool_flatten),
}  # neural-tangents 0.6.5 fails on masked inputs whose batch axis is not first
