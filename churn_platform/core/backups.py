"""Warehouse backups: Parquet files and a manifest the platform writes, verifies and restores.

A backup is a folder `warehouse-<UTC stamp>` with one Parquet file per table, all read from one
committed snapshot, and `manifest.json`, written last (core.backup_manifest). Restore trusts
nothing but a manifest that verifies: it creates the tables with statements it generates from the
manifest and reads only the verified files. (`IMPORT DATABASE` would execute whatever SQL a folder
holds.) Only verified backups are listed, counted and pruned; anything else is left alone.

    python -m churn_platform.backup list
    python -m churn_platform.backup restore BACKUP_DIR NEW_WAREHOUSE.duckdb [--models DIR]

The churn model files the warehouse records travel with it (core.backup_models): a restored
warehouse that names a promoted model can score with it.
"""

import argparse
import errno
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from churn_platform.core import settings
from churn_platform.core.backup_manifest import (
    AS_TEXT,
    BackupRefused,
    Table,
    check_column_name,
    check_table_name,
    check_type,
    file_digest,
    verify_backup,
    write_manifest,
)
from churn_platform.core.backup_models import (
    back_up_models,
    check_models,
    recorded_versions,
    restore_models,
)
from churn_platform.core.errors import PlatformError
from churn_platform.core.history import restore_views
from churn_platform.core.publish import CANDIDATE_PREFIX
from churn_platform.core.warehouse import (
    clean_duckdb_error,
    connect,
    owner_only,
    quote_ident,
    quote_literal,
    transaction,
)

_STAMP = "%Y%m%dT%H%M%S%fZ"
_NAME = re.compile(r"warehouse-([0-9]{8}T[0-9]{12}Z)")
GLOB = re.compile(r"[*?\[\]{}]")


def backup_name(when: datetime) -> str:
    return f"warehouse-{when.strftime(_STAMP)}"


def taken_at(backup: Path) -> datetime:
    """When a backup was taken, from its name; ValueError for any other name."""
    match = _NAME.fullmatch(backup.name)
    if not match:
        raise ValueError("the name is not warehouse-<YYYYmmddTHHMMSSffffff>Z")
    return datetime.strptime(match[1], _STAMP).replace(tzinfo=timezone.utc)


@dataclass
class Survey:
    """A backup folder's content: verified backups, oldest first, and what was left alone, why."""

    backups: list[Path] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)


def survey(root: Path) -> Survey:
    """Verify every entry of `root`: only a verified `warehouse-<stamp>` counts as a backup."""
    found = Survey()
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        try:
            taken_at(entry)
            verify_backup(entry)
        except ValueError as error:
            found.ignored[entry.name] = str(error)
        except BackupRefused as error:
            found.ignored[entry.name] = error.why
        else:
            found.backups.append(entry)
    found.backups.sort(key=taken_at)
    return found


def list_backups(root: Path) -> list[Path]:
    """Verified backups, oldest first."""
    return survey(root).backups


def _qualified(conn: duckdb.DuckDBPyConnection, *names: str) -> str:
    """catalog.schema[.table]: a schema named like the file's catalog cannot be mistaken for it."""
    [(catalog,)] = conn.execute("SELECT current_database()").fetchall()
    return ".".join(quote_ident(part) for part in (catalog, *names))


def _copy_sql(table: str, columns: list[tuple[str, str]], target: Path) -> str:
    select = ", ".join(
        f"CAST({quote_ident(c)} AS VARCHAR) AS {quote_ident(c)}" if t in AS_TEXT
        else quote_ident(c)
        for c, t in columns
    )
    return f"COPY (SELECT {select} FROM {table}) TO {quote_literal(str(target))} (FORMAT parquet)"


