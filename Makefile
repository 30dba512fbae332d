# Two commands run everything on a fresh machine (Python 3.11, make, git):
#   make run    set up, then the Dagster UI with the sample data on http://127.0.0.1:3000
#   make test   set up, then the whole test suite with coverage
VENV ?= .venv
# requires-python in pyproject.toml is 3.11 (the pinned dependencies are tested there): python3.11
# when it is on PATH, else python3, which must then be 3.11. Override with PYTHON=/path/to/python.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: setup run test mutation

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "churn_platform needs Python 3.11 (requires-python >=3.11,<3.12); '$(PYTHON)' is" \
	    "$$($(PYTHON) --version 2>&1 || echo 'not found'). Install Python 3.11 and run" \
	    "make PYTHON=/path/to/python3.11." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The launcher gives `dagster dev` default SIGINT/SIGTERM handling and its own process group:
# SIGTERM (or Ctrl-C) stops it and all its children within seconds, even when make was started
# with SIGINT ignored (`make run &`, nohup).
PORT ?= 3000
run: setup
	$(PY) -m churn_platform.launch -- $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

# dg reads the project from pyproject.toml; VIRTUAL_ENV tells it the project's own venv is meant.
# The suite on every core (pytest-xdist): a test module stays on one worker, so its module-scoped
# fixtures are built once; most tests wait on Dagster processes and servers, not on the CPU.
test: setup
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/dg check defs
	$(PY) -m pytest -n auto --dist loadfile

# Mutation testing of the core (docs/mutation-testing.md): a fresh mutmut run, then its summary per
# module. MUTANTS narrows it, e.g. MUTANTS='churn_platform.core.transform*'; MUTATION_CHILDREN
# sets the parallel workers (2: the shared CI and dev machines have two cores).
MUTATION_CHILDREN ?= 2
MUTANTS ?=
mutation: setup
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(PY) -m churn_platform_tests.support.mutation_summary
