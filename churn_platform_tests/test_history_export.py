"""Landing mode's cohort tables in PostgreSQL and Grafana: three exports loaded by real runs
(test_landing_load.py's days), exported by the real metrics_export_job to a real PostgreSQL,
and the churn_history dashboard's panels run against it."""

from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pytest

from churn_platform.core import settings
from churn_platform.defs.landing.sensors import history_export_sensor
from churn_platform_tests.export_support import pg_rows
from churn_platform_tests.location import platform_defs
from churn_platform_tests.support import grafana
from churn_platform_tests.test_grafana_queries import _panel_problems, _run
from churn_platform_tests.test_landing_load import (
    D1,
    D2,
    D3,
    MONTHLY,
    RETENTION,
    drop,
    run_requested,
)

FEB = date(2026, 2, 1)


@pytest.fixture
def loaded(landing_folder, warehouse, sample_csv):
    """Three exports loaded through the sensor and the job; the instance and definitions."""
    defs = platform_defs(warehouse, sample_csv)
    job = defs.resolve_job_def("landing_export_job")
    with dg.instance_for_test() as instance:
        cursor = None
        for day in (D1, D2, D3):
            drop(landing_folder, day)
            cursor, runs = run_requested(instance, job, cursor)
            assert [r.success for r in runs] == [True]
        yield instance, defs


def export(instance, defs, monkeypatch, dsn):
    monkeypatch.setenv(settings.METRICS_DSN_ENV, dsn)
    return defs.resolve_job_def("metrics_export_job").execute_in_process(instance=instance)


def test_cohort_tables_reach_postgresql_replaced_whole(loaded, pg_dsn, monkeypatch):
    instance, defs = loaded
    assert export(instance, defs, monkeypatch, pg_dsn).success
    assert pg_rows(pg_dsn, "SELECT cohort_month, month, customers, retained"
                           " FROM churn_metrics.retention_by_cohort ORDER BY 1, 2") == RETENTION
    assert pg_rows(pg_dsn, "SELECT month, rule, churn_events FROM churn_metrics.monthly_churn"
                           " ORDER BY 1, 2") == MONTHLY
    assert pg_rows(pg_dsn, "SELECT retention_percent FROM churn_metrics.retention_by_cohort"
                           " WHERE cohort_month = '2025-10-01' ORDER BY month") == [
        (100.0,), (0.0,), (100.0,)]
    # Exported again: replaced, not appended.
    assert export(instance, defs, monkeypatch, pg_dsn).success
    assert pg_rows(pg_dsn, "SELECT count(*) FROM churn_metrics.monthly_churn") == [(2,)]


def test_single_file_mode_leaves_the_cohort_tables_alone(elt_history, pg_dsn, monkeypatch):
    assert elt_history.export(monkeypatch, pg_dsn).success
    assert pg_rows(pg_dsn, "SELECT count(*) FROM churn_metrics.retention_by_cohort") == [(0,)]


def test_every_history_panel_returns_what_its_panel_needs(loaded, pg_dsn, monkeypatch):
    instance, defs = loaded
    assert export(instance, defs, monkeypatch, pg_dsn).success
    dashboard = grafana.dashboards()["churn_history.json"]
    # The exports are dated January to March 2026: a range holding them, as the default 2 years
    # does from now.
    time_to = datetime(2026, 11, 29, tzinfo=timezone.utc)
    problems, series = {}, {}
    for panel in grafana.panels(dashboard):
        for target in panel["targets"]:
            sql = grafana.expand_macros(target["rawSql"], time_to - timedelta(days=730), time_to)
            assert "$" not in sql, f"unexpanded: {sql}"
            columns, rows = _run(pg_dsn, sql)
            if found := _panel_problems(panel, columns, rows):
                problems[panel["title"]] = found
            series[panel["title"]] = {r[1] for r in rows}
    assert problems == {}
    assert series == {"Retention by cohort": {"2023-07", "2024-05", "2025-08", "2025-10"},
                      "Churn events per month": {"churn_flag", "missing"}}


def test_a_load_requests_an_export_only_with_a_metrics_database(loaded, monkeypatch):
    instance, defs = loaded
    monkeypatch.delenv(settings.METRICS_DSN_ENV, raising=False)
    result = history_export_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, definitions=defs))
    assert result.run_requests == [] and "CHURN_METRICS_DSN" in result.skip_message
    monkeypatch.setenv(settings.METRICS_DSN_ENV, "postgresql://nowhere/metrics")
    result = history_export_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, definitions=defs))
    [request] = result.run_requests
    assert request.run_key.startswith("metrics-export-")
