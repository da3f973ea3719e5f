# Two commands set everything up: `make test` and `make demo`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
PYTEST_WORKERS ?= 2

.PHONY: test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check infwidth tests benchmarks examples

test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --doctest-modules infwidth tests

demo: $(STAMP)
	$(PY) -m infwidth demo $(DEMO_ARGS)

# NT_PYTHON=$$(../shared/tools/nt-venv.sh) make bench  compares against neural-tangents
BENCH_ARGS := $(if $(NT_PYTHON),--nt-python $(NT_PYTHON),)
bench: $(STAMP)
	for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(PY) $$b $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
