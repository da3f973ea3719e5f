"""Rewrites tests/slow_tests.txt from measured test durations (``make slow-list``).

    python tests/make_slow_list.py [--threshold 2.0] [pytest arguments ...]

Runs the test suite (default: ``tests -n 2``, notebooks excluded) with ``--durations=0`` and
lists every test whose setup + call took longer than ``--threshold`` seconds. Measure on an
otherwise idle machine: on a loaded one every test looks slow.
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
# One test id per line; an id without [...] covers all its parametrizations.
# Written by tests/make_slow_list.py (threshold {threshold} s per test); edit by hand freely.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=2.0)
    args, pytest_args = parser.parse_known_args(argv)
    pytest_args = pytest_args or ["tests", "-n", "2", "-m", "not notebook"]
    cmd = [sys.executable, "-m", "pytest", "-q", "--durations=0", "--durations-min=0.05",
           "-p", "no:cacheprovider", *pytest_args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE)).stdout
    seconds = collections.Counter()
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            seconds[m.group(3)] += float(m.group(1))
    slow = sorted(t for t, s in seconds.items() if s > args.threshold)
    total = sum(seconds.values())
    fast = total - sum(seconds[t] for t in slow)
    with open(os.path.join(HERE, "slow_tests.txt"), "w") as f:
        f.write(HEADER.format(threshold=args.threshold))
        f.writelines(f"{t}  # {seconds[t]:.1f} s\n" for t in slow)
    print(f"{len(seconds)} tests, {total:.0f} s in all; {len(slow)} slow ({total - fast:.0f} s), "
          f"the rest {fast:.0f} s; wrote tests/slow_tests.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
