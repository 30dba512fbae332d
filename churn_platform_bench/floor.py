"""The floor: the platform's own SQL, run by plain DuckDB in one process, without Dagster.

    python -m churn_platform_bench.floor PLAN_JSON DATABASE

The plan (the statements and their parameters) is built from the project's SQL builders by the
benchmark's parent process, so the floor does exactly the same typing, rejection, imputation,
pseudonymization, banding and metrics, and the platform/floor ratio measures what orchestration
costs rather than a difference in SQL. The child imports only duckdb: the builders' modules import
Dagster, whose start-up belongs to the platform's cost, not the floor's. Tables are written as
the IO manager writes them (staging's ordered read first, then CREATE OR REPLACE, or append to
history, each in a transaction, row order not preserved); no asset checks run here: they are part
of what the platform must fit in its overhead.
"""

import json
import os
import sys
import uuid
from datetime import datetime, timezone

import duckdb


def plan(source_csv: str) -> list[dict]:
    """The floor's statements, from the platform's builders (imported here: they import Dagster).

    Each entry writes one table: `select` into `table`, replacing it or, with `history`, appended
    to it; `prepare` (a statement and its parameters) runs first, as the IO manager runs it.
    """
    from churn_platform.core.mapping import load_mapping
    from churn_platform.core.quality import churn_by_segment_sql, data_quality_sql
    from churn_platform.core.settings import DEFAULT_SOURCE_MAPPING
    from churn_platform.core.source import staging_table
    from churn_platform.core.tables import (
        ANALYTICS_TABLE,
        METRICS_TABLE,
        REJECTED_TABLE,
        SEGMENT_TABLE,
        STAGING_TABLE,
    )
    from churn_platform.core.transform import analytics_sql, rejected_sql

    run_id = str(uuid.uuid4())
    snapshot = {"snapshot_id": run_id, "run_id": run_id, "snapshot_at": "now"}
    staging = f"SELECT * FROM {STAGING_TABLE}"
    analytics = f"SELECT * FROM {ANALYTICS_TABLE}"
    rejected = f"SELECT * FROM {REJECTED_TABLE}"
    # The platform's default mapping (the benchmark's children run without CHURN_SOURCE_MAPPING).
    fields = load_mapping(DEFAULT_SOURCE_MAPPING).fields
    source = staging_table(source_csv, DEFAULT_SOURCE_MAPPING)
    analytics_select, analytics_params = analytics_sql(staging, None, datetime.now(), fields)

    def write(table, select, params=None, history=False, prepare=None):
        return {"table": table, "select": select, "params": dict(params or {}),
                "history": history, "prepare": prepare}

    return [
        write(STAGING_TABLE, source.sql, {**source.params, "load_timestamp": "now"},
              prepare=(source.prepare[0], dict(source.prepare[1]))),
        write(ANALYTICS_TABLE, analytics_select, {**analytics_params, "processed_timestamp": "now"}),
        write(REJECTED_TABLE, rejected_sql(staging, analytics, fields)),
        write(SEGMENT_TABLE, churn_by_segment_sql(analytics), snapshot, history=True),
        write(METRICS_TABLE, data_quality_sql(staging, analytics, rejected, fields), snapshot,
              history=True),
    ]


def write_plan(source_csv: str, path: str) -> str:
    with open(path, "w") as handle:
        json.dump(plan(source_csv), handle)
    return path


def run(plan_path: str, database: str) -> None:
    """Execute the plan in one connection; "now" stands for the current UTC time."""
    with open(plan_path) as handle:
        statements = json.load(handle)
    config = {}
    if os.environ.get("CHURN_DUCKDB_MEMORY_LIMIT"):
        config["memory_limit"] = os.environ["CHURN_DUCKDB_MEMORY_LIMIT"]
    if os.environ.get("CHURN_DUCKDB_THREADS"):
        config["threads"] = os.environ["CHURN_DUCKDB_THREADS"]
    with duckdb.connect(database, config=config) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS staging; CREATE SCHEMA IF NOT EXISTS analytics")
        for step in statements:
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            params = {k: now if v == "now" else v for k, v in step["params"].items()}
            table, select = step["table"], step["select"]
            conn.execute("BEGIN TRANSACTION")
            if step["prepare"]:  # as the IO manager: the prepared read in order, the write not
                conn.execute("SET SESSION preserve_insertion_order = true")
                conn.execute(*step["prepare"])
            conn.execute("SET SESSION preserve_insertion_order = false")
            if step["history"]:  # created empty with the snapshot's columns, then appended
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS {select} LIMIT 0", params)
                conn.execute(f"INSERT INTO {table} BY NAME {select}", params)
            else:
                conn.execute(f"CREATE OR REPLACE TABLE {table} AS {select}", params)
            if step["prepare"]:
                conn.execute("DROP TABLE _prepared")
            conn.execute("COMMIT")


if __name__ == "__main__":
    run(*sys.argv[1:3])
