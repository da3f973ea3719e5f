"""Shared benchmark harness: each case runs in a fresh subprocess (infwidth in this Python,
neural-tangents in its own virtual environment via ``--nt-python``), is timed after compilation
(median of several runs, ``block_until_ready``), and reports its peak resident memory.

A benchmark script calls :func:`main` with a table of cases and two worker functions; it is
both the driver (no ``--worker``) and the worker (``--worker infwidth|nt --case NAME``).
Workers must import infwidth / neural_tangents lazily, inside the worker function.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_call(fn, *args, repeats: int = 5, **kwargs) -> dict:
    """Compile time (first call) and median wall time of ``repeats`` further calls, in s."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args, **kwargs))
        times.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "time_s": statistics.median(times), "repeats": repeats}


def with_untiled(cases: dict) -> dict:
    """Adds a variant ``'<name> untiled'`` of every case: the same workload with infwidth's
    automatic tiling turned off (see :func:`untiled_if_asked`)."""
    return {**cases, **{f"{k} untiled": {**v, "untiled": True} for k, v in cases.items()}}


def untiled_if_asked(stax, case: dict) -> None:
    """In an infwidth worker: evaluate kernels in one piece when the case asks for it."""
    if case.get("untiled"):
        stax.tile_memory(0)


def _run_worker(python: str, script: str, lib: str, case: str, timeout: float) -> dict:
    cmd = [python, script, "--worker", lib, "--case", case]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f}s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]}


def _fmt(r: dict, key: str, fmt: str) -> str:
    return fmt.format(r[key]) if key in r else r.get("error", "-")[:24]


def main(description: str, cases: dict, workers: dict, default_cases=None):
    """Parses arguments, runs the worker when asked, else drives all cases and prints a table.

    ``cases``: name -> dict of parameters; ``workers``: {'infwidth': fn, 'nt': fn}, each
    ``fn(params) -> dict`` with at least time_s and compile_s (use :func:`time_call`).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--nt-python", help="python of a neural-tangents venv "
                        "(benchmarks/nt_env.sh builds one and prints it); compares in the same run")
    parser.add_argument("--cases", nargs="*", default=default_cases,
                        help=f"subset of cases (default: {default_cases or 'all'}); "
                        f"all: {', '.join(cases)}")
    parser.add_argument("--timeout", type=float, default=900.0, help="per case and library, s")
    parser.add_argument("--worker", choices=sorted(workers), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = workers[args.worker](cases[args.case])
        result["peak_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    script = os.path.abspath(sys.argv[0])
    names = args.cases or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(cases)}")
    header = f"{'case':<28} {'infwidth s':>10} {'compile s':>9} {'peak MiB':>9}"
    if args.nt_python:
        header += f" {'nt s':>9} {'nt peak':>9} {'speedup':>8} {'mem ratio':>9}"
    print(description)
    print(header)
    print("-" * len(header))
    for name in names:
        ours = _run_worker(sys.executable, script, "infwidth", name, args.timeout)
        row = (f"{name:<28} {_fmt(ours, 'time_s', '{:10.4f}'):>10} "
               f"{_fmt(ours, 'compile_s', '{:9.2f}'):>9} {_fmt(ours, 'peak_mb', '{:9.0f}'):>9}")
        if args.nt_python:
            theirs = _run_worker(args.nt_python, script, "nt", name, args.timeout)
            speed = (f"{theirs['time_s'] / ours['time_s']:8.1f}x"
                     if "time_s" in theirs and "time_s" in ours else "-")
            mem = (f"{theirs['peak_mb'] / ours['peak_mb']:8.2f}x"
                   if "peak_mb" in theirs and "peak_mb" in ours else "-")
            row += (f" {_fmt(theirs, 'time_s', '{:9.4f}'):>9} "
                    f"{_fmt(theirs, 'peak_mb', '{:9.0f}'):>9} {speed:>8} {mem:>9}")
        print(row, flush=True)
