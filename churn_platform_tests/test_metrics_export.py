"""The export into a real PostgreSQL: complete, idempotent, lossless, and read-only for Grafana."""

import logging
import uuid

import dagster as dg
import duckdb
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from churn_platform.core import settings
from churn_platform.core.export.postgres import describe_dsn
from churn_platform.defs.elt.assets import METRICS
from churn_platform.defs.export.assets import (
    EXPORT,
    REPORTED_ASSETS,
    REPORTED_CHECKS,
    postgres_metrics,
)
from churn_platform.defs.resources import build_resources
from churn_platform.defs.runs import RETRY_POLICY, WAREHOUSE_TAG
from churn_platform_tests.conftest import query
from churn_platform_tests.export_support import (
    ELT_RUNS,
    pg_rows,
    platform_defs,
    run_job,
)
from churn_platform_tests.postgres import free_port

HISTORY_TABLES = ("kpi_snapshots", "data_quality_snapshots", "missing_values", "churn_by_segment")


def _counts(dsn: str) -> dict[str, int]:
    return {
        t: pg_rows(dsn, f"SELECT count(*) FROM churn_metrics.{t}")[0][0]
        for t in (*HISTORY_TABLES, "asset_check_results", "asset_freshness", "exports")
    }


def test_export_brings_every_snapshot_and_twice_duplicates_nothing(elt_history, pg_dsn, monkeypatch):
    first = elt_history.export(monkeypatch, pg_dsn)
    assert first.success
    after_first = _counts(pg_dsn)
    second = elt_history.export(monkeypatch, pg_dsn)
    assert second.success
    after_second = _counts(pg_dsn)

    assert {t: after_second[t] for t in HISTORY_TABLES} == {t: after_first[t] for t in HISTORY_TABLES}
    assert after_second["kpi_snapshots"] == ELT_RUNS
    assert after_second["exports"] == 2
    # The same numbers as the warehouse, snapshot by snapshot.
    duck = query(elt_history.database,
                 "SELECT snapshot_id, run_id, total_records, rejected_rows, churn_rate_percent,"
                 " avg_monthly_charges, avg_tenure_months FROM analytics.data_quality_metrics"
                 " ORDER BY snapshot_id")
    exported = pg_rows(pg_dsn,
                       "SELECT snapshot_id, source_run_id, total_records, rejected_rows,"
                       " churn_rate_percent, avg_monthly_charges, avg_tenure_months"
                       " FROM churn_metrics.kpi_snapshots ORDER BY snapshot_id")
    assert exported == duck
    assert after_second["churn_by_segment"] == query(
        elt_history.database, "SELECT count(*) FROM analytics.churn_by_segment")[0][0]
    assert after_second["missing_values"] == ELT_RUNS * 10
    # Instance state: every check and asset, and the runs with their outcome.
    assert after_second["asset_check_results"] == len(REPORTED_CHECKS)
    assert after_second["asset_freshness"] == len(REPORTED_ASSETS)
    failed_checks = pg_rows(pg_dsn, "SELECT check_name FROM churn_metrics.asset_check_results"
                                    " WHERE passed IS NOT TRUE")
    assert failed_checks == []
    runs = dict(pg_rows(pg_dsn, "SELECT source_run_id, status FROM churn_metrics.pipeline_runs"))
    assert runs[first.run_id] == "SUCCESS"  # exported while STARTED, updated by the next export
    assert runs[second.run_id] == "STARTED"
    elt_runs = pg_rows(pg_dsn, "SELECT count(*), min(duration_seconds) FROM churn_metrics.pipeline_runs"
                               " WHERE job_name = 'churn_elt_job' AND status = 'SUCCESS'")[0]
    assert elt_runs[0] >= ELT_RUNS and elt_runs[1] > 0
    size = pg_rows(pg_dsn, "SELECT warehouse_file_bytes FROM churn_metrics.exports"
                           " WHERE source_run_id = %s", [second.run_id])[0][0]
    assert size == elt_history.database.stat().st_size + (
        elt_history.database.with_suffix(".duckdb.wal").stat().st_size
        if elt_history.database.with_suffix(".duckdb.wal").exists() else 0)
    # Materialization metadata a person can read in the UI.
    materialization = second.asset_materializations_for_node("metrics_export__postgres_metrics")[0]
    assert materialization.metadata["snapshots_added"].value == 0
    assert "password" not in materialization.metadata["target"].value


def test_failed_export_then_a_good_one_loses_nothing(tmp_path, pg_dsn, monkeypatch, sample_csv):
    database = tmp_path / "warehouse.duckdb"
    defs = platform_defs(database, sample_csv)
    # An unreachable server, with a password that must not show anywhere.
    down = make_conninfo(pg_dsn, port=str(free_port()), password="s3cret-pw", connect_timeout="2")
    with dg.instance_for_test() as instance:
        assert run_job(defs, "churn_elt_job", instance).success
        monkeypatch.setenv(settings.METRICS_DSN_ENV, pg_dsn)
        assert run_job(defs, "metrics_export_job", instance).success

        assert run_job(defs, "churn_elt_job", instance).success
        monkeypatch.setenv(settings.METRICS_DSN_ENV, down)
        # Without the job's retry policy: the failure itself is under test, not the wait.
        failed = dg.materialize([postgres_metrics], instance=instance, raise_on_error=False,
                                resources=build_resources(str(database), str(sample_csv)))
        assert not failed.success
        failure = failed.get_step_failure_events()[0].step_failure_data.error
        assert "metrics database (host=127.0.0.1" in failure.message
        assert "unavailable" in failure.message
        logs = "\n".join(str(e.message) for e in instance.all_logs(failed.run_id))
        assert "s3cret-pw" not in logs and "s3cret-pw" not in failure.to_string()

        assert run_job(defs, "churn_elt_job", instance).success
        monkeypatch.setenv(settings.METRICS_DSN_ENV, pg_dsn)
        assert run_job(defs, "metrics_export_job", instance).success

    snapshots = query(database, "SELECT run_id FROM analytics.data_quality_metrics ORDER BY 1")
    assert len(snapshots) == 3
    assert pg_rows(pg_dsn, "SELECT source_run_id FROM churn_metrics.kpi_snapshots ORDER BY 1") == snapshots
    segments = pg_rows(pg_dsn, "SELECT count(DISTINCT source_run_id) FROM churn_metrics.churn_by_segment")
    assert segments == [(3,)]


