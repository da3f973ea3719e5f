"""infwidth.batch over several processes on one machine, with jax.distributed.

    python examples/multiprocess_batch.py [--processes 2] [--devices-per-process 2]

Without ``--process-id`` this script starts the processes itself (each with its own fake CPU
devices) and waits for them; each process then

1. calls ``jax.distributed.initialize(coordinator, num_processes, process_id)``, after which
   ``jax.devices()`` lists the devices of every process;
2. builds the same inputs (the same seed) and calls ``infwidth.batch(kernel_fn, batch_size)``:
   the tiles are spread over the devices of all processes, and every process receives the
   whole kernel as numpy;
3. checks its result against the plain ``kernel_fn`` and prints a line.

On a cluster, start one process per host (e.g. with your scheduler) and pass the coordinator's
address; on TPU pods and SLURM/Open MPI clusters ``jax.distributed.initialize()`` needs no
arguments.
"""

import argparse
import os
import socket
import subprocess
import sys


def worker(args):
    os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count="
                               f"{args.devices_per_process}")
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.processes, process_id=args.process_id)
    import numpy as np

    import infwidth
    from infwidth import stax

    _, _, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
                                  stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
                                  stax.Dense(1))
    x = np.random.RandomState(0).randn(args.n, 8).astype(np.float32)
    batched = infwidth.batch(kernel_fn, args.batch_size)
    k = batched(x, None, get=("nngp", "ntk"))
    plain = kernel_fn(x, None, get=("nngp", "ntk"))
    err = max(float(np.linalg.norm(a - np.asarray(b)) / np.linalg.norm(b))
              for a, b in zip(k, plain))
    print(f"process {jax.process_index()}/{jax.process_count()}: "
          f"{jax.local_device_count()} local of {jax.device_count()} devices, "
          f"{batched.stats['tiles']} tiles, ntk {k.ntk.shape}, relative error vs plain "
          f"{err:.1e}", flush=True)
    jax.distributed.shutdown()
    return 0 if err < 1e-4 else 1


def launch(args):
    with socket.socket() as s:  # a free local port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--process-id",
                               str(i), "--coordinator", f"localhost:{port}", "--processes",
                               str(args.processes), "--devices-per-process",
                               str(args.devices_per_process), "--n", str(args.n),
                               "--batch-size", str(args.batch_size)])
             for i in range(args.processes)]
    codes = [p.wait(timeout=600) for p in procs]
    print("all processes agree with the plain kernel" if not any(codes)
          else f"exit codes {codes}")
    return max(codes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=2)
    parser.add_argument("--n", type=int, default=203, help="number of inputs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.exit(worker(args) if args.process_id is not None else launch(args))
