"""Helpers for the export tests: the real jobs over temporary files, and a PostgreSQL reader."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from churn_platform.core import settings
from churn_platform.core.settings import SAMPLE_CSV
from churn_platform_tests.location import platform_defs


def run_job(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, **kwargs):
    return defs.resolve_job_def(name).execute_in_process(instance=instance, **kwargs)


def pg_rows(dsn: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


@dataclass
class EltHistory:
    """A Dagster instance and a warehouse holding the history of several real ELT runs."""

    instance: dg.DagsterInstance
    database: Path
    defs: dg.Definitions

    def export(self, monkeypatch, dsn: str, **kwargs):
        monkeypatch.setenv(settings.METRICS_DSN_ENV, dsn)
        return run_job(self.defs, "metrics_export_job", self.instance, **kwargs)


ELT_RUNS = 4


@pytest.fixture(scope="session")
def elt_history(tmp_path_factory) -> Iterator[EltHistory]:
    """Four successful churn_elt_job runs on the sample: enough history for the drift rule;
    after the second, churn_model_job promotes a model, so the last two runs re-score."""
    database = tmp_path_factory.mktemp("history") / "warehouse.duckdb"
    defs = platform_defs(database, SAMPLE_CSV)
    with dg.instance_for_test() as instance:
        for run in range(ELT_RUNS):
            assert run_job(defs, "churn_elt_job", instance).success
            if run == 1:
                assert run_job(defs, "churn_model_job", instance).success
        yield EltHistory(instance, database, defs)
