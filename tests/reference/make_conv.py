"""Writes conv.npz: neural-tangents' NNGP/NTK for the convolutional catalogue, in float64.

neural-tangents reverses the order of the spatial axes of its kernels after an odd number of
convolutions (``Kernel.is_reversed``); infwidth always keeps input order, so reversed kernels
are put back in input order before they are stored.
"""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from catalogue_conv import CATALOGUE, run  # noqa: E402


def to_arrays(k):
    if k.is_reversed:
        k = k.reverse()
    return k.nngp, k.ntk


out = run(nt.stax, jnp, to_arrays, seed=0)
np.savez_compressed(os.path.join(here, "conv.npz"), **out)
print(f"wrote {len(out)} arrays for {len(CATALOGUE)} architectures")
