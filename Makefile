# Two commands run everything on a fresh machine (Python 3.11, make, git):
#   make run    set up, then the Dagster UI with the sample data on http://127.0.0.1:3000
#   make test   set up, then the whole test suite with coverage
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: setup run test mutation

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# dg reads the project from pyproject.toml; VIRTUAL_ENV tells it the project's own venv is meant.
test: setup
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/dg check defs
	$(PY) -m pytest

# Mutation testing of the core (docs/mutation-testing.md): a fresh mutmut run, then its summary per
# module. MUTANTS narrows it, e.g. MUTANTS='churn_platform.core.transform*'; MUTATION_CHILDREN
# sets the parallel workers (2: the shared CI and dev machines have two cores).
MUTATION_CHILDREN ?= 2
MUTANTS ?=
mutation: setup
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(PY) -m churn_platform_tests.support.mutation_summary
