"""Writes architectures.npz: neural-tangents' NNGP/NTK for the architectures catalogue, in float64.

Keys are ``<group>/<name>/<nngp|ntk><12|11>`` and ``<group>/x1``, ``<group>/x2``.
"""

import os
import sys
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

warnings.simplefilter("ignore")
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from _catalogue import run_catalogue  # noqa: E402
from catalogue_architectures import GROUPS  # noqa: E402

out = {}
for group, (catalogue, shape1, shape2, kwargs) in GROUPS.items():
    res = run_catalogue(nt.stax, jnp, catalogue, shape1, shape2, seed=1, kernel_kwargs=kwargs)
    out.update({f"{group}/{k}": v for k, v in res.items()})
np.savez_compressed(os.path.join(here, "architectures.npz"), **out)
print(f"wrote {len(out)} arrays")
