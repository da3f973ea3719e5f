"""The ResNet of neural-tangents' ``empirical_ntk_resnet`` notebook, built with flax.linen: the
ResNet of He et al. 2016 (arXiv:1512.03385) with batch norm in eval mode. ``ResNet18`` is
stages (2, 2, 2, 2); tests use smaller stages and images, the benchmark the full sizes.

Used by tests/test_empirical_chunks.py and benchmarks/empirical_resnet.py; needs flax.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence


def resnet(stage_sizes: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000,
           num_filters: int = 64):
    """A flax.linen ResNet module (basic blocks, 7x7/2 stem, 3x3/2 max pool, global mean)."""
    import flax.linen as nn
    import jax.numpy as jnp

    conv = functools.partial(nn.Conv, use_bias=False)
    norm = functools.partial(nn.BatchNorm, use_running_average=True, momentum=0.9, epsilon=1e-5)

    class Block(nn.Module):
        filters: int
        strides: tuple = (1, 1)

        @nn.compact
        def __call__(self, x):
            y = conv(self.filters, (3, 3), self.strides)(x)
            y = nn.relu(norm()(y))
            y = norm()(conv(self.filters, (3, 3))(y))
            r = x
            if r.shape != y.shape:
                r = conv(self.filters, (1, 1), self.strides, name="conv_proj")(r)
                r = norm(name="norm_proj")(r)
            return nn.relu(r + y)

    class ResNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = conv(num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
            x = nn.relu(norm(name="bn_init")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            for i, size in enumerate(stage_sizes):
                for j in range(size):
                    strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                    x = Block(num_filters * 2 ** i, strides)(x)
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(num_classes)(x)

    return ResNet()


def resnet_fn(stage_sizes=(2, 2, 2, 2), num_classes=1000, num_filters=64, image=32, n=1,
              seed=0):
    """``(f, variables, x)``: ``f(variables, x)`` the model in eval mode, ``variables`` its
    parameters and batch statistics (all differentiated, as in the notebook), ``x`` ``n``
    random ``image x image x 3`` inputs. Batch statistics are drawn away from their initial
    zeros/ones so that batch norm is not the identity."""
    import jax

    model = resnet(stage_sizes, num_classes, num_filters)
    kx, kp, ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (n, image, image, 3))
    variables = model.init(kp, x)
    paths, tdef = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
    keys = jax.random.split(ks, len(paths))
    stats = [0.1 * jax.random.normal(k, l.shape) if "mean" in jax.tree_util.keystr(p)
             else 1.0 + 0.2 * jax.random.uniform(k, l.shape)  # running variances
             for k, (p, l) in zip(keys, paths)]
    variables = {**variables, "batch_stats": jax.tree_util.tree_unflatten(tdef, stats)}
    return (lambda v, a: model.apply(v, a)), variables, x
