"""Backups: taken after a good run, pruned by count and age, restored into a warehouse that goes on."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from churn_platform.core import backups as backup
from churn_platform.core.fields import METRICS_TABLE
from churn_platform.defs.backup import assets as backup_defs
from churn_platform.defs.resources import build_resources
from churn_platform_tests.conftest import query, run_elt
from churn_platform_tests.location import defs

TABLES = ("staging.customer_churn", "analytics.customer_churn", "analytics.rejected_rows",
          "analytics.churn_by_segment", METRICS_TABLE)


@pytest.fixture
def backup_dir(tmp_path, monkeypatch):
    folder = tmp_path / "backups"
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(folder))
    return folder


def take(warehouse):
    return dg.materialize([backup_defs.warehouse_backup], resources=build_resources(str(warehouse)))


def test_a_backup_restores_into_a_warehouse_whose_history_goes_on(
    tmp_path, sample_csv, warehouse, backup_dir
):
    first = run_elt(sample_csv, warehouse)
    result = take(warehouse)
    [taken] = backup.list_backups(backup_dir)
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["backup"].value == str(taken)
    assert event.materialization.metadata["size_bytes"].value > 0

    restored = tmp_path / "restored.duckdb"
    assert backup.main(["restore", str(taken), str(restored)]) == 0
    for table in TABLES:
        assert sorted(query(restored, f"SELECT * FROM {table}"), key=repr) == sorted(
            query(warehouse, f"SELECT * FROM {table}"), key=repr), table

    second = run_elt(sample_csv, restored)
    assert query(restored, f"SELECT snapshot_id FROM {METRICS_TABLE} ORDER BY snapshot_at") == [
        (first.run_id,), (second.run_id,)]


def test_restore_never_overwrites_a_warehouse(tmp_path, sample_csv, warehouse, backup_dir):
    run_elt(sample_csv, warehouse)
    take(warehouse)
    [taken] = backup.list_backups(backup_dir)
    with pytest.raises(FileExistsError):
        backup.restore_backup(taken, warehouse)


def test_list_prints_the_backups(sample_csv, warehouse, backup_dir, capsys):
    run_elt(sample_csv, warehouse)
    take(warehouse)
    assert backup.main(["list"]) == 0
    assert capsys.readouterr().out.strip() == str(backup.list_backups(backup_dir)[0])


def test_pruning_keeps_the_newest_by_count_and_age(tmp_path):
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    for hours in (1, 2, 3, 50, 200):
        (tmp_path / backup.backup_name(now - timedelta(hours=hours))).mkdir()
    removed = backup.prune_backups(tmp_path, keep=3, max_age=timedelta(hours=48), now=now)
    assert len(removed) == 2
    kept = [now - backup.taken_at(b) for b in backup.list_backups(tmp_path)]
    assert kept == [timedelta(hours=3), timedelta(hours=2), timedelta(hours=1)]
    backup.prune_backups(tmp_path, keep=3, max_age=timedelta(minutes=1), now=now)
    assert [now - backup.taken_at(b) for b in backup.list_backups(tmp_path)] == [timedelta(hours=1)]


def test_a_successful_elt_run_requests_one_backup(sample_csv, warehouse):
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("churn_elt_job")
    result = job.execute_in_process(
        instance=instance, resources=build_resources(str(warehouse), str(sample_csv))
    )
    assert query(warehouse, f"SELECT count(*) FROM {METRICS_TABLE}") == [(1,)]
    context = dg.build_run_status_sensor_context(
        sensor_name="backup_after_elt",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
    )
    request = backup_defs.backup_after_elt(context)
    assert request.run_key == result.run_id
    assert defs.resolve_sensor_def("backup_after_elt").default_status == dg.DefaultSensorStatus.RUNNING
