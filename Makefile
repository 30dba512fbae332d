# Two commands run everything on a fresh machine (Python 3.11, make, git):
#   make run    set up, then the Dagster UI with the sample data on http://127.0.0.1:3000
#   make test   set up, then the whole test suite with coverage
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: setup run test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
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
test: setup
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/dg check defs
	$(PY) -m pytest
