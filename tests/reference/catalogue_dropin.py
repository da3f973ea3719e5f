"""Networks for the drop-in parity tests: each builder takes a library's ``stax`` and ``jnp``
and returns ``(layer, input_name, kernel_kwargs)``; the same code builds the network in
neural-tangents (make_dropin.py) and in infwidth (tests/test_nt_parity_dropin.py)."""

import numpy as np

SHAPES = {"flat": ((5, 3), (4, 3)), "seq": ((3, 6, 2), (2, 6, 2)),
          "img": ((2, 4, 5, 2), (3, 4, 5, 2))}


def inputs(seed=0):
    rng = np.random.RandomState(seed)
    return {name: (rng.randn(*a), rng.randn(*b)) for name, (a, b) in SHAPES.items()}


def _double(stax):
    """A user-written layer: f -> 2 f (kernels x4), through stax.layer and stax.requires."""

    @stax.layer
    def Double():
        def init_fn(key, input_shape):
            return input_shape, ()

        def apply_fn(params, x, **kwargs):
            return 2 * x

        @stax.requires(diagonal_spatial=stax.Diagonal())
        def kernel_fn(k, **kwargs):
            def times4(c):
                return None if c is None else 4 * c

            return k.replace(nngp=times4(k.nngp), ntk=times4(k.ntk), cov1=times4(k.cov1),
                             cov2=times4(k.cov2))

        return init_fn, apply_fn, kernel_fn

    return Double()


def _catalogue():
    c = {}
    c["dense_img"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3, b_std=0.1), stax.Relu(), stax.Dense(2, W_std=1.5, b_std=0.2)), "img", {})
    c["dense_img_diag"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3, b_std=0.1), stax.Erf(), stax.Dense(2, W_std=1.5)), "img",
        {"diagonal_spatial": True})
    c["dense_img_standard"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3, W_std=1.2, b_std=0.1, parameterization="standard"), stax.Relu(),
        stax.Dense(2, parameterization="standard")), "img", {})
    c["dense_conv_img"] = lambda stax, jnp: (stax.serial(
        stax.Conv(3, (2, 2), padding="SAME"), stax.Relu(), stax.Dense(4, b_std=0.3),
        stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1)), "img", {})
    c["dense_seq"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3, b_std=0.1), stax.Relu(), stax.Dense(2)), "seq", {})
    c["conv_empty_filter"] = lambda stax, jnp: (stax.serial(
        stax.Conv(3, (), b_std=0.1), stax.Relu(), stax.ConvTranspose(2, (), W_std=1.3),
        stax.Relu(), stax.ConvLocal(2, (), W_std=2.0, b_std=0.5)), "flat", {})
    c["conv_empty_filter_standard"] = lambda stax, jnp: (stax.serial(
        stax.Conv(3, (), b_std=0.1, parameterization="standard"), stax.Relu(),
        stax.Conv(2, (), parameterization="standard")), "flat", {})
    c["pool_flat"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3), stax.Relu(), stax.AvgPool(()), stax.SumPool(()), stax.GlobalAvgPool(),
        stax.GlobalSumPool(), stax.Dense(1)), "flat", {})
    c["aggregate_identity"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3), stax.Relu(), stax.Aggregate(), stax.Dense(2)), "seq",
        {"pattern": (None, None)})
    c["dot_general_rhs"] = lambda stax, jnp: (stax.serial(
        stax.Conv(4, (1, 2), padding="SAME"),
        stax.DotGeneral(rhs=jnp.array([1.0, -1.0, 0.5, 2.0]),
                        dimension_numbers=(((1,), (0,)), ((), ()))),
        stax.Relu(), stax.Flatten(), stax.Dense(1)), "img", {})
    c["dot_general_lhs"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3, b_std=0.2),
        stax.DotGeneral(lhs=jnp.array([0.3, -1.0, 2.0, 0.0, 1.0]),
                        dimension_numbers=(((0,), (2,)), ((), ()))),
        stax.Relu(), stax.GlobalAvgPool()), "img", {})
    c["dot_general_matrix"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3, b_std=0.1),
        stax.DotGeneral(rhs=jnp.arange(20.0).reshape(4, 5) / 10 - 1,
                        dimension_numbers=(((1, 2), (0, 1)), ((), ()))),
        stax.Erf(), stax.Dense(1)), "img", {})
    c["dot_general_scalar"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3), stax.DotGeneral(rhs=2.0), stax.Relu(), stax.Dense(1)),
        "img", {"diagonal_spatial": True})
    c["resize_after_relu"] = lambda stax, jnp: (stax.serial(
        stax.Conv(3, (2, 2), padding="SAME"), stax.Conv(3, (1, 2), padding="SAME"), stax.Relu(),
        stax.ImageResize((-1, 3, 3, -1), "linear"),
        stax.Dense(2, b_std=0.1), stax.Relu(), stax.Flatten()), "img", {})
    c["resize_linear_up"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3), stax.ImageResize((-1, 6, 7, -1), "linear"),
        stax.Relu(), stax.Flatten(), stax.Dense(1)), "img", {})
    c["resize_linear_down"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3), stax.ImageResize((-1, 2, -1, -1), "linear"),
        stax.Relu(), stax.GlobalAvgPool()), "img", {})
    c["resize_nearest"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3), stax.ImageResize((-1, 3, 8, -1), "nearest"),
        stax.Relu(), stax.Flatten()), "img", {})
    c["resize_seq_no_antialias"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3), stax.ImageResize((-1, 4, -1), "bilinear", antialias=False),
        stax.Relu(), stax.Flatten()), "seq", {})
    c["custom_layer"] = lambda stax, jnp: (stax.serial(
        stax.Dense(3, b_std=0.1), _double(stax), stax.Relu(), stax.Dense(1)), "flat", {})
    return c


CATALOGUE = _catalogue()

# networks whose parameters are compared for the same key (identical layouts)
INIT = {
    "mlp": (lambda stax: stax.serial(stax.Dense(4, b_std=0.1), stax.Relu(), stax.Dense(2)),
            (3, 5)),
    "mlp_standard": (lambda stax: stax.serial(
        stax.Dense(4, 2.0, 0.1, parameterization="standard"), stax.Relu(),
        stax.Dense(2, parameterization="standard")), (3, 5)),
    "conv": (lambda stax: stax.serial(stax.Conv(3, (2, 2), b_std=0.1), stax.Relu(),
                                      stax.Flatten(), stax.Dense(2)), (2, 4, 4, 2)),
    "conv_transpose": (lambda stax: stax.ConvTranspose(3, (2, 2), b_std=0.1), (2, 4, 4, 2)),
    "conv_local": (lambda stax: stax.ConvLocal(3, (2, 2), b_std=0.1), (2, 4, 4, 2)),
    "conv_empty_filter": (lambda stax: stax.Conv(3, (), b_std=0.1), (2, 5)),
    "branches": (lambda stax: stax.serial(
        stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Dense(3, b_std=1.0)),
        stax.FanInSum()), (2, 5)),
    "layer_norm": (lambda stax: stax.serial(stax.Dense(3), stax.LayerNorm()), (2, 5)),
    "attention": (lambda stax: stax.GlobalSelfAttention(4, 3, 3, 2, linear_scaling=False),
                  (2, 5, 4)),
}
