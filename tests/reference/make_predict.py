"""Writes predict.npz: neural-tangents' predictions (gp_inference, gradient_descent_mse[_ensemble],
gradient_descent, max_learning_rate) on stored float64 kernels, with the inputs and kernels."""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from _catalogue import build  # noqa: E402
from catalogue_predict import ARCH, inputs, run  # noqa: E402

data = inputs(seed=0)
kernel_fn = build(nt.stax, ARCH)[2]
x_train, x_test = jnp.asarray(data["x_train"]), jnp.asarray(data["x_test"])
for tag, (a, b) in {"dd": (x_train, None), "td": (x_test, x_train), "tt": (x_test, None)}.items():
    k = kernel_fn(a, b, ("nngp", "ntk"))
    data["nngp_" + tag], data["ntk_" + tag] = np.asarray(k.nngp), np.asarray(k.ntk)

out = run(nt.predict, jnp, jax, data)
for key, value in out.items():
    assert np.all(np.isfinite(value)), key
np.savez_compressed(os.path.join(here, "predict.npz"), **data,
                    **{"out/" + k: v for k, v in out.items()})
print(f"wrote {len(data)} inputs and {len(out)} outputs")
