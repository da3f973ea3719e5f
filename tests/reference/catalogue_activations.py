"""Fully connected networks with every closed-form activation of neural-tangents 0.6.5 (issue 3),
plus `Elementwise` (a user-supplied dual kernel) and `ElementwiseNumerical` (quadrature).

Functions given to `Elementwise` / `ElementwiseNumerical` import `jax.numpy` when called, so the
same spec runs under either library's JAX.
"""


def erf_fn(x):
    import jax.scipy.special as sp

    return sp.erf(x)


def erf_nngp(cov12, var1, var2):
    import jax.numpy as jnp

    return 2 / jnp.pi * jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2)))


def tanh_fn(x):
    import jax.numpy as jnp

    return jnp.tanh(x)


def softplus_fn(x):
    import jax.numpy as jnp

    return jnp.logaddexp(x, 0.0)


ACTIVATIONS = {
    "sign": ("Sign", {}),
    "sigmoid_like": ("Sigmoid_like", {}),
    "gelu": ("Gelu", {}),
    "gelu_approx": ("Gelu", {"approximate": True}),
    "gaussian": ("Gaussian", {}),
    "gaussian_ab": ("Gaussian", {"a": 1.2, "b": -0.6}),
    "exp": ("Exp", {}),
    "exp_ab": ("Exp", {"a": 0.8, "b": 0.4}),
    "expnormalized": ("ExpNormalized", {}),
    "expnormalized_clip": ("ExpNormalized", {"gamma": 0.7, "shift": -0.5, "do_clip": True}),
    "rbf": ("Rbf", {}),
    "rbf_gamma": ("Rbf", {"gamma": 0.3}),
    "sin": ("Sin", {}),
    "sin_abc": ("Sin", {"a": 1.3, "b": 0.8, "c": 0.4}),
    "cos": ("Cos", {}),
    "cos_abc": ("Cos", {"a": 0.9, "b": 1.1, "c": -0.2}),
    "gabor": ("Gabor", {}),
    "poly": ("Polynomial", {"coef": [0.3, -1.0, 0.5, 0.2]}),
    "poly_even": ("Polynomial", {"coef": [1.0, 0.0, -0.5]}),
    "elementwise_erf": ("Elementwise", {"fn": erf_fn, "nngp_fn": erf_nngp}),
    "numerical_tanh": ("ElementwiseNumerical", {"fn": tanh_fn, "deg": 25}),
    "numerical_softplus": ("ElementwiseNumerical", {"fn": softplus_fn, "deg": 12}),
}
for _d in range(6):
    ACTIVATIONS[f"monomial{_d}"] = ("Monomial", {"degree": _d})
for _d in range(5):
    ACTIVATIONS[f"rectified{_d}"] = ("RectifiedMonomial", {"degree": _d})
    ACTIVATIONS[f"hermite{_d}"] = ("Hermite", {"degree": _d})


def _mlp(depth, act, W_std, b_std, param, width=64):
    spec = []
    for i in range(depth):
        spec.append(("Dense", {"out_dim": width * (i + 1), "W_std": W_std, "b_std": b_std,
                               "parameterization": param}))
        spec.append(ACTIVATIONS[act])
    spec.append(("Dense", {"out_dim": 3, "W_std": W_std, "b_std": b_std,
                           "parameterization": param}))
    return spec


# Every activation once, cycling through (depth, parameterization, W_std, b_std) so that both
# parameterizations and depths 1-3 are covered; a few activations get a second architecture.
# neural-tangents' RectifiedMonomial is NaN everywhere beyond one layer for degree >= 2 (and on
# the diagonal at one layer), so it is compared at depth 1 only, under both parameterizations.
_ARCHS = [(1, "ntk", 1.0, None), (2, "standard", 0.9, 0.2), (2, "ntk", 1.2, 0.1),
          (1, "standard", 1.1, 0.0), (3, "ntk", 0.8, 0.3)]
CATALOGUE = {}
for _i, act in enumerate(a for a in ACTIVATIONS if not a.startswith("rectified")):
    _depth, _param, _w, _b = _ARCHS[_i % len(_ARCHS)]
    CATALOGUE[f"{_param}-{act}-d{_depth}"] = _mlp(_depth, act, _w, _b, _param)
for act in ("gelu", "sin_abc", "gabor", "monomial3", "expnormalized", "sign"):
    CATALOGUE[f"standard-{act}-d3"] = _mlp(3, act, 1.1, 0.1, "standard")
for _d in range(5):
    CATALOGUE[f"ntk-rectified{_d}-d1"] = _mlp(1, f"rectified{_d}", 1.2, 0.1, "ntk")
    CATALOGUE[f"standard-rectified{_d}-d1"] = _mlp(1, f"rectified{_d}", 0.9, None, "standard")
