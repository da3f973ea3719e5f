"""Sphinx configuration for the infwidth documentation (``make docs``).

Sphinx rather than MkDocs: autodoc with napoleon reads the Google-style docstrings the package
already has, myst-nb renders the notebooks with the outputs stored in them (nothing is executed
while the docs build), and ``-W`` turns every warning, a broken reference or a malformed
docstring included, into an error.

Three things are generated here at every build, so they follow the code without editing:
``api/*.rst`` (one page per package, every name in its ``__all__``), ``migration_table.inc``
(every neural-tangents 0.6.5 name, from ``nt_names.json``, against infwidth's) and
``notebooks/`` (copies of the repository's notebooks).
"""

from __future__ import annotations

import glob
import importlib
import inspect
import json
import os
import shutil
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import infwidth  # noqa: E402

project = "infwidth"
author = "The infwidth developers"
copyright = "2026, The infwidth developers"
release = version = infwidth.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
html_theme = "furo"
html_title = f"infwidth {version}"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # notebooks are stored with their outputs (`make notebooks`)
nb_merge_streams = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": False}
suppress_warnings = ["myst.header"]

# ---------------------------------------------------------------------------- API reference
# walked recursively through the modules named in each __all__; a module without __all__
# contributes the public names it defines itself
PACKAGES = ["infwidth", "infwidth.parameterization"]


def _public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, v in vars(module).items() if not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
            and (inspect.isclass(v) or inspect.isfunction(v))]


def _walk(name: str, seen: dict) -> None:
    module = importlib.import_module(name)
    names = _public_names(module)
    seen[name] = names
    for n in names:
        obj = getattr(module, n)
        if isinstance(obj, types.ModuleType) and obj.__name__.startswith("infwidth"):
            if obj.__name__ not in seen:
                _walk(obj.__name__, seen)


def _directive(module: str, name: str, obj) -> str:
    """The autodoc directive for one name."""
    target = f"{module}.{name}"
    extra = ""
    if inspect.isclass(obj):
        return (f".. autoclass:: {target}\n   :members:\n   :exclude-members: count, index\n"
                + extra)
    if callable(obj):
        return f".. autofunction:: {target}\n" + extra
    return f".. autodata:: {target}\n   :no-value:\n" + extra


def write_api_pages() -> list[str]:
    seen: dict[str, list[str]] = {}
    for p in PACKAGES:
        _walk(p, seen)
    out_dir = os.path.join(HERE, "api", "generated")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    pages = []
    documented: set[int] = set()
    for module, names in seen.items():
        mod = importlib.import_module(module)
        members = [(n, getattr(mod, n)) for n in names if n != "__version__"
                   and not isinstance(getattr(mod, n), types.ModuleType)]
        submodules = [getattr(mod, n).__name__ for n in names
                      if isinstance(getattr(mod, n), types.ModuleType)]
        title = f"``{module}``"
        lines = [title, "=" * len(title), "", f".. automodule:: {module}", "   :no-members:", ""]
        if submodules:
            lines += ["Subpackages: " + ", ".join(f":doc:`{s} <{s}>`" for s in submodules), ""]
        if members:
            lines += [".. rubric:: Names", ""]
            lines += [f"- :py:obj:`{module}.{n}`" for n, _ in members] + [""]
        for n, obj in members:  # an object re-exported here is documented where first seen
            if id(obj) not in documented:
                lines += [_directive(module, n, obj), ""]
            documented.add(id(obj))
        with open(os.path.join(out_dir, f"{module}.rst"), "w") as f:
            f.write("\n".join(lines))
        pages.append(module)
    return pages


# ---------------------------------------------------------------------------- migration table
NT_MODULES = {  # neural-tangents module -> where infwidth looks for the same name, in order
    "neural_tangents": ["infwidth", "infwidth.empirical"],
    "neural_tangents.stax": ["infwidth.stax"],
    "neural_tangents.predict": ["infwidth.predict"],
}
NOT_NEEDED = {  # names that infwidth does not have, and why
    "neural_tangents.experimental": "TensorFlow conversions: infwidth does not depend on "
                                    "TensorFlow.",
    "neural_tangents.stax.layer": "not needed: a layer factory returns its "
                                  "`(init_fn, apply_fn, kernel_fn)` triple directly.",
    "neural_tangents.stax.requires": "not needed: a layer declares what its kernel needs as "
                                     "metadata read by the machinery (see the architecture "
                                     "page).",
}


def write_migration_table() -> None:
    with open(os.path.join(HERE, "nt_names.json")) as f:
        nt = json.load(f)
    rows = ["| neural-tangents 0.6.5 | infwidth | |", "|---|---|---|"]
    counts = {"same": 0, "absent": 0}
    for nt_module, names in nt["modules"].items():
        for n in names:
            full = f"{nt_module}.{n}"
            hit = next((m for m in NT_MODULES[nt_module]
                        if hasattr(importlib.import_module(m), n)), None)
            if hit:
                counts["same"] += 1
                rows.append(f"| `{full}` | {{py:obj}}`{hit}.{n}` | same name |")
            else:
                counts["absent"] += 1
                why = NOT_NEEDED.get(full, "not available yet")
                rows.append(f"| `{full}` | - | {why} |")
    summary = (f"{counts['same']} of {counts['same'] + counts['absent']} public names of "
               f"neural-tangents {nt['version']} exist in infwidth {version} under the same "
               f"name; the table is regenerated from the code at every documentation build.\n\n")
    with open(os.path.join(HERE, "migration_table.inc"), "w") as f:
        f.write(summary + "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------- notebooks
def copy_notebooks() -> None:
    out_dir = os.path.join(HERE, "notebooks")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    for p in sorted(glob.glob(os.path.join(ROOT, "notebooks", "[0-9]*.ipynb"))):
        shutil.copy(p, out_dir)


write_api_pages()
write_migration_table()
copy_notebooks()
