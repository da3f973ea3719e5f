import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# tests/reference/make_*.py run under neural-tangents in its own venv; never collect them
# (--doctest-modules would import every .py file under tests/).
collect_ignore_glob = ["reference/*.py"]


SLOW_TESTS = os.path.join(os.path.dirname(__file__), "slow_tests.txt")
LONG_TESTS = os.path.join(os.path.dirname(__file__), "long_tests.txt")


def _listed_ids(path=SLOW_TESTS):
    """Test ids listed in a test list (one per line, ``#`` starts a comment); an id without
    ``[...]`` covers all its parametrizations, a file path all its tests."""
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {line.split("#")[0].strip() for line in f} - {""}


def _listed(item, ids):
    return bool(ids & {item.nodeid, item.nodeid.split("[")[0], item.nodeid.split("::")[0]})


# the quick tier runs this many parametrizations of each parametrized test (the first ones, in
# collection order); the others run in the full suite only
FAST_PARAMETRIZATIONS = 1


def _mark_slow(items):
    import collections

    import pytest

    slow, long = _listed_ids(SLOW_TESTS), _listed_ids(LONG_TESTS)
    seen = collections.Counter()
    for item in items:
        function = item.nodeid.split("[")[0]
        if "[" in item.nodeid and "notebook" not in item.keywords:
            seen[function] += 1  # (a listed first parametrization does not promote the next)
        if _listed(item, long):
            item.add_marker(pytest.mark.long)
            item.add_marker(pytest.mark.slow)
        elif _listed(item, slow):
            item.add_marker(pytest.mark.slow)
        elif "[" in item.nodeid and "notebook" not in item.keywords:
            if seen[function] > FAST_PARAMETRIZATIONS:
                item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config, items):
    """Marks ``slow`` the tests listed in tests/slow_tests.txt and every parametrization of a
    test beyond its first ``FAST_PARAMETRIZATIONS`` (``make test-fast`` deselects them with
    ``-m "not slow and not notebook"``, so each test function still runs once there), and
    ``long`` (and ``slow``) those listed in tests/long_tests.txt (``make test``, the CI suite,
    deselects them with ``-m "not long"``; ``make test-all`` runs everything).

    Under JAX_ENABLE_X64=1 (the float64 CI leg) jax.random draws a different stream, so the
    Monte Carlo and training tests marked ``float32_stream``, whose statistical tolerances were
    set on the float32 draws, are skipped there; they run in the default (float32) leg."""
    import jax
    import pytest

    _mark_slow(items)
    if not jax.config.jax_enable_x64:
        return
    skip = pytest.mark.skip(reason="tolerance calibrated on the float32 random stream")
    for item in items:
        if "float32_stream" in item.keywords:
            item.add_marker(skip)
