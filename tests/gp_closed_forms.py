"""Closed forms in numpy float64 for the GP tests (not collected): the NNGP of a deep ReLU
network (the arc-cosine recursion of Cho & Saul 2009 and Lee et al. 2018, which is also the
formula of BoTorch's InfiniteWidthBNNKernel) and the Gaussian log evidence by eigh."""

import numpy as np


def relu_nngp_numpy(x1, x2, w_std, b_std, depth):
    """NNGP of ``depth`` hidden ReLU layers and a linear readout, all Dense(W_std, b_std)."""
    d = x1.shape[1]
    k12 = w_std**2 * x1 @ x2.T / d + b_std**2
    k1 = w_std**2 * np.sum(x1 * x1, 1) / d + b_std**2
    k2 = w_std**2 * np.sum(x2 * x2, 1) / d + b_std**2
    for _ in range(depth):
        norm = np.sqrt(np.outer(k1, k2))
        theta = np.arccos(np.clip(k12 / norm, -1, 1))
        k12 = w_std**2 / (2 * np.pi) * norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
        k12 += b_std**2
        k1, k2 = w_std**2 * k1 / 2 + b_std**2, w_std**2 * k2 / 2 + b_std**2
    return k12


def evidence_numpy(k, y, noise):
    """Gaussian log density of the columns of y under N(0, k + noise I), summed, by eigh."""
    w, v = np.linalg.eigh(k + noise * np.eye(len(k)))
    quad = np.sum((v.T @ y) ** 2 / w[:, None])
    return -0.5 * quad - 0.5 * y.shape[1] * (np.sum(np.log(w)) + len(k) * np.log(2 * np.pi))
