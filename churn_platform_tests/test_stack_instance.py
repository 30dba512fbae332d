"""The stack's dagster.yaml as a real Dagster instance against a real PostgreSQL: it creates its
storage there, records runs and their events, and queues runs one warehouse writer at a time."""

import shutil

import dagster as dg
import psycopg
import pytest
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from psycopg.conninfo import conninfo_to_dict

from churn_platform.defs.runs import WAREHOUSE_TAG
from churn_platform_tests.location import defs
from churn_platform_tests.stack import STACK_INSTANCE


@pytest.fixture
def stack_instance(tmp_path, pg_dsn, monkeypatch):
    """deploy/dagster.yaml in a DAGSTER_HOME of its own, its env vars naming a fresh database."""
    shutil.copy(STACK_INSTANCE, tmp_path / "dagster.yaml")
    pg = conninfo_to_dict(pg_dsn)
    for name, value in {
        "HOST": pg["host"],
        "PORT": pg["port"],
        "USER": pg["user"],
        "PASSWORD": "unused-with-trust-auth",
        "DB": pg["dbname"],
    }.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", str(value))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        yield instance


def test_the_instance_keeps_runs_events_and_schedules_in_postgresql(stack_instance, pg_dsn):
    @dg.asset
    def probe() -> int:
        return 1

    result = dg.materialize([probe], instance=stack_instance)

    assert result.success
    with psycopg.connect(pg_dsn) as conn:
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        runs = conn.execute("SELECT run_id, status FROM runs").fetchall()
        materialized = conn.execute(
            "SELECT count(*) FROM event_logs"
            " WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            [result.run_id],
        ).fetchone()[0]
    assert {"runs", "event_logs", "jobs", "job_ticks", "instigators"} <= tables
    assert runs == [(result.run_id, "SUCCESS")]
    assert materialized == 1
    assert (
        stack_instance.get_latest_materialization_event(dg.AssetKey("probe")).run_id
        == result.run_id
    )


def test_runs_are_queued_one_warehouse_writer_at_a_time(stack_instance):
    coordinator = stack_instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    assert queue.max_concurrent_runs == 1
    [key] = WAREHOUSE_TAG
    assert {"key": key, "limit": 1} in queue.tag_concurrency_limits
    # The jobs that open DuckDB carry the tag, so the limit also holds if the run limit is raised.
    for job in defs.get_repository_def().get_all_jobs():
        if not job.name.startswith("__"):
            assert key in job.tags, job.name


def test_runs_start_beside_the_code_server_where_the_warehouse_is_mounted(stack_instance):
    assert isinstance(stack_instance.run_launcher, DefaultRunLauncher)


def test_the_schedule_does_not_catch_up_a_backlog(stack_instance):
    assert stack_instance.scheduler.max_catchup_runs == 1
