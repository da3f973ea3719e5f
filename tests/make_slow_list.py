"""Rewrites tests/slow_tests.txt from measured test durations (``make slow-list``).

    python tests/make_slow_list.py [--budget 150] [--from FILE] [pytest arguments ...]

Runs the quick tier (default: ``--doctest-modules infwidth tests -n 2 -m "not slow and not
notebook"``) with ``--durations=0``, or reads the durations from the output of such a run
(``--from FILE``), and chooses the quick tier within ``--budget`` seconds of measured test
time: every test file keeps its cheapest test, then the cheapest of the other tests join until
the budget is spent. Everything else, and every test the list already marked slow, is listed
as slow (``make test`` still runs all of them). Measure on an otherwise idle machine: on a
loaded one every test looks slow.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LINE = re.compile(r"^\s*([\d.]+)s\s+(setup|call|teardown)\s+(\S+)")
HEADER = """\
# Tests marked `slow` (tests/conftest.py reads this file); `make test-fast` leaves them out.
# One test id per line; an id without [...] covers all its parametrizations, a file path all
# its tests. Written by tests/make_slow_list.py (quick tier: each test file's cheapest test,
# then the cheapest others within {budget:g} s of measured test time); edit by hand freely.
"""


def durations(text: str) -> collections.Counter:
    """Seconds per test id (setup + call + teardown) from pytest's ``--durations`` report."""
    seconds: collections.Counter = collections.Counter()
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            seconds[m.group(3)] += float(m.group(1))
    return seconds


def choose_fast(seconds: dict, budget: float) -> set:
    """Each file's cheapest test, then the cheapest others while the total stays in budget."""
    by_file = collections.defaultdict(list)
    for test, s in seconds.items():
        by_file[test.split("::")[0]].append((s, test))
    fast = {min(tests)[1] for f, tests in by_file.items() if f.startswith("tests/")}
    total = sum(seconds[t] for t in fast)
    for s, test in sorted((s, t) for t, s in seconds.items() if t not in fast):
        if total + s > budget:
            break
        fast.add(test)
        total += s
    return fast


def previous_slow() -> list:
    path = os.path.join(HERE, "slow_tests.txt")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=150.0)
    parser.add_argument("--from", dest="source", help="a saved pytest --durations=0 output")
    args, pytest_args = parser.parse_known_args(argv)
    if args.source:
        with open(args.source) as f:
            out = f.read()
    else:
        pytest_args = pytest_args or ["--doctest-modules", "infwidth", "tests", "-n", "2", "-m",
                                      "not slow and not notebook"]
        cmd = [sys.executable, "-m", "pytest", "-q", "--durations=0", "--durations-min=0",
               "-p", "no:cacheprovider", *pytest_args]
        out = subprocess.run(cmd, capture_output=True, text=True,
                             cwd=os.path.dirname(HERE)).stdout
    seconds = durations(out)
    fast = choose_fast(seconds, args.budget)
    slow = sorted(t for t in seconds if t not in fast)
    kept = [t for t in previous_slow() if t not in seconds]
    with open(os.path.join(HERE, "slow_tests.txt"), "w") as f:
        f.write(HEADER.format(budget=args.budget))
        f.writelines(f"{t}\n" for t in kept)
        f.writelines(f"{t}  # {seconds[t]:.1f} s\n" for t in slow)
    fast_s = sum(seconds[t] for t in fast)
    print(f"{len(seconds)} tests measured, {sum(seconds.values()):.0f} s; quick tier {len(fast)} "
          f"tests, {fast_s:.0f} s; {len(slow)} newly slow, {len(kept)} kept slow; wrote "
          f"tests/slow_tests.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
