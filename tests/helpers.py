"""Shared test utilities: the tolerance table, float64 switching, error measures, and an
independent Monte Carlo estimator of NNGP/NTK from wide finite networks.

The Monte Carlo estimator here is written with plain JAX autodiff (``jax.jacrev``) and does not
use infwidth's own empirical module, so analytic kernels are checked against something
computed independently.
"""

from __future__ import annotations

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "reference")

# One table of tolerances, keyed by dtype. 'exact': closed forms and algebraic identities;
# 'nt': agreement with neural-tangents 0.6.5 reference values; 'mc': relative Frobenius error
# of Monte Carlo estimates from wide finite networks; 'fd': autodiff gradients against central
# finite differences (relative to max(1, |gradient|)).
TOLERANCES = {
    np.dtype(np.float32): {"exact": 2e-5, "nt": 1e-4, "mc": 0.06, "fd": 1e-2},
    np.dtype(np.float64): {"exact": 1e-9, "nt": 1e-6, "mc": 0.06, "fd": 1e-5},
}


def tol(kind: str, dtype=None) -> float:
    """Tolerance of a kind ('exact', 'nt', 'mc') for a dtype (default: JAX's default float)."""
    dtype = np.dtype(jnp.result_type(float) if dtype is None else dtype)
    return TOLERANCES[dtype][kind]


@contextlib.contextmanager
def x64():
    """Runs the body with 64-bit floats enabled."""
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(True):
            yield
    else:  # older JAX
        from jax.experimental import enable_x64

        with enable_x64():
            yield


def rel_err(a, b) -> float:
    """Relative Frobenius error ||a - b|| / ||b||."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def assert_close(actual, expected, rtol, what=""):
    err = rel_err(actual, expected)
    assert err < rtol, f"{what}: relative error {err:.3g} exceeds {rtol:.3g}"


def mc_kernels(init_fn, apply_fn, x1, x2, key, n_samples: int, ntk: bool = True,
               apply_kwargs=None, chunk: int = 4):
    """Monte Carlo NNGP and NTK of the finite network, averaged over ``n_samples`` draws.

    NNGP: output covariance averaged over seeds and output channels. NTK: the Jacobian
    contraction of output channel 0, averaged over seeds. Outputs are flattened to (N, -1).
    Without ``apply_kwargs`` both batches go through the network together (inputs of a batch
    must not interact, as in every layer without a ``pattern``); with them, separately.
    """
    apply_kwargs = apply_kwargs or {}
    x2 = x1 if x2 is None else x2
    n1 = x1.shape[0]

    if apply_kwargs:
        def outputs(params):
            f1 = apply_fn(params, x1, **apply_kwargs)
            f2 = apply_fn(params, x2, **apply_kwargs)
            return f1.reshape(n1, -1), f2.reshape(x2.shape[0], -1)
    else:
        x12 = jnp.concatenate([x1, x2])

        def outputs(params):
            f = apply_fn(params, x12)
            f = f.reshape(f.shape[0], -1)
            return f[:n1], f[n1:]

    def one(k):
        _, params = init_fn(k, x1.shape)
        f1, f2 = outputs(params)
        nngp = f1 @ f2.T / f1.shape[-1]
        if not ntk:
            return nngp, jnp.zeros_like(nngp)
        jac = jax.jacrev(lambda p: jnp.concatenate([o[:, 0] for o in outputs(p)]))(params)
        t = sum(a.reshape(a.shape[0], -1)[:n1] @ a.reshape(a.shape[0], -1)[n1:].T
                for a in jax.tree_util.tree_leaves(jac))
        return nngp, t

    keys = jax.random.split(key, n_samples)
    nngps, ntks = jax.lax.map(jax.jit(one), keys, batch_size=chunk)
    return np.asarray(nngps.mean(0)), np.asarray(ntks.mean(0))


def load_reference(name: str) -> dict:
    """Loads ``tests/reference/<name>.npz`` (made by ``tests/reference/make_<name>.py``)."""
    with np.load(os.path.join(REFERENCE_DIR, name + ".npz"), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def group_cases(groups) -> list:
    """``(group, name)`` pairs of a grouped catalogue (``catalogue_<topic>.GROUPS``)."""
    return [(g, n) for g, (cat, *_) in groups.items() for n in sorted(cat)]


def check_group_against_reference(stax, groups, ref, group, name):
    """Checks one network of a grouped catalogue against neural-tangents' values in ``ref``
    (made by tests/reference/make_groups.py): NNGP and NTK for (x1, x2) and (x1, None), in
    float64 at tol('nt'). The two calls are jitted together: one compilation per network."""
    import sys

    sys.path.insert(0, REFERENCE_DIR)
    from _catalogue import build

    catalogue, _, _, kwargs = groups[group]
    with x64():
        kernel_fn = build(stax, catalogue[name])[2]
        x1, x2 = jnp.asarray(ref[f"{group}/x1"]), jnp.asarray(ref[f"{group}/x2"])
        get = ("nngp", "ntk")
        k12, k11 = jax.jit(lambda a, b: (kernel_fn(a, b, get=get, **kwargs),
                                         kernel_fn(a, None, get=get, **kwargs)))(x1, x2)
        assert k12.nngp.dtype == jnp.float64
        for tag, k in (("12", k12), ("11", k11)):
            for f in get:
                expected = ref[f"{group}/{name}/{f}{tag}"]
                assert getattr(k, f).shape == expected.shape, f"{f}{tag} shape"
                assert_close(getattr(k, f), expected, tol("nt", "float64"), f"{f}{tag}")


# The feature-learning (DMFT) limit, tests/test_dmft*.py: 'lazy': gamma0 -> 0 against the NTK's
# gradient_descent_mse, max loss error over the curve relative to the initial loss; 'width':
# seed-averaged finite muP networks at the widest width against the limit (loss curve relative
# to the initial loss, final kernels by relative Frobenius error); 'mc': Monte Carlo DMFT fields
# against the exact linear solution.
DMFT_TOLERANCES = {"lazy": 1e-3, "width_loss": 0.03, "width_kernel": 0.06, "mc": 0.05}
