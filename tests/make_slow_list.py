"""Rewrites tests/slow_tests.txt (or tests/long_tests.txt) from measured test durations.

    python tests/make_slow_list.py [--budget 150] [--from FILE] [pytest arguments ...]
    python tests/make_slow_list.py --ci-budget 1500 --from FULL_RUN_OUTPUT

Runs the quick tier (default: ``--doctest-modules infwidth tests -n 2 -m "not slow and not
notebook"``) with ``--durations=0``, or reads the durations from the output of such a run
(``--from FILE``), and chooses the quick tier within ``--budget`` seconds of measured test
time: every test file keeps its cheapest test, then the cheapest of the other tests join until
the budget is spent. Everything else, and every test the list already marked slow, is listed
as slow. Measure on an otherwise idle machine: on a loaded one every test looks slow.

With ``--ci-budget`` (``make long-list``) it reads the durations of a full run
(``make test-all`` with ``--durations=0``) and chooses what ``make test``, the CI suite, runs
within that many seconds of test time: the quick tier and the notebooks, then the cheapest of
the other tests. The rest are written to tests/long_tests.txt (marked ``long``; only
``make test-all`` runs them).
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


def fill_budget(seconds: dict, budget: float, required: set) -> set:
    """The ``required`` tests, then the cheapest others while the total stays in budget."""
    chosen = set(required) & set(seconds)
    total = sum(seconds[t] for t in chosen)
    for s, test in sorted((s, t) for t, s in seconds.items() if t not in chosen):
        if total + s > budget:
            break
        chosen.add(test)
        total += s
    return chosen


def choose_fast(seconds: dict, budget: float) -> set:
    """Each file's cheapest test, then the cheapest others while the total stays in budget."""
    by_file = collections.defaultdict(list)
    for test, s in seconds.items():
        by_file[test.split("::")[0]].append((s, test))
    cheapest = {min(tests)[1] for f, tests in by_file.items() if f.startswith("tests/")}
    return fill_budget(seconds, budget, cheapest)


LONG_HEADER = """\
# Tests marked `long` (tests/conftest.py reads this file); `make test`, the CI suite, leaves
# them out and `make test-all` runs them. One test id per line. Written by
# tests/make_slow_list.py --ci-budget {budget:g} from a full run's durations (the CI suite: the
# quick tier and the notebooks, then the cheapest other tests within that many seconds of
# measured test time); edit by hand freely.
"""


def collected(marker: str) -> set:
    """Ids of the tests that ``-m marker`` selects (collection only)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
           "--doctest-modules", "infwidth", "tests", "-m", marker]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE)).stdout
    return {line.strip() for line in out.splitlines() if "::" in line}


def write_long(seconds: dict, budget: float) -> None:
    required = collected("not slow and not notebook") | collected("notebook")
    ci = fill_budget(seconds, budget, required)
    long = sorted(t for t in seconds if t not in ci)
    with open(os.path.join(HERE, "long_tests.txt"), "w") as f:
        f.write(LONG_HEADER.format(budget=budget))
        f.writelines(f"{t}  # {seconds[t]:.1f} s\n" for t in long)
    ci_s = sum(seconds[t] for t in ci)
    print(f"{len(seconds)} tests measured, {sum(seconds.values()):.0f} s; CI suite {len(ci)} "
          f"tests, {ci_s:.0f} s; {len(long)} long; wrote tests/long_tests.txt")


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
    parser.add_argument("--ci-budget", type=float,
                        help="write tests/long_tests.txt instead, from a full run (--from)")
    args, pytest_args = parser.parse_known_args(argv)
    if args.ci_budget is not None:
        if not args.source:
            parser.error("--ci-budget needs --from FILE: the output of a full run with "
                         "--durations=0 (make test-all PYTEST_ARGS=--durations=0)")
        with open(args.source) as f:
            write_long(durations(f.read()), args.ci_budget)
        return 0
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
