"""Plain-JAX reproducer for the upstream report: on jax 0.10.2 (CPU, eager and jit alike),
``jax.vmap`` of one ``jax.vjp`` of a convolution whose output has a single position (batch 1,
1x1 output map) returns wrong weight gradients (zeros, garbage or inf) once
``rows * out_channels > 2**15``; a loop over the same rows is exact.

    python examples/jax_vmap_vjp_conv_bug.py

infwidth's empirical kernels avoid it by chunking (infwidth/empirical/_chunks.py).
"""

import jax
import jax.numpy as jnp
from jax import lax


def max_error(rows: int, out_channels: int, in_channels: int = 8) -> float:
    """Largest |vmap - loop| of the weight gradients, relative to the largest gradient."""
    kx, kw, kc = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (1, 1, 1, in_channels))  # one example, one position
    w = jax.random.normal(kw, (1, 1, in_channels, out_channels))
    conv = lambda w: lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y, vjp = jax.vjp(conv, w)
    cots = jax.random.normal(kc, (rows,) + y.shape)
    batched = jax.vmap(lambda c: vjp(c)[0])(cots)
    looped = lax.map(lambda c: vjp(c)[0], cots)
    return float(jnp.nanmax(jnp.abs(batched - looped)) / jnp.max(jnp.abs(looped)))


if __name__ == "__main__":
    print(f"jax {jax.__version__} on {jax.default_backend()}")
    print("rows  out_channels  rows*channels  max relative error")
    for rows, c in [(256, 128), (257, 128), (64, 512), (64, 513), (32, 1000), (33, 1000)]:
        print(f"{rows:4d}  {c:12d}  {rows * c:13d}  {max_error(rows, c):.3g}")
