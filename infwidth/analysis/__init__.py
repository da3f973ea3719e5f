"""Analysis of networks and their kernels.

* Training diagnostics (lazy vs rich): `kernel_movement`, `weight_movement`, `empirical_kernel`,
  `track_training`, `TrainingTrace`.
"""

from .training import (
    TrainingTrace,
    empirical_kernel,
    kernel_movement,
    track_training,
    weight_movement,
)

__all__ = [
    "TrainingTrace",
    "empirical_kernel",
    "kernel_movement",
    "track_training",
    "weight_movement",
]
