# Every target needs only python3 (3.11+) with venv: the first one run creates .venv and
# installs infwidth with its dev, docs and bench extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --doctest-modules infwidth tests

.PHONY: test test-all test-fast slow-list long-list lint typecheck dist docs docs-clean notebooks demo bench bench-nt clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,docs,bench]'
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check infwidth tests benchmarks examples docs

# type hints of the package (it ships py.typed); the configuration is in pyproject.toml
typecheck: $(STAMP)
	$(PY) -m mypy

# the CI suite: the quick tier, the notebooks and the other tests within CI's time budget
# (every test not listed in tests/long_tests.txt, which `make long-list` writes)
test: lint
	$(PYTEST) -m "not long" $(PYTEST_ARGS)

# the full suite: every test, the notebooks and the long Monte Carlo checks included
# (about 65 minutes on 2 cores)
test-all: lint
	$(PYTEST) $(PYTEST_ARGS)

# the quick tier (under 3 minutes on 2 cores; 104 s measured): every test and doctest not
# marked slow (tests/slow_tests.txt, chosen by `make slow-list` within a time budget: each
# test file's cheapest test, then the cheapest others) or notebook
test-fast: lint
	$(PYTEST) -m "not slow and not notebook" $(PYTEST_ARGS)

# rewrites tests/slow_tests.txt from measured durations (run it on an idle machine)
slow-list: $(STAMP)
	$(PY) tests/make_slow_list.py --budget 150

# rewrites tests/long_tests.txt from a full run's durations: CI_BUDGET seconds of test time
# for the CI suite (make test-all PYTEST_ARGS="--durations=0" > FULL_RUN first)
CI_BUDGET ?= 1500
FULL_RUN ?= full-run.txt
long-list: $(STAMP)
	$(PY) tests/make_slow_list.py --ci-budget $(CI_BUDGET) --from $(FULL_RUN)

# wheel and sdist into dist/, checked by twine
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*

# the documentation site into docs/_build/html; any warning is an error
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

docs-clean:
	rm -rf docs/_build docs/api/generated

# re-executes every notebook in place and stores its outputs and figures
notebooks: $(STAMP)
	$(PY) notebooks/run_all.py $(NOTEBOOKS)

demo: $(STAMP)
	$(PY) -m infwidth demo $(DEMO_ARGS)

# NT_PYTHON=/path/to/python make bench  compares against neural-tangents in that environment;
# make bench-nt  builds that environment first (benchmarks/nt_env.sh) and compares
BENCH_ARGS := $(if $(NT_PYTHON),--nt-python $(NT_PYTHON),)
bench: $(STAMP)
	for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(PY) $$b $(BENCH_ARGS) || exit 1; done

bench-nt: $(STAMP)
	$(MAKE) bench NT_PYTHON="$$(benchmarks/nt_env.sh)"

clean: docs-clean
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info dist build
