"""The code location `churn_platform`: everything under `defs/`, plus what holds for all of it."""

import atexit
import functools
import gc
import os
from pathlib import Path

import dagster as dg

# Python's last collections at exit walk every object Dagster and the libraries loaded: about 1 s
# of every CLI run, run worker and server here, after the work is done and the warehouse closed.
# Frozen objects are skipped; the operating system frees the memory anyway.
atexit.register(gc.freeze)


@dg.definitions
def defs() -> dg.Definitions:
    # Dagster loads the location again each time it reconstructs the job (five times in one
    # `dagster job execute`): one environment, one set of definitions, built once.
    return _defs_for(tuple(sorted(os.environ.items())))


@functools.lru_cache(maxsize=1)
def _defs_for(environment: tuple) -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # Every job and every ad-hoc materialization runs its steps in one process: DuckDB takes
        # one writer, and a 1,000-row run should not start a Python process per step.
        dg.Definitions(executor=dg.in_process_executor),
    )
