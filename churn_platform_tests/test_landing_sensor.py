"""The landing sensor on a real folder and a test instance: partitions for new content only."""

import os
import time

import dagster as dg
import pytest

from churn_platform.core import settings
from churn_platform.defs.landing.assets import EXPORTS_PARTITIONS, landing_export_file
from churn_platform.defs.landing.sensors import EXPORT_DATE_TAG, landing_sensor
from churn_platform_tests.location import defs

HOUR_AGO = time.time() - 3600


def drop(landing_folder, name, text):
    path = landing_folder / name
    path.write_text(text)
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    return path


def tick(instance, cursor=None):
    """One evaluation; its partition requests applied as the daemon would."""
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(),
                                      cursor=cursor, definitions=defs)
    result = landing_sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_single_file_mode_skips_with_a_reason(instance, monkeypatch):
    monkeypatch.delenv(settings.LANDING_DIR_ENV, raising=False)
    result = tick(instance)
    assert result.run_requests == []
    assert "CHURN_LANDING_DIR is not set" in result.skip_message


def test_landing_mode_refuses_to_start_without_a_key(instance, landing_folder, monkeypatch):
    drop(landing_folder, "crm_2026-11-27.csv", "CustomerID,Churn\nC1,No\n")
    monkeypatch.delenv(settings.PSEUDONYMIZATION_KEY_ENV)
    with pytest.raises(Exception, match="CHURN_PSEUDONYMIZATION_KEY") as error:
        tick(instance)
    assert "openssl rand" in str(error.value)
    assert instance.get_dynamic_partitions(EXPORTS_PARTITIONS.name) == []


def test_new_exports_become_partitions_in_date_order_once(instance, landing_folder):
    drop(landing_folder, "crm_2026-11-28.csv", "CustomerID,Churn\nC1,Yes\n")
    drop(landing_folder, "crm_2026-11-27.csv", "CustomerID,Churn\nC1,No\n")
    drop(landing_folder, "notes.txt", "not an export")
    drop(landing_folder, "forged\nINFO - all good.csv", "")
    first = tick(instance)
    keys = [r.partition_key for r in first.run_requests]
    assert [k.split("__")[0] for k in keys] == ["2026-11-27", "2026-11-28"]
    assert [r.run_key for r in first.run_requests] == keys
    assert [r.tags[EXPORT_DATE_TAG] for r in first.run_requests] == ["2026-11-27", "2026-11-28"]
    assert instance.get_dynamic_partitions(EXPORTS_PARTITIONS.name) == keys

    # Nothing new: the same bytes again, under another name, are no new partition.
    drop(landing_folder, "crm_2026-11-27 (1).csv", "CustomerID,Churn\nC1,No\n")
    again = tick(instance, first.cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []
    assert "'notes.txt': refused, not a .csv file" in again.skip_message
    assert f"the same content as export {keys[0]}" in again.skip_message
    assert "'forged\\nINFO - all good.csv': refused, empty" in again.skip_message
    assert "\n" not in again.skip_message

    # Changed bytes under an old name: a new export; the old partition stays.
    drop(landing_folder, "crm_2026-11-28.csv", "CustomerID,Churn\nC1,Yes\nC2,No\n")
    changed = tick(instance, again.cursor)
    [request] = changed.run_requests
    assert request.partition_key.startswith("2026-11-28__") and request.partition_key not in keys
    assert instance.get_dynamic_partitions(EXPORTS_PARTITIONS.name) == [*keys,
                                                                         request.partition_key]


def test_the_export_file_asset_finds_its_file_by_content(instance, landing_folder):
    drop(landing_folder, "crm_2026-11-27.csv", "CustomerID,Churn\nC1,No\n")
    [request] = tick(instance).run_requests
    os.rename(landing_folder / "crm_2026-11-27.csv", landing_folder / "renamed_2026-11-27.csv")
    result = dg.materialize([landing_export_file], instance=instance,
                            partition_key=request.partition_key)
    [materialization] = result.asset_materializations_for_node("landing__export_file")
    assert materialization.metadata["file"].value == "renamed_2026-11-27.csv"
    assert materialization.metadata["date_from"].value == "name"
    assert request.partition_key.endswith(materialization.metadata["sha256"].value[:12])

    # Its content changed since: the partition fails, saying so; it is not silently re-read.
    drop(landing_folder, "renamed_2026-11-27.csv", "CustomerID,Churn\nC1,Yes\n")
    failed = dg.materialize([landing_export_file], instance=instance,
                            partition_key=request.partition_key, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no file in the landing folder" in failure.step_failure_data.error.message


def test_the_code_location_runs_the_sensor_by_default():
    [sensor] = [s for s in defs.sensors if s.name == "landing_sensor"]
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "landing_export_job"


def test_the_cursor_spares_rereading_unchanged_files(instance, landing_folder, monkeypatch):
    from churn_platform.core import landing

    drop(landing_folder, "crm_2026-11-27.csv", "CustomerID,Churn\nC1,No\n")
    first = tick(instance)
    reads = []
    real_read = landing._read_hash
    monkeypatch.setattr(landing, "_read_hash", lambda path: reads.append(path) or real_read(path))
    tick(instance, first.cursor)
    assert reads == []
    tick(instance)  # a lost cursor costs a re-read, nothing else
    assert [p.name for p in reads] == ["crm_2026-11-27.csv"]