def test_export_job_queues_with_the_warehouse_and_retries():
    from churn_platform_tests.location import defs

    job = defs.resolve_job_def("metrics_export_job")
    assert job.tags.items() >= WAREHOUSE_TAG.items()
    assert job.op_retry_policy == RETRY_POLICY
    assert EXPORT.path[0] == "metrics_export"
    assert METRICS in defs.resolve_assets_def(EXPORT).asset_deps[EXPORT]
    sensor = defs.resolve_sensor_def("metrics_export_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "metrics_export_job"


def test_without_dsn_the_export_is_plainly_off_not_failed_nor_warned(
    tmp_path, sample_csv, monkeypatch
):
    """"Materialize all" runs the export too: without a DSN it says it is off, and no more."""
    monkeypatch.delenv(settings.METRICS_DSN_ENV, raising=False)
    with dg.instance_for_test() as instance:
        result = dg.materialize([postgres_metrics], instance=instance, resources=build_resources(
            str(tmp_path / "none.duckdb"), str(sample_csv)))
        assert result.success
        assert result.asset_materializations_for_node("metrics_export__postgres_metrics") == []
        [observation] = result.asset_observations_for_node("metrics_export__postgres_metrics")
        assert observation.metadata["export"].value == (
            f"off ({settings.METRICS_DSN_ENV} unset)")
        levels = {record.level for record in instance.all_logs(result.run_id)}
    assert max(levels) < logging.WARNING, levels


def test_reader_role_reads_but_cannot_write(elt_history, pg_dsn, pg_server, monkeypatch):
    reader = f"grafana_reader_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(settings.GRAFANA_DB_USER_ENV, reader)
    monkeypatch.setenv(settings.GRAFANA_DB_PASSWORD_ENV, "reader-pw")
    assert elt_history.export(monkeypatch, pg_dsn).success
    # Idempotent: a second export updates the role instead of failing on it.
    assert elt_history.export(monkeypatch, pg_dsn).success
    has_password = pg_rows(pg_server, "SELECT rolpassword IS NOT NULL, rolcanlogin, rolsuper,"
                                      " rolcreaterole FROM pg_authid WHERE rolname = %s", [reader])
    assert has_password == [(True, True, False, False)]

    reader_dsn = make_conninfo(pg_dsn, user=reader, password="reader-pw")
    with psycopg.connect(reader_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM churn_metrics.kpi_snapshots").fetchone()[0] == ELT_RUNS
        writes = [
            "INSERT INTO churn_metrics.kpi_snapshots (snapshot_id, source_run_id, snapshot_at,"
            " total_records, analytics_records, rejected_rows) VALUES ('x', 'x', now(), 1, 1, 0)",
            "DELETE FROM churn_metrics.exports",
            "CREATE TABLE churn_metrics.grafana_scratch (x int)",
            "CREATE TABLE public.grafana_scratch (x int)",
        ]
        for statement in writes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SET default_transaction_read_only = off")  # even when it tries
                conn.execute(statement)


def test_describe_dsn_never_shows_the_password():
    assert describe_dsn("host=db port=5433 dbname=metrics user=exporter password=hunter2") == (
        "host=db port=5433 dbname=metrics user=exporter")
    assert "hunter2" not in describe_dsn("postgresql://exporter:hunter2@db:5433/metrics")
    assert describe_dsn("not a dsn ===") == "<unparsable connection string>"


def test_history_older_than_the_retention_leaves_postgres_and_stays_out(
    tmp_path, pg_dsn, monkeypatch
):
    database = tmp_path / "warehouse.duckdb"
    defs = platform_defs(database, settings.SAMPLE_CSV)
    with dg.instance_for_test() as instance:
        old, new = (run_job(defs, "churn_elt_job", instance).run_id for _ in range(2))
        with duckdb.connect(str(database)) as conn:
            for table in ("analytics.data_quality_metrics", "analytics.churn_by_segment"):
                conn.execute(f"UPDATE {table} SET snapshot_at = snapshot_at - INTERVAL 500 DAY"
                             " WHERE run_id = ?", [old])
        monkeypatch.setenv("CHURN_METRICS_RETENTION_DAYS", "400")
        monkeypatch.setenv(settings.METRICS_DSN_ENV, pg_dsn)
        assert run_job(defs, "metrics_export_job", instance).success
        with psycopg.connect(pg_dsn) as conn:  # a row exported before the retention was lowered
            conn.execute("INSERT INTO churn_metrics.kpi_snapshots SELECT 'ancient', 'r0',"
                         " now() - interval '500 days', total_records, analytics_records,"
                         " rejected_rows, churn_rate_percent, avg_monthly_charges,"
                         " avg_tenure_months, exported_at FROM churn_metrics.kpi_snapshots")
        assert run_job(defs, "metrics_export_job", instance).success
    for table in HISTORY_TABLES:
        runs = {r[0] for r in pg_rows(pg_dsn, f"SELECT source_run_id FROM churn_metrics.{table}")}
        assert runs == {new}, table
