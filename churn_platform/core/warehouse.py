"""The DuckDB warehouse: one way to connect, and one way to write a SQL result atomically.

Assets describe tables as a `SqlTable` (a SELECT statement) instead of a DataFrame, so the rows
never leave DuckDB. `write_table` runs `CREATE OR REPLACE TABLE ... AS <select>` inside one
transaction: a failing query, a killed process or a changed schema leaves the previous table
whole. (The stock dagster-duckdb handlers DELETE and then INSERT outside one transaction: an
empty table after a schema change, columns shuffled by a reordered frame.)
"""

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb

from churn_platform.core import settings
from churn_platform.core.errors import InputError, PlatformError, TransientError


class WarehouseLockedError(TransientError):
    """Another process holds the DuckDB file and did not let go in time."""


_umask_lock = threading.Lock()
_umask_users = 0
_umask_saved = 0


@contextmanager
def owner_only() -> Iterator[None]:
    """Files created meanwhile are owner-only (0600, folders 0700), whatever the umask.

    The warehouse, its WAL (which DuckDB deletes at each checkpoint and creates again at the next
    write) and backups hold raw customer ids. The umask belongs to the process: it is tightened
    while anyone is inside and restored when the last one leaves.
    """
    global _umask_users, _umask_saved
    with _umask_lock:
        if _umask_users == 0:
            _umask_saved = os.umask(0o077)
            os.umask(_umask_saved | 0o077)
        _umask_users += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_users -= 1
            if _umask_users == 0:
                os.umask(_umask_saved)


def connect(database: str, config: dict[str, Any] | None = None, read_only: bool = False,
            timeout_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting a bounded time for another process's lock.

    DuckDB admits one read-write process or many read-only ones, and fails at once when the file
    is held: a notebook left open would otherwise fail every scheduled run. A file created here is
    owner-only; a writer holds `owner_only()` for as long as it writes, so the WAL is too.
    """
    timeout_s = settings.duckdb_lock_timeout_seconds() if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    pause = None
    while True:
        try:
            with owner_only():
                existed = os.path.lexists(database)
                conn = duckdb.connect(database, read_only=read_only, config=dict(config or {}))
            if not existed and os.path.isfile(database):
                os.chmod(database, 0o600)  # created here: owner-only, whatever the umask was
            return conn
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            pause = next_pause(pause, time.monotonic(), deadline)
            if pause is None:
                raise _locked(database, error, timeout_s) from error
        except duckdb.Error as error:
            raise InputError(
                f"cannot open DuckDB file {database} with the settings {config}"
                f" (CHURN_DUCKDB_*): {clean_duckdb_error(error)}"
            ) from None
        time.sleep(pause)


def next_pause(previous: float | None, now: float, deadline: float) -> float | None:
    """How long `connect` waits before trying a locked file again, or None: give up.

    No attempt starts once the deadline is reached (a wait of 0 tries once). The first pause is
    50 ms, each next one twice the last, at most 1 s: a lock released at once costs little, a
    held one is tried about once a second. A pause is not cut short at the deadline, so the last
    attempt may start up to 1 s after it. Pure, so the pace is tested without timing it.
    """
    if now >= deadline:
        return None
    return 0.05 if previous is None else min(previous * 2, 1.0)


def _locked(database: str, error: duckdb.Error, timeout_s: float) -> WarehouseLockedError:
    holder = re.search(r"held in (.+?)(?:\n|$)", str(error))
    return WarehouseLockedError(
        f"DuckDB file {database} is locked by another process"
        f" ({holder.group(1).strip() if holder else 'unknown holder'}); waited"
        f" {timeout_s:.0f} s. Close that process's connection (a notebook, a BI"
        " tool, another run) or raise CHURN_DUCKDB_LOCK_TIMEOUT, then run again."
    )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def table_exists(connection: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Whether `schema.table` is a table (not a view) of this warehouse."""
    schema, name = qualified.split(".")
    return connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        " AND schema_name = ? AND table_name = ?", [schema, name]).fetchone()[0] > 0


