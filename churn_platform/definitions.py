"""The code location `churn_platform`: everything under `defs/`, plus what holds for all of it."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # Every job and every ad-hoc materialization runs its steps in one process: DuckDB takes
        # one writer, and a 1,000-row run should not start a Python process per step.
        dg.Definitions(executor=dg.in_process_executor),
    )
