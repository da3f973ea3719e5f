"""neural-tangents' ``_src.predict`` names (see `infwidth._src`)."""

import jax

from ..predict import *  # noqa: F401,F403


def _is_on_cpu(x) -> bool:
    """Whether every array leaf of ``x`` lives on a CPU device (numpy arrays count as CPU)."""
    def on_cpu(a) -> bool:
        devices = getattr(a, "devices", None)
        if callable(devices):
            return all(d.platform == "cpu" for d in devices())
        return True

    return all(on_cpu(a) for a in jax.tree_util.tree_leaves(x))
