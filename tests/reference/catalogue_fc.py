"""Fully connected architectures of the core issue (Dense and the ReLU family, Erf)."""

ACTIVATIONS = {
    "relu": ("Relu", {}),
    "leaky": ("LeakyRelu", {"alpha": 0.2}),
    "abrelu": ("ABRelu", {"a": -0.4, "b": 1.3}),
    "abs": ("Abs", {}),
    "erf": ("Erf", {"a": 1.3, "b": 0.7, "c": 0.2}),
    "erf_default": ("Erf", {}),
}


def _mlp(depth, act, W_std, b_std, param, width=64):
    spec = []
    for i in range(depth):
        spec.append(("Dense", {"out_dim": width * (i + 1), "W_std": W_std, "b_std": b_std,
                               "parameterization": param}))
        spec.append(ACTIVATIONS[act])
    spec.append(("Dense", {"out_dim": 3, "W_std": W_std, "b_std": b_std,
                           "parameterization": param}))
    return spec


CATALOGUE = {}
for param in ("ntk", "standard"):
    for act in ACTIVATIONS:
        for depth, W_std, b_std in ((1, 1.0, None), (2, 1.7, 0.3), (3, 1.2, 0.0)):
            CATALOGUE[f"{param}-{act}-d{depth}-W{W_std}-b{b_std}"] = _mlp(
                depth, act, W_std, b_std, param)
    CATALOGUE[f"{param}-linear"] = [("Dense", {"out_dim": 8, "W_std": 0.9, "b_std": 0.4,
                                               "parameterization": param}),
                                    ("Dense", {"out_dim": 1, "W_std": 1.1,
                                               "parameterization": param})]
CATALOGUE["standard-s"] = [("Dense", {"out_dim": 16, "W_std": 1.4, "b_std": 0.2,
                                      "parameterization": "standard", "s": (1, 2)}),
                           ("Relu", {}),
                           ("Dense", {"out_dim": 4, "W_std": 1.1, "b_std": 0.1,
                                      "parameterization": "standard", "s": (2, 1)})]