@dataclass(frozen=True)
class SqlTable:
    """A table as SQL: what an asset returns to be written, and what a downstream asset receives.

    `sql` is a SELECT; `params` are bound, never pasted. With `history_key` set, the rows are
    merged into the existing table, replacing earlier rows with the same key (idempotent history);
    otherwise the table is replaced. `verify`, when given, is called with the new row count inside
    the transaction: raising there rolls the write back and the previous table stays.
    `prepare`, when given, is a statement and its parameters run first in the same connection and
    transaction, with insertion order preserved: it may create a temporary table named
    `_prepared`, which the SELECT reads and which is dropped afterwards.
    """

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)
    prepare: tuple[str, Mapping[str, Any]] | None = None
    history_key: str | None = None
    verify: Callable[[int], None] | None = None
    error_context: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def rollback(connection: duckdb.DuckDBPyConnection) -> None:
    try:
        connection.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass  # DuckDB already ended it (a failed COMMIT, e.g. on a full disk)


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection, failure: str | None = None,
                error: type[PlatformError] = PlatformError) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, rolled back whatever ends it early (a signal included). With `failure`,
    a DuckDB error becomes `error("<failure>: <DuckDB's message>")`, cleaned of source lines."""
    connection.execute("BEGIN TRANSACTION")
    try:
        yield connection
        connection.execute("COMMIT")
    except duckdb.Error as exc:
        rollback(connection)
        if failure is None:
            raise
        raise error(f"{failure}: {clean_duckdb_error(exc)}") from None
    except BaseException:
        rollback(connection)
        raise


def merge_history(connection: duckdb.DuckDBPyConnection, table: str, obj: SqlTable) -> dict:
    """Replace this snapshot's rows in the history; a one-row snapshot's numbers become metadata."""
    key = quote_ident(obj.history_key)
    connection.execute(f"CREATE TEMP TABLE _snapshot AS {obj.sql}", dict(obj.params))
    try:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _snapshot LIMIT 0")
        # A column added to the snapshot since the history began is added; older rows hold NULL.
        existing = {row[0] for row in connection.execute(f"DESCRIBE {table}").fetchall()}
        for name, data_type, *_ in connection.execute("DESCRIBE _snapshot").fetchall():
            if name not in existing:
                connection.execute(
                    f"ALTER TABLE {table} ADD COLUMN {quote_ident(name)} {data_type}"
                )
        connection.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM _snapshot)")
        connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _snapshot")
        snapshot = connection.execute("SELECT * FROM _snapshot").fetchmany(2)
        names = [d[0] for d in connection.description]
    finally:
        connection.execute("DROP TABLE _snapshot")
    if len(snapshot) != 1:
        return {}
    return {
        name: value
        for name, value in zip(names, snapshot[0])
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def clean_duckdb_error(error: BaseException) -> str:
    """DuckDB's message without the echoed source line (it may hold a customer id) or option dump."""
    kept = []
    for line in (line.strip() for line in str(error).splitlines()):
        if line.startswith(("Possible", "file =")):
            break
        if line and not line.startswith("Original Line"):
            kept.append(line)
    if isinstance(error, duckdb.OutOfMemoryException):  # say which setting is the limit
        limit = settings.duckdb_config()["memory_limit"]
        kept.append(f"(DuckDB's memory limit is CHURN_DUCKDB_MEMORY_LIMIT, now {limit}: raise it)")
    return " ".join(kept)


@dataclass(frozen=True)
class Written:
    """What a write left: the table's row count and columns, and a one-row snapshot's numbers."""

    row_count: int
    columns: list[tuple[str, str]]
    snapshot: dict[str, Any]


def write_table(connection: duckdb.DuckDBPyConnection, schema: str, name: str,
                obj: SqlTable) -> Written:
    """Write `obj` as `schema.name` in one transaction: all of it, or the previous table stays."""
    table = f"{quote_ident(schema)}.{quote_ident(name)}"
    snapshot = {}
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    with transaction(connection, obj.error_context or f"writing {table}"):
        if obj.prepare:
            # The prepared table keeps the order of what it reads: staging numbers rows by it.
            connection.execute("SET SESSION preserve_insertion_order = true")
            connection.execute(obj.prepare[0], dict(obj.prepare[1]))
        # A table's row order means nothing here (source_row keeps the file's); an ordered
        # parallel write is written twice, once more at checkpoint (5M rows: about 3 s).
        connection.execute("SET SESSION preserve_insertion_order = false")
        if obj.history_key:
            snapshot = merge_history(connection, table, obj)
        else:
            connection.execute(f"CREATE OR REPLACE TABLE {table} AS {obj.sql}", dict(obj.params))
        row_count = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if obj.verify:
            obj.verify(row_count)
        columns = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
        if obj.prepare:
            connection.execute("DROP TABLE IF EXISTS _prepared")
    return Written(row_count, columns, snapshot)
