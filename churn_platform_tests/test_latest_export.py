"""Landing mode's ELT follows the latest export: real folder, real sensors, real runs.

Exports are dropped one at a time and out of date order; after each load the real
`latest_export_sensor` is ticked and the churn_elt_job runs it requests are executed, as the
daemon would. churn_elt_job is also run unasked (the hourly schedule does): it must take the
latest loaded export too, never an older one and never the file at CHURN_SOURCE_CSV.
"""

import dagster as dg
import pytest

from churn_platform_tests.conftest import query
from churn_platform_tests.location import defs, platform_defs
from churn_platform_tests.test_landing_load import (
    D1,
    D2,
    D3,
    DAYS,
    HEADER,
    MTM,
    drop,
    row,
    run_requested,
)

LATEST = defs.resolve_sensor_def("latest_export_sensor")


@pytest.fixture
def jobs(warehouse, sample_csv):
    location = platform_defs(warehouse, sample_csv)
    return location.resolve_job_def("landing_export_job"), location.resolve_job_def("churn_elt_job")


def staged(database) -> list[tuple]:
    """Staging's customers as (CustomerID, Tenure, Churn), and the files they came from."""
    return query(database, 'SELECT "CustomerID", "Tenure", "Churn", source_file'
                           " FROM staging.customer_churn ORDER BY ALL")


def expected(path, day) -> list[tuple]:
    return sorted((r.split(",")[0], r.split(",")[3], r.split(",")[9], str(path))
                  for r in DAYS[day])


def analytics_rows(database) -> list[tuple]:
    return query(database, "SELECT * EXCLUDE (processed_timestamp) FROM analytics.customer_churn"
                           " ORDER BY ALL")


def analytics_count(database) -> int:
    return query(database, "SELECT count(*) FROM analytics.customer_churn")[0][0]


def follow(instance, elt, cursor):
    """One tick of latest_export_sensor, and the ELT runs it requests; returns its result and
    the runs (each must succeed with every check passing)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = LATEST.evaluate_tick(context)
    runs = [run_elt(instance, elt, request.tags) for request in result.run_requests or []]
    return result, runs


def run_elt(instance, elt, tags=None):
    result = elt.execute_in_process(instance=instance, tags=tags or {})
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), [
        (e.check_name, e.metadata) for e in evaluations if not e.passed]
    return result


def test_three_exports_out_of_order_analytics_holds_the_latest_dated(landing_folder, instance, jobs,
                                                                      warehouse):
    load, elt = jobs
    third = drop(landing_folder, D3)  # the newest export arrives first
    cursor, runs = run_requested(instance, load)
    assert [r.success for r in runs] == [True]
    result, runs = follow(instance, elt, None)
    [request] = result.run_requests
    assert request.run_key.startswith(f"elt-after-{D3.isoformat()}__")
    assert len(runs) == 1
    assert staged(warehouse) == expected(third, D3)
    assert analytics_count(warehouse) == len(DAYS[D3])

    # Two older exports arrive late: each loads into history, neither starts the ELT.
    for day in (D1, D2):
        drop(landing_folder, day, later=60)
        cursor, runs = run_requested(instance, load, cursor)
        assert [r.success for r in runs] == [True]
        result, runs = follow(instance, elt, result.cursor)
        assert result.run_requests == [] and runs == []
        assert "older than the latest" in result.skip_message
    assert query(warehouse, "SELECT count(*) FROM analytics.history_exports")[0][0] == 3

    # The ELT run unasked (the hourly schedule) still takes the latest-dated export.
    run_elt(instance, elt)
    assert staged(warehouse) == expected(third, D3)
    assert analytics_count(warehouse) == len(DAYS[D3])
    total, source = query(warehouse, "SELECT total_records, source_file"
                                     " FROM analytics.data_quality_metrics"
                                     " ORDER BY snapshot_at DESC LIMIT 1")[0]
    assert (total, source) == (len(DAYS[D3]), str(third))
    # Nothing new loaded: the next tick requests nothing.
    again, _ = follow(instance, elt, result.cursor)
    assert again.run_requests == [] and "no export loaded" in again.skip_message


def test_a_newer_export_replaces_analytics_and_a_corrupt_one_keeps_the_last_good(
        landing_folder, instance, jobs, warehouse):
    load, elt = jobs
    first = drop(landing_folder, D1)
    cursor, _ = run_requested(instance, load)
    result, runs = follow(instance, elt, None)
    assert len(runs) == 1 and staged(warehouse) == expected(first, D1)
    second = drop(landing_folder, D2, later=60)
    cursor, _ = run_requested(instance, load, cursor)
    result, runs = follow(instance, elt, result.cursor)
    assert len(runs) == 1 and staged(warehouse) == expected(second, D2)
    before = analytics_rows(warehouse)

    # The newest export is corrupt: its partition fails, nothing follows, nothing is lost.
    drop(landing_folder, D3, text=HEADER + "\n" + row("A", 7, MTM, "No") + '\nC-B,40,"Female,22\n',
         later=120)
    cursor, runs = run_requested(instance, load, cursor)
    assert [r.success for r in runs] == [False]
    result, runs = follow(instance, elt, result.cursor)
    assert result.run_requests == [] and runs == []
    run_elt(instance, elt)  # the hourly run: still the last good export
    assert staged(warehouse) == expected(second, D2)
    assert analytics_rows(warehouse) == before


def test_the_elt_in_landing_mode_before_any_load_fails_saying_so(landing_folder, jobs, warehouse,
                                                                  instance):
    _, elt = jobs
    result = elt.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = event.step_failure_data.user_failure_data.description
    assert "no export of the landing folder" in message and str(landing_folder) in message
    assert query(warehouse, "SELECT count(*) FROM information_schema.tables"
                            " WHERE table_schema IN ('staging', 'analytics')")[0][0] == 0


def hourly_tick(instance):
    context = dg.build_schedule_context(instance=instance)
    return defs.resolve_schedule_def("hourly_churn_elt").evaluate_tick(context)


def test_the_hourly_schedule_waits_in_landing_mode_until_an_export_is_loaded(
        landing_folder, instance, jobs, monkeypatch):
    load, _ = jobs
    waiting = hourly_tick(instance)
    assert waiting.run_requests == [] and "no export of" in waiting.skip_message
    drop(landing_folder, D1)
    run_requested(instance, load)
    assert len(hourly_tick(instance).run_requests) == 1
    # Single-file mode: every hour, as before.
    monkeypatch.delenv("CHURN_LANDING_DIR")
    with dg.instance_for_test() as fresh:
        assert len(hourly_tick(fresh).run_requests) == 1