def _export(conn: duckdb.DuckDBPyConnection, folder: Path) -> list[Table]:
    """Every published table as Parquet, read in one transaction: one committed snapshot of them
    all. Candidates a killed or held-back run left are not published, and not backed up."""
    with transaction(conn):
        tables = []
        names = conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables()"
            " WHERE database_name = current_database() AND NOT temporary"
            " AND NOT starts_with(table_name, ?) ORDER BY ALL",
            [CANDIDATE_PREFIX],
        ).fetchall()
        for index, (schema, name) in enumerate(names, start=1):
            columns = conn.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name ="
                " current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index",
                [schema, name],
            ).fetchall()
            for why in (check_table_name(schema), check_table_name(name),
                        *(check_column_name(c) or check_type(t) for c, t in columns)):
                if why:
                    raise PlatformError(f"cannot back up {schema}.{name}: {why}")
            file = f"table-{index:03d}.parquet"
            copy = _copy_sql(_qualified(conn, schema, name), columns, folder / file)
            rows = conn.execute(copy).fetchone()[0]
            tables.append(Table(schema, name, tuple(columns), rows, file, 0, ""))
    return tables


def take_backup(conn: duckdb.DuckDBPyConnection, root: Path, when: datetime,
                model_dir: Path | None = None) -> Path:
    """Write a backup under a temporary name, its manifest last, then rename: no half backups.
    With `model_dir`, the model files the warehouse records are copied in too.

    Folders are 0700 and files 0600 whatever the umask: a backup holds the raw customer ids.
    """
    final = root / backup_name(when)
    partial = root / f".partial-{final.name}"
    with owner_only():
        root.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(final):
            raise PlatformError(f"{final} exists already: not overwritten")
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial)  # left by a backup that was killed half-way
        partial.mkdir(mode=0o700)
        try:
            tables = _export(conn, partial)
            verified = []
            for table in tables:
                os.chmod(partial / table.file, 0o600)
                size, sha256 = file_digest(partial / table.file)
                verified.append(Table(table.schema, table.name, table.columns, table.row_count,
                                      table.file, size, sha256))
            models = [] if model_dir is None else back_up_models(
                recorded_versions(conn), Path(model_dir), partial)[0]
            write_manifest(partial, when.isoformat(), verified, models)
        except ValueError as error:  # a manifest restore would refuse is not written
            shutil.rmtree(partial, ignore_errors=True)
            raise PlatformError(f"cannot back up into {partial}: {error}") from None
        except duckdb.Error as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise PlatformError(f"backup into {partial}: {clean_duckdb_error(error)}") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(final)
    return final


@dataclass
class Pruned:
    removed: list[Path]
    kept: list[Path]
    ignored: dict[str, str]


def prune_backups(root: Path, keep: int, max_age: timedelta, now: datetime,
                  taken: Path | None = None) -> Pruned:
    """Remove verified backups beyond the newest `keep` or older than `max_age`.

    `taken`, the backup just written, always stays and counts as one of `keep` (so does the newest,
    if none is named). Whatever does not verify is left alone and reported in `ignored`.
    """
    found = survey(root)
    newest_first = sorted(found.backups, key=taken_at, reverse=True)
    if taken is not None and taken in newest_first:
        newest_first.remove(taken)
        newest_first.insert(0, taken)
    doomed = [
        b for i, b in enumerate(newest_first)
        if i > 0 and (i >= max(keep, 1) or now - taken_at(b) > max_age)
    ]
    removed = []
    for backup in doomed:
        try:
            shutil.rmtree(backup)
            removed.append(backup)
        except OSError as error:  # reported, and tried again at the next backup
            found.ignored[backup.name] = f"could not be removed ({error.strerror})"
    kept = [b for b in found.backups if b not in removed]
    return Pruned(removed, kept, found.ignored)


def _refuse_target(database: Path) -> None:
    if os.path.lexists(database):
        kind = "a symbolic link" if database.is_symlink() else "exists"
        raise BackupRefused(database, f"the target {kind}: restore into a new file, then point"
                                      " CHURN_DUCKDB_PATH at it")
    if os.path.lexists(f"{database}.wal"):
        raise BackupRefused(database, f"{database}.wal exists and would be replayed into it")
    if not database.parent.is_dir():
        raise BackupRefused(database, f"the folder {database.parent} does not exist")


