"""The DuckDB warehouse: one way to connect, and an IO manager that writes SQL results atomically.

Assets return a `SqlTable` (a SELECT statement) instead of a DataFrame, so the rows never leave
DuckDB. The IO manager runs `CREATE OR REPLACE TABLE ... AS <select>` inside one transaction:
a failing query, a killed process or a changed schema leaves the previous table whole, unlike the
stock handlers' DELETE-then-INSERT (design notes, pitfall 2).
"""

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import duckdb
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager, DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from pydantic import PrivateAttr

from churn_platform import settings


class WarehouseLockedError(dg.Failure):
    """Another process holds the DuckDB file and did not let go in time."""


def connect(database: str, config: dict[str, Any] | None = None, read_only: bool = False,
            timeout_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting a bounded time for another process's lock (pitfall 1)."""
    timeout_s = settings.duckdb_lock_timeout_seconds() if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(database, read_only=read_only, config=dict(config or {}))
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            if time.monotonic() >= deadline:
                raise _locked(database, error, timeout_s) from error
        except duckdb.Error as error:
            raise dg.Failure(
                description=f"cannot open DuckDB file {database} with the settings {config}"
                f" (CHURN_DUCKDB_*): {clean_duckdb_error(error)}",
                allow_retries=False,
            ) from None
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _locked(database: str, error: duckdb.Error, timeout_s: float) -> WarehouseLockedError:
    holder = re.search(r"held in (.+?)(?:\n|$)", str(error))
    return WarehouseLockedError(
        description=(
            f"DuckDB file {database} is locked by another process"
            f" ({holder.group(1).strip() if holder else 'unknown holder'}); waited"
            f" {timeout_s:.0f} s. Close that process's connection (a notebook, a BI"
            " tool, another run) or raise CHURN_DUCKDB_LOCK_TIMEOUT, then run again."
        ),
        allow_retries=True,
    )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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


class SqlTableTypeHandler(DbTypeHandler[SqlTable]):
    """Runs the SQL inside DuckDB; loads a table as a reference to it, not as its rows."""

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [SqlTable]

    def handle_output(self, context: dg.OutputContext, table_slice: TableSlice, obj: SqlTable,
                      connection: duckdb.DuckDBPyConnection):
        table = f"{quote_ident(table_slice.schema)}.{quote_ident(table_slice.table)}"
        snapshot_metadata = {}
        connection.execute("BEGIN TRANSACTION")
        try:
            if obj.prepare:
                # The prepared table keeps the order of what it reads: staging numbers rows by it.
                connection.execute("SET SESSION preserve_insertion_order = true")
                connection.execute(obj.prepare[0], dict(obj.prepare[1]))
            # A table's row order means nothing here (source_row keeps the file's); an ordered
            # parallel write is written twice, once more at checkpoint (5M rows: about 3 s).
            connection.execute("SET SESSION preserve_insertion_order = false")
            if obj.history_key:
                snapshot_metadata = _merge_history(connection, table, obj)
            else:
                connection.execute(f"CREATE OR REPLACE TABLE {table} AS {obj.sql}", dict(obj.params))
            row_count = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if obj.verify:
                obj.verify(row_count)
            columns = connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [table_slice.schema, table_slice.table],
            ).fetchall()
            if obj.prepare:
                connection.execute("DROP TABLE IF EXISTS _prepared")
            connection.execute("COMMIT")
        except duckdb.Error as error:
            _rollback(connection)
            raise dg.Failure(
                description=f"{obj.error_context or 'writing ' + table}: {clean_duckdb_error(error)}",
                allow_retries=False,
            ) from None
        except BaseException:
            _rollback(connection)
            raise
        return {
            "dagster/row_count": row_count,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name, dtype) for name, dtype in columns]
            ),
            **snapshot_metadata,
            **obj.metadata,
        }

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection) -> SqlTable:
        return SqlTable(
            f"SELECT * FROM {quote_ident(table_slice.schema)}.{quote_ident(table_slice.table)}"
        )


def _rollback(connection: duckdb.DuckDBPyConnection) -> None:
    try:
        connection.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass  # DuckDB already ended it (a failed COMMIT, e.g. on a full disk)


def _merge_history(connection: duckdb.DuckDBPyConnection, table: str, obj: SqlTable) -> dict:
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
    return " ".join(kept)


class _AtomicDuckDbClient(DuckDbClient):
    """The stock client, minus the DELETE before each write (the handler replaces atomically)."""

    @staticmethod
    def delete_table_slice(context, table_slice, connection) -> None:
        return None

    @staticmethod
    def ensure_schema_exists(context, table_slice, connection) -> None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table_slice.schema)}")

    @staticmethod
    @contextmanager
    def connect(context, _) -> Iterator[duckdb.DuckDBPyConnection]:
        config = context.resource_config
        conn = connect(config["database"], config["connection_config"])
        try:
            yield conn
        finally:
            conn.close()


class WarehouseIOManager(DuckDBIOManager):
    """DuckDB IO manager for `SqlTable` outputs; the asset key is `schema/table`."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [SqlTableTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return SqlTable

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=_AtomicDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )


class WarehouseResource(DuckDBResource):
    """The warehouse for checks and reads: same file, same settings, same bounded lock wait.

    For the length of a run it holds one connection open. DuckDB shares one database per file
    within a process, so every step's connection (IO manager and checks, same config) joins it,
    and closing a step's connection no longer checkpoints: the database is checkpointed once,
    when the run ends, instead of after every step (about 0.8 s per million rows each time).
    """

    _run_connection: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Without waiting, and without failing here: if another process holds the file, or a
        # setting is wrong, the steps meet the same error as before, and may wait and retry.
        try:
            self._run_connection = connect(self.database, self.connection_config, timeout_s=0)
        except dg.Failure:  # WarehouseLockedError included
            self._run_connection = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run_connection is not None:
            self._run_connection.close()
            self._run_connection = None

    @contextmanager
    def get_connection(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        # Inside a run that holds the file, every connection is a cursor on the run's database
        # (DuckDB refuses a read-only one beside it in the same process; no other can write).
        if self._run_connection is not None:
            conn = self._run_connection.cursor()
        else:
            conn = connect(self.database, self.connection_config, read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()
