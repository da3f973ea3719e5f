"""The feature-learning (muP / mean-field) infinite-width limit, by dynamical mean field theory.

* `deep_linear`: exact DMFT of deep linear networks (Bordelon & Pehlevan 2022, arXiv:2205.09653).
* `mlp`: Monte Carlo DMFT of nonlinear MLPs (ReLU, tanh, erf), same outputs.
* `mean_field`: the two-layer mean-field limit as a particle flow, with its convergence check;
  `particle_flow`: the same with the neurons' trajectories.
* ``architecture='resnet'`` in all of these: residual networks with ``1 / sqrt(depth)``
  branches, the depthwise-transfer limit (`infwidth.dmft.residual`, Bordelon et al. 2023);
  `lazy_resnet` is its ``gamma0 = 0`` stax network.
* `train_mup`, `mup_network`, `FiniteRun`: the finite-width muP networks of that limit (optax).
* `DMFTSolution`: the trajectory (loss, outputs, feature and gradient kernels over time).
"""

from ._common import DMFTSolution
from .finite import FiniteRun, mup_network, train_mup
from .linear import deep_linear
from .mean_field import ParticleFlow, mean_field, particle_flow
from .nonlinear import mlp
from .residual import lazy_resnet

__all__ = ["DMFTSolution", "deep_linear", "mean_field", "particle_flow", "ParticleFlow", "mlp",
           "FiniteRun", "mup_network", "train_mup", "lazy_resnet"]
