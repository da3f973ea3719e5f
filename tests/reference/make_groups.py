"""Writes <topic>.npz for catalogues organised in groups: neural-tangents' NNGP/NTK in float64.

    $NT tests/reference/make_groups.py architectures attention branching indexing normalization

``catalogue_<topic>.GROUPS`` maps a group to ``(catalogue, shape1, shape2, kernel_kwargs)``;
keys are ``<group>/<name>/<nngp|ntk><12|11>`` and ``<group>/x1``, ``<group>/x2``.
"""

import importlib
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

for topic in sys.argv[1:]:
    groups = importlib.import_module(f"catalogue_{topic}").GROUPS
    out = {}
    for group, (catalogue, shape1, shape2, kwargs) in groups.items():
        res = run_catalogue(nt.stax, jnp, catalogue, shape1, shape2, seed=1,
                            kernel_kwargs=kwargs)
        out.update({f"{group}/{k}": v for k, v in res.items()})
    np.savez_compressed(os.path.join(here, f"{topic}.npz"), **out)
    print(f"{topic}: wrote {len(out)} arrays")
