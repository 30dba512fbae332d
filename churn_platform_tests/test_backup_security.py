"""Restore accepts only backups the platform wrote and that verify; nothing in a folder is executed.

A refused restore names the folder and why, and leaves no file where the warehouse would go.
Backups and the warehouse are owner-only whatever the umask.
"""

import json
import os
import shutil
import stat
import subprocess
import sys

import dagster as dg
import pytest

from churn_platform.core import backups as backup
from churn_platform.core.backup_manifest import MANIFEST, BackupRefused
from churn_platform.defs.backup import assets as backup_defs
from churn_platform.defs.elt.assets import ELT_ASSETS, METRICS
from churn_platform.defs.elt.checks import ELT_CHECKS
from churn_platform.defs.resources import build_resources
from churn_platform.defs.warehouse_io import WarehouseResource
from churn_platform_tests.conftest import query, run_elt


@pytest.fixture
def taken(tmp_path, sample_csv, warehouse, monkeypatch):
    """A real backup of a real warehouse, as the backup job writes it."""
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(tmp_path / "backups"))
    run_elt(sample_csv, warehouse)
    dg.materialize([backup_defs.warehouse_backup], resources=build_resources(str(warehouse)))
    [folder] = backup.list_backups(tmp_path / "backups")
    return folder


def refused(folder, target, why: str) -> None:
    """Restore is refused with the folder and `why` in the message, and writes nothing."""
    before = sorted(os.listdir(target.parent))
    with pytest.raises(BackupRefused) as error:
        backup.restore_backup(folder, target)
    assert str(folder) in str(error.value) and why in str(error.value), error.value
    assert not os.path.lexists(target)
    assert sorted(os.listdir(target.parent)) == before  # no temporary file either


def forge_export(folder, tmp_path, other_warehouse) -> None:
    """A folder as `EXPORT DATABASE` writes one, whose SQL writes a file, attaches another
    warehouse and reads the password file."""
    folder.mkdir()
    leak = tmp_path / "leak.csv"
    (folder / "schema.sql").write_text(
        f"ATTACH '{other_warehouse}' AS other (READ_ONLY);\n"
        "CREATE TABLE stolen AS SELECT * FROM other.staging.customer_churn;\n"
        "CREATE TABLE passwd AS SELECT * FROM read_text('/etc/passwd');\n"
        f"COPY (SELECT 1 AS pwned) TO '{leak}';\n"
    )
    (folder / "load.sql").write_text(f"COPY (SELECT 2 AS pwned) TO '{leak}';\n")


@pytest.mark.parametrize("with_manifest", [False, True])
def test_a_forged_folder_with_sql_is_refused_and_nothing_runs(
    tmp_path, taken, warehouse, with_manifest
):
    forged = tmp_path / "forged"
    forge_export(forged, tmp_path, warehouse)
    if with_manifest:  # a real manifest and its files, beside the SQL
        for entry in taken.iterdir():
            shutil.copy(entry, forged / entry.name)
    target = tmp_path / "restored.duckdb"
    refused(forged, target, "unexpected entries" if with_manifest else "no manifest.json")
    assert not (tmp_path / "leak.csv").exists()


def test_a_real_backup_restores_every_table_with_its_row_count(tmp_path, taken, warehouse):
    target = tmp_path / "restored.duckdb"
    backup.restore_backup(taken, target)
    manifest = json.loads((taken / MANIFEST).read_text())
    assert len(manifest["tables"]) == 5
    for table in manifest["tables"]:
        name = f'{table["schema"]}.{table["name"]}'
        count = query(target, f"SELECT count(*) FROM {name}")[0][0]
        assert count == table["row_count"] == query(warehouse, f"SELECT count(*) FROM {name}")[0][0]
        assert query(target, f"DESCRIBE {name}") == query(warehouse, f"DESCRIBE {name}")
    assert sorted(os.listdir(tmp_path)) == ["backups", "restored.duckdb", "warehouse.duckdb"]


def test_a_tampered_file_is_refused(tmp_path, taken):
    data = taken / "table-001.parquet"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1  # one bit, same size
    data.write_bytes(bytes(raw))
    refused(taken, tmp_path / "restored.duckdb", "does not match its SHA-256")


def edit_manifest(folder, edit) -> None:
    document = json.loads((folder / MANIFEST).read_text())
    edit(document, document["tables"][0])
    (folder / MANIFEST).write_text(json.dumps(document))


def test_a_manifest_naming_a_file_outside_the_folder_is_refused(tmp_path, taken):
    first = json.loads((taken / MANIFEST).read_text())["tables"][0]["file"]
    shutil.copy(taken / first, tmp_path / "x.parquet")  # same bytes, so the hash would match
    edit_manifest(taken, lambda doc, table: table.update(file="../x.parquet"))
    refused(taken, tmp_path / "restored.duckdb", "is not table-NNN.parquet")


def test_a_listed_file_that_is_a_symbolic_link_is_refused(tmp_path, taken):
    data = taken / "table-001.parquet"
    shutil.move(data, tmp_path / "elsewhere.parquet")
    data.symlink_to(tmp_path / "elsewhere.parquet")
    refused(taken, tmp_path / "restored.duckdb", "cannot be opened as a regular file")


