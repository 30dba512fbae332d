"""Warehouse backups: consistent Parquet copies of the warehouse, kept by count and age.

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

import duckdb

from churn_platform.core import settings
from churn_platform.core.publish import candidates
from churn_platform.core.warehouse import quote_ident, quote_literal, rollback

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
    """Export every published table to Parquet under a temporary name, then rename: no half
    backups. Candidates a killed or held-back run left are not published: they are dropped in a
    transaction that is rolled back after the export, so the file itself is left as it was."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / backup_name(when)
    partial = root / f".partial-{final.name}"
    shutil.rmtree(partial, ignore_errors=True)
    conn.execute("BEGIN TRANSACTION")
    try:
        for schema, table in candidates(conn):
            conn.execute(f"DROP TABLE {quote_ident(schema)}.{quote_ident(table)}")
        conn.execute(f"EXPORT DATABASE {quote_literal(str(partial))} (FORMAT parquet)")
    finally:
        rollback(conn)
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
