"""Writes activations.npz: neural-tangents' NNGP/NTK for the activations catalogue, in float64."""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from _catalogue import run_catalogue  # noqa: E402
from catalogue_activations import CATALOGUE  # noqa: E402

out = run_catalogue(nt.stax, jnp, CATALOGUE, (5, 7), (3, 7), seed=0)
np.savez_compressed(os.path.join(here, "activations.npz"), **out)
print(f"wrote {len(out)} arrays for {len(CATALOGUE)} architectures")