def test_a_backup_path_that_duckdb_would_expand_as_a_pattern_is_refused(tmp_path, taken):
    shutil.copytree(taken, tmp_path / "x1")  # what x[1] matches, as a pattern
    shutil.copytree(taken, tmp_path / "x[1]")
    refused(tmp_path / "x[1]", tmp_path / "restored.duckdb", "pattern character")


def test_a_backup_folder_that_is_a_symbolic_link_is_refused(tmp_path, taken):
    (tmp_path / "link").symlink_to(taken)
    refused(tmp_path / "link", tmp_path / "restored.duckdb", "symbolic link")


@pytest.mark.parametrize("edit, why", [
    (lambda doc, t: t.update(schema='analytics"; COPY (SELECT 1) TO \'/tmp/x\'; --'),
     "lower-case letters"),
    (lambda doc, t: t.update(name="temp"), "reserved"),
    (lambda doc, t: t["columns"][0].update(type="VARCHAR); ATTACH '/tmp/x.duckdb' AS x; --"),
     "is not one a backup may hold"),
    (lambda doc, t: t["columns"][0].update(name="a\x00b"), "without NUL"),
    (lambda doc, t: t.update(row_count="12"), "row_count is not a count"),
    (lambda doc, t: t.update(extra=1), "exactly the fields"),
    (lambda doc, t: doc.update(version=3), "version 1 or 2"),
])
def test_a_manifest_outside_the_whitelist_is_refused(tmp_path, taken, edit, why):
    edit_manifest(taken, edit)
    refused(taken, tmp_path / "restored.duckdb", why)


def test_a_row_count_that_does_not_match_is_refused_and_leaves_nothing(tmp_path, taken):
    edit_manifest(taken, lambda doc, table: table.update(row_count=table["row_count"] + 1))
    refused(taken, tmp_path / "restored.duckdb", "the manifest says")


def test_a_manifest_that_is_not_json_is_refused(tmp_path, taken):
    (taken / MANIFEST).write_text("[" * 100_000)
    refused(taken, tmp_path / "restored.duckdb", "not valid JSON")


def test_restore_refuses_to_write_through_a_dangling_symbolic_link(tmp_path, taken):
    target = tmp_path / "restored.duckdb"
    target.symlink_to(tmp_path / "elsewhere.duckdb")
    with pytest.raises(BackupRefused, match="symbolic link"):
        backup.restore_backup(taken, target)
    assert not (tmp_path / "elsewhere.duckdb").exists() and target.is_symlink()


def test_restore_refuses_a_target_with_a_wal_beside_it(tmp_path, taken):
    (tmp_path / "restored.duckdb.wal").write_bytes(b"stale")  # DuckDB would replay it
    with pytest.raises(BackupRefused, match="would be replayed"):
        backup.restore_backup(taken, tmp_path / "restored.duckdb")
    assert not (tmp_path / "restored.duckdb").exists()


def test_a_mistyped_backup_path_fails_in_one_line_and_the_retry_works(tmp_path, taken):
    target = tmp_path / "restored.duckdb"
    command = [sys.executable, "-m", "churn_platform.backup", "restore"]
    wrong = subprocess.run([*command, f"{taken}x", str(target)], capture_output=True, text=True)
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines() == [
        f"restore failed: {taken}x: refused: does not exist"]
    assert not os.path.lexists(target)
    right = subprocess.run([*command, str(taken), str(target)], capture_output=True, text=True)
    assert right.returncode == 0, right.stderr
    assert query(target, "SELECT count(*) FROM staging.customer_churn")[0][0] > 0


def test_list_shows_only_verified_backups(tmp_path, taken, capsys):
    shutil.copytree(taken, tmp_path / "backups" / "warehouse-manual-copy-before-upgrade")
    damaged = tmp_path / "backups" / backup.backup_name(backup.taken_at(taken).replace(year=2025))
    shutil.copytree(taken, damaged)
    (damaged / "table-002.parquet").unlink()
    assert backup.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(taken)]
    assert "warehouse-manual-copy-before-upgrade" in err and f"{damaged.name}: " in err


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_warehouse_wal_and_backups_are_owner_only_whatever_the_umask(
    tmp_path, sample_csv, warehouse, monkeypatch
):
    seen = {}

    @dg.asset(deps=[METRICS])
    def wal_mode(warehouse: WarehouseResource) -> None:
        """Mid-run, the WAL holds the run's writes (the checkpoint comes at the run's end)."""
        seen["wal"] = mode(f"{warehouse.database}.wal")

    monkeypatch.setenv("CHURN_BACKUP_DIR", str(tmp_path / "backups"))
    old = os.umask(0o022)
    try:
        dg.materialize([*ELT_ASSETS, *ELT_CHECKS, wal_mode],
                       resources=build_resources(str(warehouse), str(sample_csv)))
        assert os.umask(0o022) == 0o022  # restored after the run
        dg.materialize([backup_defs.warehouse_backup], resources=build_resources(str(warehouse)))
        [taken] = backup.list_backups(tmp_path / "backups")
        backup.restore_backup(taken, tmp_path / "restored.duckdb")
        (tmp_path / "after.txt").write_text("")
    finally:
        os.umask(old)
    assert seen == {"wal": 0o600}
    assert mode(warehouse) == 0o600 and mode(tmp_path / "restored.duckdb") == 0o600
    assert mode(tmp_path / "backups") == mode(taken) == 0o700
    assert {mode(f) for f in taken.iterdir()} == {0o600}
    assert mode(tmp_path / "after.txt") == 0o644  # the caller's umask is the caller's again
