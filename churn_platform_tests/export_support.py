"""Helpers for the export tests: the real jobs over temporary files, and a PostgreSQL reader."""

from pathlib import Path

import dagster as dg
import psycopg

from churn_platform.assets import ELT_ASSETS
from churn_platform.checks import ELT_CHECKS, freshness_checks
from churn_platform.export.asset import postgres_metrics
from churn_platform.export.job import metrics_export_job, metrics_export_sensor
from churn_platform.jobs import churn_elt_job
from churn_platform.resources import build_resources


def platform_defs(database: Path | str, csv: Path | str) -> dg.Definitions:
    """The code location's jobs and sensor, with the warehouse and source pointed at test files."""
    return dg.Definitions(
        assets=[*ELT_ASSETS, postgres_metrics],
        asset_checks=[*ELT_CHECKS, *freshness_checks],
        jobs=[churn_elt_job, metrics_export_job],
        sensors=[metrics_export_sensor],
        resources=build_resources(str(database), str(csv)),
    )


def run_job(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, **kwargs):
    return defs.resolve_job_def(name).execute_in_process(instance=instance, **kwargs)


def pg_rows(dsn: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()
