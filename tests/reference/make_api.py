"""Writes api.json: every public name of neural-tangents 0.6.5 (``neural_tangents``,
``neural_tangents.stax``, ``neural_tangents.predict``) with its kind and signature.

Run under neural-tangents' own venv (``$(../shared/tools/nt-venv.sh) tests/reference/make_api.py``).
``tests/test_nt_parity_api.py`` compares infwidth's public names against this table.

Each parameter is stored as ``[name, kind, default]``; ``default`` is ``null`` when there is
none and otherwise a JSON encoding: numbers, strings, booleans and ``None`` as ``{"value": v}``,
tuples and lists as ``{"value": [...]}``, enum members as ``{"enum": "Class.MEMBER"}`` and
anything else (functions) as ``{"type": "function"}``.
"""

import enum
import inspect
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import neural_tangents as nt  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
MODULES = {"neural_tangents": nt, "neural_tangents.stax": nt.stax,
           "neural_tangents.predict": nt.predict}


def encode_default(value):
    if value is inspect.Parameter.empty:
        return None
    if isinstance(value, enum.Enum):
        return {"enum": f"{type(value).__name__}.{value.name}"}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, (tuple, list)) and all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return {"value": list(value)}
    return {"type": type(value).__name__}


def describe(obj):
    if inspect.ismodule(obj):
        return {"kind": "module"}
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return {"kind": "enum", "members": [m.name for m in obj]}
    kind = "class" if isinstance(obj, type) else "function" if callable(obj) else "value"
    entry = {"kind": kind}
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return entry
    entry["params"] = [[p.name, p.kind.name, encode_default(p.default)]
                       for p in sig.parameters.values()]
    return entry


table = {}
for modname, mod in MODULES.items():
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    table[modname] = {n: describe(getattr(mod, n)) for n in sorted(names)
                      if not n.startswith("_") and hasattr(mod, n)}

table["neural_tangents"]["Kernel"]["fields"] = list(nt.Kernel.__dataclass_fields__) \
    if hasattr(nt.Kernel, "__dataclass_fields__") else []
with open(os.path.join(here, "api.json"), "w") as f:
    json.dump({"version": nt.__version__, "modules": table}, f, indent=1, sort_keys=True)
print(f"wrote {sum(len(v) for v in table.values())} names")
