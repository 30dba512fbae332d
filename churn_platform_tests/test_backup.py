"""Backups: taken after a good run, pruned by count and age, restored into a warehouse that goes on."""

import logging
import shutil
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import pytest

from churn_platform.core import backups as backup
from churn_platform.core.errors import PlatformError
from churn_platform.core.tables import METRICS_TABLE
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
    before = warehouse.read_bytes()
    with pytest.raises(backup.BackupRefused, match="the target exists"):
        backup.restore_backup(taken, warehouse)
    assert warehouse.read_bytes() == before


def test_list_prints_the_backups(sample_csv, warehouse, backup_dir, capsys):
    run_elt(sample_csv, warehouse)
    take(warehouse)
    assert backup.main(["list"]) == 0
    assert capsys.readouterr().out.strip() == str(backup.list_backups(backup_dir)[0])


NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def real_backups(root, *ages: timedelta) -> list:
    """Backups the platform writes (of a one-table database), taken `ages` before NOW."""
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT range AS n FROM range(3)")
        return [backup.take_backup(conn, root, NOW - age) for age in ages]


def ages(root) -> list[timedelta]:
    return [NOW - backup.taken_at(b) for b in backup.list_backups(root)]


def test_pruning_keeps_the_newest_by_count_and_age(tmp_path):
    real_backups(tmp_path, *(timedelta(hours=h) for h in (1, 2, 3, 50, 200)))
    pruned = backup.prune_backups(tmp_path, keep=3, max_age=timedelta(hours=48), now=NOW)
    assert len(pruned.removed) == 2 and pruned.ignored == {}
    assert ages(tmp_path) == [timedelta(hours=3), timedelta(hours=2), timedelta(hours=1)]
    backup.prune_backups(tmp_path, keep=3, max_age=timedelta(minutes=1), now=NOW)
    assert ages(tmp_path) == [timedelta(hours=1)]


@pytest.mark.parametrize("keep, kept", [(4, 4), (3, 3), (1, 1), (0, 1)])
def test_keep_n_keeps_exactly_n(tmp_path, keep, kept):
    real_backups(tmp_path, *(timedelta(hours=h) for h in (1, 2, 3, 4)))
    backup.prune_backups(tmp_path, keep=keep, max_age=timedelta(days=30), now=NOW)
    assert ages(tmp_path) == [timedelta(hours=h) for h in (4, 3, 2, 1)][4 - kept:]


def test_a_backup_exactly_max_age_old_stays_and_one_a_microsecond_older_goes(tmp_path):
    max_age = timedelta(hours=48)
    real_backups(tmp_path, timedelta(hours=1), max_age, max_age + timedelta(microseconds=1))
    pruned = backup.prune_backups(tmp_path, keep=10, max_age=max_age, now=NOW)
    older = max_age + timedelta(microseconds=1)
    assert [NOW - backup.taken_at(b) for b in pruned.removed] == [older]
    assert ages(tmp_path) == [max_age, timedelta(hours=1)]


def test_pruning_touches_only_verified_backups_and_reports_the_rest(tmp_path):
    old, new = real_backups(tmp_path, timedelta(hours=5), timedelta(hours=1))
    strays = {
        "warehouse-manual-copy-before-upgrade": old,  # an operator's copy: sorts as the newest
        f"{new.name}.bak": new,
        backup.backup_name(NOW - timedelta(hours=3)): new,  # the right name, a damaged file
        f".partial-{backup.backup_name(NOW)}": new,  # left by a backup that was killed
    }
    for name, source in strays.items():
        shutil.copytree(source, tmp_path / name)
    damaged = tmp_path / backup.backup_name(NOW - timedelta(hours=3)) / "table-001.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"?")
    (tmp_path / "notes.txt").write_text("keep me")
    elsewhere = shutil.copytree(old, tmp_path.parent / f"{tmp_path.name}-elsewhere")
    link = tmp_path / backup.backup_name(NOW - timedelta(hours=4))
    link.symlink_to(elsewhere)  # the right name, but a link to a folder the platform never wrote
    pruned = backup.prune_backups(tmp_path, keep=1, max_age=timedelta(minutes=1), now=NOW)
    assert pruned.removed == [old] and pruned.kept == [new]
    assert set(pruned.ignored) == {*strays, "notes.txt", link.name}
    assert link.is_symlink() and (elsewhere / "manifest.json").exists()
    assert "SHA-256" in pruned.ignored[damaged.parent.name]
    assert all((tmp_path / name / "manifest.json").exists() for name in strays)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_keep_1_keeps_the_backup_just_taken_beside_strays_and_a_future_stamp(
    sample_csv, warehouse, backup_dir, monkeypatch
):
    run_elt(sample_csv, warehouse)
    [future] = real_backups(backup_dir, -timedelta(days=3650))  # a clock that was wrong once
    shutil.copytree(future, backup_dir / "warehouse-manual-copy-before-upgrade")
    shutil.copytree(future, backup_dir / f"{future.name}.bak")
    monkeypatch.setenv("CHURN_BACKUP_KEEP", "1")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([backup_defs.warehouse_backup], instance=instance,
                            resources=build_resources(str(warehouse)))
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    taken = metadata["backup"].value
    assert [str(b) for b in backup.list_backups(backup_dir)] == [taken]  # the future one went
    assert sorted(metadata["ignored_folders"].value) == [
        f"{future.name}.bak", "warehouse-manual-copy-before-upgrade"]
    assert (backup_dir / "warehouse-manual-copy-before-upgrade" / "manifest.json").exists()
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if e.level == logging.WARNING]
    assert any("warehouse-manual-copy-before-upgrade left alone" in w for w in warnings)


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


@pytest.mark.parametrize("table", [
    "CREATE TABLE t AS SELECT [1, 2] AS numbers",  # a type restore would not create
    'CREATE SCHEMA "Odd"; CREATE TABLE "Odd".t AS SELECT 1 AS n',  # a name outside the whitelist
])
def test_a_warehouse_restore_would_refuse_is_not_backed_up_at_all(tmp_path, table):
    with duckdb.connect() as conn:
        conn.execute(table)
        with pytest.raises(PlatformError, match="cannot back up"):
            backup.take_backup(conn, tmp_path, NOW)
    assert list(tmp_path.iterdir()) == []  # no half backup either
