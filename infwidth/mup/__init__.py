"""Training beyond the kernel limit: muP optimizers and the coordinate check.

* `sgd`, `adam`, `mup_learning_rates`, `abc_learning_rates`, `scale_learning_rates`: per-layer
  learning rates as optax transforms (optax is an optional extra).
* `coord_check`, `plot_coord_check`: per-layer activation and update sizes across widths.

Build networks with ``stax.Dense(..., parameterization='mup')`` (or an `ABC` from
`infwidth.parameterization`); measure lazy vs rich training with `infwidth.analysis`.
"""

from .coord_check import CoordCheck, coord_check, plot_coord_check
from .optim import (
    abc_learning_rates,
    adam,
    mup_learning_rates,
    scale_learning_rates,
    sgd,
)

__all__ = [
    "sgd",
    "adam",
    "mup_learning_rates",
    "abc_learning_rates",
    "scale_learning_rates",
    "coord_check",
    "plot_coord_check",
    "CoordCheck",
]
