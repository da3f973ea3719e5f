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
	$(PY) -m ruff check infwidth tests benchmarks

test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --doctest-modules infwidth tests

demo: $(STAMP)
	$(PY) -m infwidth demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/fc_kernel.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
