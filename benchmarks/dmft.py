"""Cost of the DMFT solvers against train points N, time steps T, depth L and samples S.

    python benchmarks/dmft.py [--cases ...]

Asymptotic cost per self-consistency iteration (``n`` = train + test points):
``deep_linear``: ``O(L (n T)^3)`` time (inverses and products of ``nT x nT`` operators),
``O(L (n T)^2)`` memory; ``mlp``: ``O(L S (n T)^2 (sweeps + n T))`` time (Picard sweeps over
the sampled fields, plus the ``n T`` forward-mode directions of the response Jacobians at
depth >= 2), ``O(S (n T)^2)`` memory. The number of iterations grows with ``gamma0`` and
``t_max``, not with the sizes. Each case times one full solve (all iterations) after a first,
compiling call, median of 3; neural-tangents has no feature-learning limit to compare against.

Measured on the shared 2-core machine under heavy load (load average 12-25, so treat the
figures as upper bounds; median s / compile s / peak MiB): deep_linear T=21 L=2 at N=4, 8, 16:
4.8 / 23 / 415, 8.1 / 36 / 410, 9.4 / 27 / 472 (at these sizes, nT <= 336, the per-iteration
dispatch and the output integrator dominate, so time grows slower than (nT)^3); N=8 L=2 at
T=11, 21, 41: 1.4, 8.1, 17.4 s; N=8 T=21 at L=1, 2, 4: 3.7, 8.1, 36.3 s (iterations grow
with L as well as the per-iteration cost).

``architecture='resnet'`` (dt = 2 / (T - 1): a residual NTK is about e times larger) solves all
layers of a neuron jointly: exact linear ``O((2 (L + 1) n T)^3)``, Monte Carlo
``O(L^2 S (n T)^3)`` per iteration. Measured 2026-12-04 on the 2-core machine (median s /
compile s / peak MiB), N=8 T=11: L=2 1.04 / 4.7 / 452, L=4 1.33 / 5.4 / 528, L=8 5.40 / 8.7 /
572 (the joint system is 1584 wide at L=8). The ReLU Monte Carlo case (N=4 T=11 L=2 S=500)
did not finish its four calls within 13 minutes; one solve at L=1, n=6, T=7, S=1000 took 47 s
(15 iterations), dominated by the L forward-mode response Jacobians through the joint solve.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main, time_call  # noqa: E402

CASES = {}
for n in (4, 8, 16):
    CASES[f"linear N={n} T=21 L=2"] = {"solver": "linear", "n": n, "T": 21, "L": 2}
for T in (11, 41):
    CASES[f"linear N=8 T={T} L=2"] = {"solver": "linear", "n": 8, "T": T, "L": 2}
for L in (1, 4):
    CASES[f"linear N=8 T=21 L={L}"] = {"solver": "linear", "n": 8, "T": 21, "L": L}
for S in (500, 2000):
    CASES[f"mlp relu N=4 T=11 L=2 S={S}"] = {"solver": "mlp", "n": 4, "T": 11, "L": 2, "S": S}
for L in (2, 4, 8):  # architecture='resnet': all layers of a neuron solved jointly
    CASES[f"resnet linear N=8 T=11 L={L}"] = {"solver": "linear", "n": 8, "T": 11, "L": L,
                                              "arch": "resnet"}
CASES["resnet relu N=4 T=11 L=2 S=500"] = {"solver": "mlp", "n": 4, "T": 11, "L": 2, "S": 500,
                                           "arch": "resnet"}


def _worker(case):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from infwidth import dmft

    x = jax.random.normal(jax.random.PRNGKey(0), (case["n"], 10))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True) * jnp.sqrt(10.0)
    y = jnp.sign(x[:, 0])
    steps = case["T"] - 1
    arch = case.get("arch", "mlp")
    dt = (4.0 if arch == "mlp" else 2.0) / steps  # a resnet's NTK is ~e times larger
    if case["solver"] == "linear":
        def solve():
            return dmft.deep_linear(x, y, depth=case["L"], gamma0=1.0, dt=dt,
                                    n_steps=steps, architecture=arch).loss
    else:
        def solve():
            return dmft.mlp(x, y, depth=case["L"], gamma0=1.0, activation="relu", dt=dt,
                            n_steps=steps, n_samples=case["S"], architecture=arch).loss
    result = time_call(solve, repeats=3)
    sol = (dmft.deep_linear(x, y, depth=case["L"], gamma0=1.0, dt=dt, n_steps=steps,
                            architecture=arch)
           if case["solver"] == "linear" else None)
    if sol is not None:
        result["iterations"] = sol.iterations
    return result


if __name__ == "__main__":
    main("DMFT solvers: one full self-consistent solve (gamma0 = 1, t_max = 4), float64",
         CASES, {"infwidth": _worker})
