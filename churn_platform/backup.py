"""Warehouse backups: a consistent Parquet copy after each successful ELT run, kept by count and age.

`EXPORT DATABASE` reads one committed snapshot of every table, so a backup is consistent even if a
later run is queued behind it. Restore with `IMPORT DATABASE` into a fresh file:

    python -m churn_platform.backup list
    python -m churn_platform.backup restore BACKUP_DIR NEW_WAREHOUSE.duckdb
"""

import argparse
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb

from churn_platform import settings
from churn_platform.assets import METRICS, OWNERS
from churn_platform.jobs import WAREHOUSE_TAG, churn_elt_job
from churn_platform.warehouse import WarehouseResource, quote_literal

BACKUP = dg.AssetKey(["backups", "warehouse"])
_STAMP = "%Y%m%dT%H%M%S%fZ"


def backup_name(when: datetime) -> str:
    return f"warehouse-{when.strftime(_STAMP)}"


def taken_at(backup: Path) -> datetime:
    return datetime.strptime(backup.name.removeprefix("warehouse-"), _STAMP).replace(
        tzinfo=timezone.utc
    )


def list_backups(root: Path) -> list[Path]:
    """Complete backups, oldest first (a backup is complete once its folder has its final name)."""
    return sorted(p for p in root.glob("warehouse-*") if p.is_dir()) if root.exists() else []


def take_backup(conn: duckdb.DuckDBPyConnection, root: Path, when: datetime) -> Path:
    """Export every table to Parquet under a temporary name, then rename: no half backups."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / backup_name(when)
    partial = root / f".partial-{final.name}"
    shutil.rmtree(partial, ignore_errors=True)
    conn.execute(f"EXPORT DATABASE {quote_literal(str(partial))} (FORMAT parquet)")
    partial.rename(final)
    return final


def prune_backups(root: Path, keep: int, max_age: timedelta, now: datetime) -> list[Path]:
    """Remove backups beyond the newest `keep` or older than `max_age`; the newest always stays."""
    backups = list_backups(root)
    doomed = [
        b for i, b in enumerate(reversed(backups))
        if i > 0 and (i >= keep or now - taken_at(b) > max_age)
    ]
    for backup in doomed:
        shutil.rmtree(backup)
    return doomed


def restore_backup(backup: Path, database: Path) -> None:
    """Load a backup into a new warehouse file; refuses to overwrite an existing one."""
    if database.exists():
        raise FileExistsError(f"{database} exists: restore into a new file, then point"
                              " CHURN_DUCKDB_PATH at it")
    with duckdb.connect(str(database)) as conn:
        conn.execute(f"IMPORT DATABASE {quote_literal(str(backup))}")


@dg.asset(
    key=BACKUP,
    deps=[METRICS],
    group_name="operations",
    kinds={"duckdb", "parquet"},
    owners=OWNERS,
    description=(
        "A consistent Parquet copy of the whole warehouse (staging included: keep it as private as"
        " the warehouse), kept by CHURN_BACKUP_KEEP and CHURN_BACKUP_MAX_AGE_HOURS."
    ),
)
def warehouse_backup(warehouse: WarehouseResource) -> dg.MaterializeResult:
    root = settings.backup_dir()
    now = datetime.now(timezone.utc)
    with warehouse.get_connection(read_only=True) as conn:
        backup = take_backup(conn, root, now)
    removed = prune_backups(root, settings.backup_keep(), settings.backup_max_age(), now)
    return dg.MaterializeResult(
        metadata={
            "backup": str(backup),
            "size_bytes": sum(f.stat().st_size for f in backup.rglob("*") if f.is_file()),
            "backups_kept": len(list_backups(root)),
            "backups_removed": len(removed),
        }
    )


warehouse_backup_job = dg.define_asset_job(
    name="warehouse_backup_job",
    selection=[BACKUP],
    executor_def=dg.in_process_executor,
    tags=WAREHOUSE_TAG,
    description="Back up the warehouse; started after every successful churn_elt_job run.",
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[churn_elt_job],
    request_job=warehouse_backup_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def backup_after_elt(context: dg.RunStatusSensorContext):
    return dg.RunRequest(run_key=context.dagster_run.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List or restore warehouse backups.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="backups under CHURN_BACKUP_DIR, oldest first")
    restore = commands.add_parser("restore", help="load a backup into a new DuckDB file")
    restore.add_argument("backup", type=Path)
    restore.add_argument("database", type=Path)
    args = parser.parse_args(argv)
    if args.command == "list":
        for backup in list_backups(settings.backup_dir()):
            print(backup)
        return 0
    restore_backup(args.backup, args.database)
    print(f"restored {args.backup} into {args.database}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
