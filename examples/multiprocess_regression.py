"""infwidth.predict.kernel_regression over several processes, with jax.distributed.

    python examples/multiprocess_regression.py [--processes 2] [--devices-per-process 2]

Without ``--process-id`` this script starts the processes itself (each with its own fake CPU
devices, a coordinator on a free local port) and waits for them. Each process calls
``jax.distributed.initialize(coordinator, num_processes, process_id)`` and then runs the same
program: the same inputs (the same seed) and ``kernel_regression`` with the matrix-free 'cg'
solver and the 'features' solver. The kernel and feature tiles are spread over the devices of
every process; every process receives the same predictions. Process 0 checks them against the
same solvers on its own devices only and, with ``--out``, saves them (``.npz``).

On a cluster start one process per host (your scheduler's launcher, e.g. ``srun`` or a
Kubernetes job) with the coordinator's address, see docs/guide/scaling.md.
"""

import argparse
import os
import socket
import subprocess
import sys


def problem(n=300, d=6, n_test=40):
    import numpy as np

    rng = np.random.RandomState(0)
    x = rng.randn(n, d)
    y = np.sin(x[:, :2]) + 0.1 * rng.randn(n, 2)
    return x, y, rng.randn(n_test, d)


def solve(mesh):
    """Predictions of the two streamed solvers on ``mesh`` (None: every device)."""
    import jax

    from infwidth import predict, stax

    net = stax.serial(stax.Dense(1, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
    x, y, x_test = problem()
    cg = predict.kernel_regression(net.kernel_fn, x, y, solver="cg", diag_reg=1e-2,
                                   tol=1e-10, tile_size=32, rank=32, mesh=mesh)
    feats = predict.kernel_regression(net.kernel_fn, x, y, solver="features", diag_reg=1e-2,
                                      n_features=256, key=jax.random.PRNGKey(0), tile_size=32,
                                      mesh=mesh)
    return cg(x_test), feats(x_test), cg.info["iterations"]


def worker(args):
    os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count="
                               f"{args.devices_per_process}")
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.processes, process_id=args.process_id)
    import numpy as np
    from jax.sharding import Mesh

    cg, feats, iters = solve(None)
    err = 0.0
    if not args.no_check:
        local = Mesh(np.array(jax.local_devices()), ("tiles",))
        cg_1, feats_1, _ = solve(local)
        err = max(float(np.abs(cg - cg_1).max()), float(np.abs(feats - feats_1).max()))
    print(f"process {jax.process_index()}/{jax.process_count()}: {jax.device_count()} devices, "
          f"CG {iters} iterations; largest difference from this process alone {err:.1e}",
          flush=True)
    if args.out and jax.process_index() == 0:
        np.savez(args.out, cg=cg, features=feats, devices=jax.device_count())
    jax.distributed.shutdown()
    return 0 if err < 1e-6 else 1


def launch(args):
    with socket.socket() as s:  # a free local port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--process-id",
                               str(i), "--coordinator", f"localhost:{port}", "--processes",
                               str(args.processes), "--devices-per-process",
                               str(args.devices_per_process)]
                              + (["--out", args.out] if args.out else [])
                              + (["--no-check"] if args.no_check else []))
             for i in range(args.processes)]
    codes = [p.wait(timeout=600) for p in procs]
    print("all processes agree with the single-process solvers" if not any(codes)
          else f"exit codes {codes}")
    return max(codes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=2)
    parser.add_argument("--out", help="save process 0's predictions to this .npz")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the comparison with this process's devices alone")
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.exit(worker(args) if args.process_id is not None else launch(args))