def _load(conn: duckdb.DuckDBPyConnection, backup: Path, tables: list[Table]) -> None:
    """Create each table from the manifest and insert the verified file's rows; counts checked."""
    for table in tables:
        target = _qualified(conn, table.schema, table.name)
        names = ", ".join(quote_ident(c) for c, _ in table.columns)
        try:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_qualified(conn, table.schema)}")
            conn.execute(f"CREATE TABLE {target} ("
                         + ", ".join(f"{quote_ident(c)} {t}" for c, t in table.columns) + ")")
            conn.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM"
                         f" read_parquet({quote_literal(str(backup / table.file))})")
        except duckdb.Error as error:
            raise BackupRefused(backup, f"{table.file} ({table.label}) does not load:"
                                        f" {clean_duckdb_error(error)}") from None
        [(rows,)] = conn.execute(f"SELECT count(*) FROM {target}").fetchall()
        if rows != table.row_count:
            raise BackupRefused(backup, f"{table.label} has {rows} rows, the manifest says"
                                        f" {table.row_count}")


def restore_backup(backup: Path, database: Path, model_dir: Path | None = None) -> None:
    """Load a verified backup into a new warehouse file, or refuse and leave no file behind.

    The rows go into a temporary file beside the target, linked to the target's name only once
    complete; the connection can read nothing but the backup folder. With `model_dir`, the
    backup's model files are then copied there (never replacing a file).
    """
    _refuse_target(database)
    backup = backup.absolute()
    if GLOB.search(str(backup)):
        # read_parquet expands patterns: x[1]/ would read the unverified x1/ instead.
        raise BackupRefused(backup, "its path holds a pattern character (* ? [ ] { }), which"
                                    " DuckDB would expand: move or rename the folder")
    contents = verify_backup(backup)
    tables = contents.tables
    if model_dir is not None:
        check_models(backup, contents.models, Path(model_dir))
    partial = database.parent / f".{database.name}.restoring-{secrets.token_hex(4)}"
    try:
        with owner_only():
            conn = connect(str(partial), settings.duckdb_config(), timeout_s=0)
            try:
                allowed = ", ".join(quote_literal(f"{f}/") for f in (backup, f"{partial}.tmp"))
                conn.execute(f"SET allowed_directories = [{allowed}]")
                conn.execute("SET enable_external_access = false")
                conn.execute("SET lock_configuration = true")
                _load(conn, backup, tables)
                restore_views(conn)
                conn.execute("CHECKPOINT")
            finally:
                conn.close()
            try:
                os.link(partial, database)  # never replaces: fails if anything took the name
            except FileExistsError:
                _refuse_target(database)
                raise
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                    raise
                _refuse_target(database)  # no hard links here: check, then rename
                os.rename(partial, database)
    finally:
        for leftover in (partial, Path(f"{partial}.wal")):
            if os.path.lexists(leftover):
                leftover.unlink()
        shutil.rmtree(f"{partial}.tmp", ignore_errors=True)
    if model_dir is not None and contents.models:
        restore_models(backup, contents.models, Path(model_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List or restore warehouse backups.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="verified backups under CHURN_BACKUP_DIR, oldest first")
    restore = commands.add_parser("restore", help="load a verified backup into a new DuckDB file")
    restore.add_argument("backup", type=Path)
    restore.add_argument("database", type=Path)
    restore.add_argument("--models", type=Path, default=None,
                         help="where the backup's model files go (default: CHURN_MODEL_DIR)")
    args = parser.parse_args(argv)
    if args.command == "list":
        found = survey(settings.backup_dir())
        for backup in found.backups:
            print(backup)
        for name, why in found.ignored.items():
            print(f"not a verified backup, ignored: {name}: {why}", file=sys.stderr)
        return 0
    try:
        restore_backup(args.backup, args.database, args.models or settings.model_dir())
    except (PlatformError, OSError) as error:
        print(f"restore failed: {error}", file=sys.stderr)
        return 1
    print(f"restored {args.backup} into {args.database}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
