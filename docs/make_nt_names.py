"""Writes nt_names.json: the public names of neural-tangents 0.6.5, by module, which the
migration page (migration.md, built by conf.py) maps onto infwidth's names.

Runs in the neural-tangents environment, not in infwidth's:

    TF_CPP_MIN_LOG_LEVEL=3 "$(benchmarks/nt_env.sh)" docs/make_nt_names.py
"""

import json
import os

import neural_tangents as nt

MODULES = {"neural_tangents": nt, "neural_tangents.stax": nt.stax,
           "neural_tangents.predict": nt.predict}


def public(module):
    names = getattr(module, "__all__", None) or dir(module)
    return sorted(n for n in names if not n.startswith("_"))


out = {"version": nt.__version__, "modules": {k: public(m) for k, m in MODULES.items()}}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nt_names.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(f"wrote {path}: {sum(map(len, out['modules'].values()))} names")
