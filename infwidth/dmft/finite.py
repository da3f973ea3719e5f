r"""Finite-width muP networks trained to match the DMFT limit, and width sweeps against it.

The network of `infwidth.dmft.deep_linear` / `infwidth.dmft.mlp` at width ``N`` is built from
infwidth's own layers: an input ``Dense(N, parameterization=ABC(0, 0.5))`` (weights of
variance ``1 / D`` for any input dimension ``D``), ``Dense(N, parameterization='mup')``
hidden layers (variance ``1 / fan_in``), a ``Dense(1, parameterization='mup')`` readout
(variance ``1 / N**2``, i.e.
``w . phi(h) / N`` with ``w ~ N(0, 1)``) and ``OutputScale(1 / gamma0)``, so
``f = w . phi(h^L) / (gamma0 N)``. It is trained by full-batch gradient descent with
``infwidth.mup.sgd(eta * gamma0**2 * dt, params)`` (per-layer rates ``fan_out / fan_in``: ``N / D``
at the input, 1 in the hidden layers, ``1 / N`` at the readout) on
``loss = sum (f - y)**2 / (2 P)``, ``n_steps * substeps`` steps (``substeps`` per DMFT time
step): the discretized gradient flow
``d theta / dt = eta gamma0**2 N (-d loss / d theta)`` of the DMFT derivation in the raw
(N(0, 1)) weights. muP: Yang & Hu 2021, arXiv:2011.14522; the correspondence with DMFT:
Bordelon & Pehlevan 2022, arXiv:2205.09653, Sec. 2.

With ``centered=True`` (default) the network trains ``f(theta) - f(theta_0)``: the same
gradients and the same infinite-width limit, without the ``O(1 / (gamma0 sqrt(N)))`` random
initial output, so the finite-width error is the feature-learning (bias) one.

With ``architecture='resnet'`` (the network of `infwidth.dmft.residual`) the ``depth`` hidden
layers after the input layer are residual blocks
``h + OutputScale(1 / sqrt(depth))(Dense(N, 'mup')(phi(h)))`` (FanOut, parallel, FanInSum),
followed by ``phi`` and the readout; the branch multiplier is a fixed scale, so the muP
learning rates are unchanged (Bordelon et al. 2023, arXiv:2309.16620).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._common import (
    ACTIVATIONS,
    ARCHITECTURES,
    PHI,
    check_choice,
    check_data,
    check_gamma0,
    check_positive,
    phi_layers,
)


class FiniteRun(NamedTuple):
    """Seed-averaged trajectories of finite muP networks at one width.

    Fields: ``times (T,)``, ``loss (T,)`` (the mean over seeds of each seed's loss),
    ``f_train (T, P)`` and ``f_test (T, P*)`` (seed means), ``phi (L, n, n)`` and
    ``g (L, n, n)`` (seed means of the final feature and gradient kernels on train and test
    points, train first), ``width``, ``n_seeds``.
    """

    times: jnp.ndarray
    loss: jnp.ndarray
    f_train: jnp.ndarray
    f_test: jnp.ndarray | None
    phi: jnp.ndarray
    g: jnp.ndarray
    width: int
    n_seeds: int


def mup_network(width: int, depth: int, gamma0: float, activation: str = "linear",
                architecture: str = "mlp"):
    """The stax muP network whose limit `deep_linear` / `mlp` solve (see the module docstring).

    ``architecture='mlp'``: ``depth`` hidden layers; ``'resnet'``: an input layer, ``depth``
    residual blocks with ``1 / sqrt(depth)`` branches, ``phi`` and the readout.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from infwidth import dmft
      >>> net = dmft.mup_network(512, depth=2, gamma0=1.0)
      >>> _, params = net.init_fn(jax.random.PRNGKey(0), (1, 3))
      >>> float(jnp.abs(params[1][0]).mean() * 512 ** 0.5).__round__(1)  # hidden: N(0, 1/N)
      0.8
      >>> res = dmft.mup_network(512, depth=4, gamma0=1.0, architecture='resnet')
      >>> _, params = res.init_fn(jax.random.PRNGKey(0), (1, 3))
      >>> [w.shape for w in jax.tree_util.tree_leaves(params)]  # input, 4 blocks, readout
      [(3, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 1)]
    """
    from .. import stax
    from ..parameterization import ABC
    where = "mup_network"
    width = check_positive(width, "width", where, integer=True)
    depth = check_positive(depth, "depth", where, integer=True)
    gamma0 = check_gamma0(gamma0, where, allow_zero=False)
    check_choice(activation, "activation", ACTIVATIONS, where)
    check_choice(architecture, "architecture", ARCHITECTURES, where)
    phi = phi_layers(activation)
    # the input layer has variance 1 / D whatever D is (shape-only 'mup' would treat an
    # input wider than the hidden layer as a readout); its muP rate N / D is the same
    layers = [stax.Dense(width, W_std=1.0, parameterization=ABC(0.0, 0.5))]
    if architecture == "mlp":
        for _ in range(depth - 1):
            layers += phi + [stax.Dense(width, W_std=1.0, parameterization="mup")]
    else:
        branch = stax.serial(*phi, stax.Dense(width, W_std=1.0, parameterization="mup"),
                             stax.OutputScale(1.0 / depth ** 0.5))
        layers += [stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch),
                               stax.FanInSum())] * depth
    layers += phi + [stax.Dense(1, W_std=1.0, parameterization="mup"),
                     stax.OutputScale(1.0 / gamma0)]
    return stax.serial(*layers)


def train_mup(x_train, y_train, x_test=None, *, width: int, depth: int, gamma0: float,
              activation: str = "linear", learning_rate: float = 1.0, dt: float = 0.1,
              n_steps: int = 50, seeds=(0, 1, 2, 3), centered: bool = True,
              substeps: int = 1, architecture: str = "mlp") -> FiniteRun:
    """Trains the finite muP network of the DMFT limit (same arguments) over several seeds.

    Needs optax (``pip install 'infwidth[optax]'``). The time grid, learning rate and loss are
    those of `deep_linear` / `mlp`, so the returned arrays compare entry by entry with a
    `DMFTSolution`.

    Example:
      >>> import jax.numpy as jnp
      >>> from infwidth import dmft
      >>> x = jnp.array([[1., 0.], [0.6, 0.8]]); y = jnp.array([1., -1.])
      >>> run = dmft.train_mup(x, y, width=256, depth=2, gamma0=1.0, n_steps=20, seeds=(0,))
      >>> lim = dmft.deep_linear(x, y, depth=2, gamma0=1.0, n_steps=20)
      >>> bool(abs(run.loss[-1] - lim.loss[-1]) < 0.1 * lim.loss[0])
      True
    """
    from ..mup import sgd
    where = "train_mup"
    x_train, y_train, x_test = check_data(x_train, y_train, x_test, where)
    width = check_positive(width, "width", where, integer=True)
    depth = check_positive(depth, "depth", where, integer=True)
    gamma0 = check_gamma0(gamma0, where, allow_zero=False)
    eta = check_positive(learning_rate, "learning_rate", where)
    dt = check_positive(dt, "dt", where)
    n_steps = check_positive(n_steps, "n_steps", where, integer=True)
    substeps = check_positive(substeps, "substeps", where, integer=True)
    seeds = tuple(int(s) for s in np.atleast_1d(seeds))
    if not seeds:
        raise ValueError(f"{where}(seeds=()): give at least one seed.")
    net = mup_network(width, depth, gamma0, activation, architecture)
    x = x_train if x_test is None else jnp.concatenate([x_train, x_test])
    p = x_train.shape[0]

    def run(key):
        _, params = net.init_fn(key, x.shape)
        opt = sgd(eta * gamma0 ** 2 * dt / substeps, params)
        f0 = net.apply_fn(params, x)[:, 0] if centered else jnp.zeros(x.shape[0], x.dtype)

        def out(prm, xx, offset):
            return net.apply_fn(prm, xx)[:, 0] - offset

        def loss(prm):
            return jnp.sum((out(prm, x_train, f0[:p]) - y_train) ** 2) / (2 * p)

        def sgd_step(carry, _):
            prm, st = carry
            upd, st = opt.update(jax.grad(loss)(prm), st, prm)
            return (jax.tree_util.tree_map(lambda a, b: a + b, prm, upd), st), None

        def step(carry, _):
            f = out(carry[0], x, f0)
            carry, _ = jax.lax.scan(sgd_step, carry, None, length=substeps)
            return carry, f

        (prm, _), fs = jax.lax.scan(step, (params, opt.init(params)), None, length=n_steps)
        fs = jnp.concatenate([fs, out(prm, x, f0)[None]])
        phi, g = _kernels(prm, x, activation, gamma0, width, architecture)
        return fs, phi, g

    outs = [jax.jit(run)(jax.random.PRNGKey(s)) for s in seeds]
    fs = jnp.stack([o[0] for o in outs])
    losses = jnp.sum((fs[:, :, :p] - y_train[None, None]) ** 2, -1) / (2 * p)
    f = fs.mean(0)
    return FiniteRun(times=dt * jnp.arange(n_steps + 1, dtype=x.dtype), loss=losses.mean(0),
                     f_train=f[:, :p], f_test=None if x_test is None else f[:, p:],
                     phi=jnp.stack([o[1] for o in outs]).mean(0),
                     g=jnp.stack([o[2] for o in outs]).mean(0), width=width,
                     n_seeds=len(seeds))


def _kernels(params, x, activation, gamma0, width, architecture="mlp"):
    """Final ``Phi^l = phi(h^l) phi(h^l)^T / N`` and ``G^l = g^l g^l^T / N`` of one network.

    The weights are the `serial` parameters' leaves in order (input, hidden or block
    weights, readout; multiplier 1 under muP): ``h^1 = x W_0``, then
    ``h^{l+1} = phi(h^l) W_l`` (MLP) or ``h^{l+1} = h^l + phi(h^l) W_l / sqrt(L)`` (resnet);
    the gradient fields ``g^l = gamma0 N df/dh^l`` (the DMFT's normalization) come from
    autodiff through zero perturbations added to each preactivation.
    """
    phi = PHI[activation]
    weights = jax.tree_util.tree_leaves(params)
    hidden, readout = weights[:-1], weights[-1]
    alpha = 1.0 / (len(hidden) - 1) ** 0.5 if architecture == "resnet" else None

    def forward(eps):
        h, hs = x @ hidden[0] + eps[0], []
        hs.append(h)
        for l, W in enumerate(hidden[1:], start=1):
            h = (h + alpha * phi(h) @ W if alpha else phi(h) @ W) + eps[l]
            hs.append(h)
        return jnp.sum(phi(h) @ readout) / gamma0, hs

    eps = [jnp.zeros((x.shape[0], width), x.dtype) for _ in hidden]
    grads, hs = jax.grad(forward, has_aux=True)(eps)
    phis = jnp.stack([phi(h) @ phi(h).T / width for h in hs])
    gs = jnp.stack([(gamma0 * width) ** 2 * g @ g.T / width for g in grads])
    return phis, gs
