"""Random-feature and sketch maps of the NNGP and NTK, derived from the stax description.

* `feature_fn`: ``phi(x)`` with ``phi(x1) @ phi(x2).T`` an estimate of ``kernel_fn(x1, x2)``
  (unbiased for one hidden layer; error ``O(n_features ** -0.5)``).

>>> import jax, jax.numpy as jnp
>>> from infwidth import stax
>>> from infwidth.features import feature_fn
>>> phi = feature_fn(stax.serial(stax.Dense(1), stax.Erf(), stax.Dense(1)),
...                  jax.random.PRNGKey(0), 64)
>>> phi(jnp.ones((3, 4))).ntk.shape
(3, 64)
"""

from .feature_map import FeatureMap, feature_fn

__all__ = ["FeatureMap", "feature_fn"]
