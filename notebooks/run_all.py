"""Executes notebooks top to bottom and stores them with their outputs and figures.

    python notebooks/run_all.py                 # every notebook in this folder
    python notebooks/run_all.py 04 08           # those whose file name starts with 04 or 08
    make notebooks NOTEBOOKS="04 08"            # the same through make

Each notebook runs with this folder as its working directory and matplotlib's inline backend
(figures are stored as PNG outputs, also without a display).
The stored notebook records, in its metadata, a fingerprint of its code cells
(``infwidth.code_sha256``); ``tests/test_notebooks.py`` checks it, so a code cell edited
without re-running the notebook is caught without executing anything. Markdown edits do not
need a re-run. The time each notebook took is printed and stored (``infwidth.run_seconds``).
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INLINE = "module://matplotlib_inline.backend_inline"  # figures stored as PNG outputs


def code_fingerprint(nb) -> str:
    """SHA-256 of the code cells' sources, in order (outputs and markdown excluded)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode())
            h.update(b"\0")
    return h.hexdigest()


def run(path: str, timeout: int = 1200) -> float:
    """Executes the notebook at ``path`` in place; returns the seconds it took."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    os.environ["MPLBACKEND"] = INLINE
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": HERE}}).execute()
    seconds = time.perf_counter() - t0
    for cell in nb.cells:  # per-cell timestamps would make every run a diff
        cell.metadata.pop("execution", None)
    nb.metadata["infwidth"] = {"code_sha256": code_fingerprint(nb),
                               "run_seconds": round(seconds, 1)}
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> int:
    paths = sorted(glob.glob(os.path.join(HERE, "[0-9]*.ipynb")))
    if argv:
        paths = [p for p in paths if any(os.path.basename(p).startswith(a) for a in argv)]
        if not paths:
            print(f"run_all.py: no notebook in {HERE} starts with {' or '.join(argv)}")
            return 1
    total = 0.0
    for p in paths:
        seconds = run(p)
        total += seconds
        print(f"{os.path.basename(p):40s} {seconds:7.1f} s", flush=True)
    print(f"{'total':40s} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
