"""The notebooks: stored with fresh outputs (cheap, no execution) and still running (marked
``notebook``: executes each one, as ``make notebooks`` does, and compares what it shows)."""

import glob
import importlib.util
import os

import pytest

HERE = os.path.dirname(__file__)
NOTEBOOK_DIR = os.path.join(HERE, "..", "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "[0-9]*.ipynb")))
IDS = [os.path.basename(p) for p in NOTEBOOKS]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", os.path.join(NOTEBOOK_DIR,
                                                                          "run_all.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shown(nb):
    """Per code cell, the kinds of output it shows: text streams, results, images, errors."""
    kinds = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        k = set()
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                k.add(f"stream:{out.name}")
            elif out.output_type == "error":
                k.add("error")
            else:
                k.update(m for m in out.get("data", {}) if m in ("image/png", "text/plain"))
        kinds.append(sorted(k))
    return kinds


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_are_fresh(path):
    """Every code cell was executed, in order, without error, from the code now in the cell
    (the fingerprint ``make notebooks`` stored); the figures are stored."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    stored = nb.metadata.get("infwidth", {}).get("code_sha256")
    assert stored == _run_all().code_fingerprint(nb), (
        f"{os.path.basename(path)}: code cells changed since its outputs were stored; "
        f"run `make notebooks NOTEBOOKS={os.path.basename(path)[:2]}`")
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert None not in counts and counts == sorted(counts), f"{path}: cells not all run in order"
    assert not any("error" in k for k in _shown(nb)), f"{path}: a stored output is an error"
    uses_plt = any("plt." in c.source or "plot_" in c.source for c in code)
    if uses_plt:
        assert any("image/png" in k for k in _shown(nb)), f"{path}: no figure stored"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_and_shows_what_is_stored(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    stored = _shown(nb)
    env_backup = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # as make notebooks
    try:
        client = nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        if env_backup is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backup
    assert _shown(nb) == stored, f"{path}: the outputs differ in kind from the stored ones"
