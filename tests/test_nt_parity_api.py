"""infwidth's public names and signatures against neural-tangents 0.6.5's.

``tests/reference/api.json`` is generated from the installed neural-tangents by
``tests/reference/make_api.py``: every public name of ``neural_tangents``, ``neural_tangents.stax``
and ``neural_tangents.predict`` with its parameters (name, kind, default). A migrating user's
code calls these by name, positionally and by keyword, so each must exist in the matching
infwidth module with the same parameter names in the same order, the same kinds and the same
defaults. infwidth may add parameters after neural-tangents' ones (keyword-only or defaulted),
which keeps every call that neural-tangents accepts valid.
"""

import enum
import importlib
import inspect
import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "reference", "api.json")) as _f:
    API = json.load(_f)["modules"]

OURS = {"neural_tangents": "infwidth", "neural_tangents.stax": "infwidth.stax",
        "neural_tangents.predict": "infwidth.predict"}
# neural_tangents.experimental holds the TensorFlow converter (jax2tf), out of scope for a
# jax + numpy core.
NOT_PROVIDED = {("neural_tangents", "experimental")}

# Differences that wait on the core: neural-tangents' Kernel constructor takes its fields in
# another order (infwidth appends is_reversed ... mask2 after its own, as keywords).
PENDING_CORE = {
    ("neural_tangents", "Kernel"): "Kernel fields is_reversed/is_input/batch_axis/channel_axis/"
                                   "mask1/mask2 and their order wait on the core Kernel rewrite",
}


def _case(m, n):
    if (m, n) in PENDING_CORE:
        return pytest.param(m, n, marks=pytest.mark.xfail(reason=PENDING_CORE[m, n], strict=True))
    return (m, n)


CASES = [_case(m, n) for m, names in API.items() for n in names if (m, n) not in NOT_PROVIDED]
IDS = [f"{m.split('.')[-1]}.{n}" for m, names in API.items() for n in names
       if (m, n) not in NOT_PROVIDED]


def _encode_default(value):
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


def _same_default(theirs, ours):
    if theirs is None:  # required in neural-tangents: a default here accepts the same calls
        return True
    if "value" in theirs or "enum" in theirs:
        return theirs == ours
    return ours is not None and "value" not in ours  # a function default: any callable


def signature_differences(theirs, obj):
    """Lists how ``obj``'s signature departs from neural-tangents' entry ``theirs``."""
    params = list(inspect.signature(obj).parameters.values())
    has_var_keyword = any(p.kind.name == "VAR_KEYWORD" for p in params)
    problems = []
    for i, (name, kind, default) in enumerate(theirs["params"]):
        if kind == "VAR_KEYWORD":
            if not has_var_keyword:
                problems.append(f"no **{name}")
            continue
        if i >= len(params):
            problems.append(f"missing parameter {name!r}")
            continue
        p = params[i]
        if p.name != name:
            problems.append(f"parameter {i} is {p.name!r}, neural-tangents has {name!r}")
            continue
        if p.kind.name != kind:
            problems.append(f"{name!r} is {p.kind.name}, neural-tangents has {kind}")
        ours = _encode_default(p.default)
        if not _same_default(default, ours):
            problems.append(f"{name!r} defaults to {ours}, neural-tangents to {default}")
    for p in params[len(theirs["params"]):]:
        if p.kind.name in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD") and \
                p.default is inspect.Parameter.empty:
            problems.append(f"extra required parameter {p.name!r}")
    return problems


@pytest.mark.parametrize("module,name", CASES, ids=IDS)
def test_public_name_and_signature(module, name):
    theirs = API[module][name]
    mod = importlib.import_module(OURS[module])
    assert hasattr(mod, name), f"{OURS[module]}.{name} is missing"
    obj = getattr(mod, name)
    if theirs["kind"] == "module":
        assert inspect.ismodule(obj)
        return
    if theirs["kind"] == "enum":
        assert issubclass(obj, enum.Enum)
        missing = set(theirs["members"]) - {m.name for m in obj}
        assert not missing, f"{name} lacks members {sorted(missing)}"
        return
    if "params" in theirs:
        problems = signature_differences(theirs, obj)
        assert not problems, f"{OURS[module]}.{name}: " + "; ".join(problems)


def test_kernel_fields():
    from infwidth import Kernel
    theirs = API["neural_tangents"]["Kernel"]["fields"]
    missing = [f for f in theirs if not hasattr(Kernel, f) and
               f not in getattr(Kernel, "__dataclass_fields__", {})]
    assert not missing, f"Kernel lacks neural-tangents' fields {missing}"


def test_checker_can_fail():
    """The comparison notices a renamed parameter, a changed default, a lost default, a
    missing ``**kwargs`` and a reordering; it allows extra defaulted or
    keyword-only parameters and a default where neural-tangents has none."""
    theirs = {"params": [["a", "POSITIONAL_OR_KEYWORD", None],
                         ["b", "POSITIONAL_OR_KEYWORD", {"value": 1.0}],
                         ["kw", "VAR_KEYWORD", None]]}
    bad = {
        "renamed": lambda a, c=1.0, **kw: 0,
        "changed": lambda a, b=2.0, **kw: 0,
        "lost_default": lambda a, b, **kw: 0,
        "no_kwargs": lambda a, b=1.0: 0,
        "reordered": lambda b=1.0, a=0, **kw: 0,
    }
    good = {
        "extras": lambda a, b=1.0, c=None, *, d, e=0, **kw: 0,
        "default_added": lambda a=0, b=1.0, **kw: 0,
    }
    for name, fn in bad.items():
        assert signature_differences(theirs, fn), name
    for name, fn in good.items():
        assert not signature_differences(theirs, fn), name



def test_option_enums_are_accepted_where_strings_are():
    """neural-tangents code passes enum members (stax.Padding.SAME) where a string goes."""
    import jax

    from infwidth import stax
    KEY = jax.random.PRNGKey(0)
    same = stax.Conv(2, (3,), padding=stax.Padding.SAME).init_fn(KEY, (1, 5, 1))[0]
    valid = stax.Conv(2, (3,), padding=stax.Padding.VALID).init_fn(KEY, (1, 5, 1))[0]
    assert (same, valid) == ((1, 5, 2), (1, 3, 2))
    stax.GlobalSelfAttention(4, 3, 3, 2, attention_mechanism=stax.AttentionMechanism.RELU,
                             pos_emb_type=stax.PositionalEmbedding.NONE)
    stax.Aggregate(implementation=stax.AggregateImplementation.SPARSE)
    with pytest.raises(ValueError, match="padding must be one of"):
        stax.Conv(2, (3,), padding="SAM")
