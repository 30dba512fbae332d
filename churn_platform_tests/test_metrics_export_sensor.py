"""The asset sensor: one export per new metrics snapshot, none on re-evaluation, a skip without DSN."""

import dagster as dg

from churn_platform.core import settings
from churn_platform.defs.elt.assets import ELT_ASSETS
from churn_platform.defs.export.sensors import SOURCE_RUN_TAG, metrics_export_sensor
from churn_platform.defs.resources import build_resources


def _snapshot(instance, database, csv) -> str:
    result = dg.materialize(ELT_ASSETS, instance=instance,
                            resources=build_resources(str(database), str(csv)))
    return result.run_id


def _tick(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return metrics_export_sensor.evaluate_tick(context)


def test_one_run_request_per_new_materialization(instance, warehouse, sample_csv, monkeypatch):
    monkeypatch.setenv(settings.METRICS_DSN_ENV, "host=127.0.0.1 dbname=metrics")
    assert _tick(instance).run_requests == []  # nothing materialized yet

    first_run = _snapshot(instance, warehouse, sample_csv)
    first = _tick(instance)
    assert [r.run_key for r in first.run_requests] == [f"metrics-export-{first_run}"]
    assert first.run_requests[0].tags[SOURCE_RUN_TAG] == first_run

    # The same tick evaluated again (cursor not yet stored) asks for the same run_key: no second run.
    assert [r.run_key for r in _tick(instance).run_requests] == [f"metrics-export-{first_run}"]
    # Re-evaluated after the cursor moved: nothing new, nothing requested.
    assert _tick(instance, first.cursor).run_requests == []

    second_run = _snapshot(instance, warehouse, sample_csv)
    second = _tick(instance, first.cursor)
    assert [r.run_key for r in second.run_requests] == [f"metrics-export-{second_run}"]
    assert _tick(instance, second.cursor).run_requests == []


def test_without_dsn_the_sensor_skips_with_a_reason(instance, warehouse, sample_csv, monkeypatch):
    monkeypatch.delenv(settings.METRICS_DSN_ENV, raising=False)
    _snapshot(instance, warehouse, sample_csv)
    result = _tick(instance)
    assert result.run_requests == []
    assert settings.METRICS_DSN_ENV in result.skip_message
