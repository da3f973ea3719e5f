"""Every public name (walked through the packages' ``__all__``, as the API reference in docs/
is generated) has a docstring, and every public function a runnable example."""

import importlib
import inspect
import types


def _public(package="infwidth", seen=None):
    seen = {} if seen is None else seen
    module = importlib.import_module(package)
    seen[package] = list(getattr(module, "__all__", []))
    for name in seen[package]:
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType) and obj.__name__ not in seen:
            _public(obj.__name__, seen)
    return [(f"{m}.{n}", getattr(importlib.import_module(m), n))
            for m, names in seen.items() for n in names if n != "__version__"]


def test_all_names_exist_and_are_documented():
    names = _public()
    assert len(names) > 100  # the walk reached the subpackages
    undocumented = [n for n, obj in names if not isinstance(obj, types.ModuleType)
                    and not (inspect.getdoc(obj) or "").strip()]
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_public_functions_have_runnable_examples():
    missing = [n for n, obj in _public() if inspect.isfunction(obj)
               and ">>>" not in (inspect.getdoc(obj) or "")]
    assert not missing, f"public functions whose docstring has no >>> example: {missing}"
