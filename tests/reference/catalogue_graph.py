"""Graph (Aggregate) architectures and deterministic graphs for nt parity.

``CASES`` maps a name to (spec, x1 shape, x2 shape, aggregate axes K-shape selector, sparse).
``patterns(...)`` draws the graphs; both libraries get the same arrays (stored in graph.npz).
"""

import numpy as np


def _dense(n, W_std=1.3, b_std=0.1):
    return ("Dense", {"out_dim": n, "W_std": W_std, "b_std": b_std})


def _conv1(n, W_std=1.3, b_std=0.1):
    """Dense at every position of an image (infwidth's Dense takes at most one spatial axis)."""
    return ("Conv", {"out_chan": n, "filter_shape": (1, 1), "W_std": W_std, "b_std": b_std})


def _net(**agg):
    return [_dense(8, 1.4, 0.2), ("Aggregate", agg), ("Relu", {}), _dense(8, 1.2, 0.0),
            ("Aggregate", agg), ("Erf", {}), _dense(2)]


def _net2d(**agg):
    # pairs of 1x1 convolutions: neural-tangents' Conv flips its kernel layout (is_reversed) and
    # its Aggregate over a subset of axes fails on a flipped layout, so keep the count even
    return [_conv1(8, 1.4, 0.2), _conv1(8, 1.1, 0.1), ("Aggregate", agg), ("Relu", {}),
            _conv1(8, 1.2, 0.0), _conv1(8, 0.9, None), ("Aggregate", agg), ("Erf", {}),
            _conv1(8), _conv1(2)]


# name -> (spec, shape1, shape2, aggregate axes, implementation)
CASES = {
    "dense-1d": (_net(), (3, 5, 4), (2, 5, 4), (1,), "DENSE"),
    "sparse-1d": (_net(implementation="SPARSE"), (3, 5, 4), (2, 5, 4), (1,), "SPARSE"),
    "dense-2d": (_net2d(), (2, 3, 2, 4), (3, 3, 2, 4), (1, 2), "DENSE"),
    "sparse-2d": (_net2d(implementation="SPARSE"), (2, 3, 2, 4), (3, 3, 2, 4), (1, 2), "SPARSE"),
    "dense-axis2": (_net2d(aggregate_axis=2), (2, 3, 4, 4), (3, 3, 4, 4), (2,), "DENSE"),
    "sparse-axis2": (_net2d(aggregate_axis=(2,), implementation="SPARSE"), (2, 3, 4, 4),
                     (3, 3, 4, 4), (2,), "SPARSE"),
}


def patterns(shape, axes, implementation, seed):
    """A weighted dense adjacency, or integer (tail, head) edges with some padding."""
    rng = np.random.RandomState(seed)
    agg_shape = tuple(shape[a] for a in axes)
    n = shape[0]
    if implementation == "DENSE":
        a = rng.rand(n, *agg_shape, *agg_shape) * (rng.rand(n, *agg_shape, *agg_shape) < 0.5)
        return a
    n_edges = 7
    coords = np.stack([rng.randint(0, s, size=(n, n_edges, 2)) for s in agg_shape], 2)
    coords[:, -1, :, 1] = -1  # a padding edge (negative head)
    return coords.astype(np.int32)
