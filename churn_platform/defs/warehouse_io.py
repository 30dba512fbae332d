"""The warehouse in Dagster: the IO manager that writes `SqlTable`s, and the resource for reads.

The IO manager is dagster-duckdb's `DuckDBIOManager` with a type handler for `SqlTable`. Its
handler and client interfaces (`DbTypeHandler`, `TableSlice`, `DbIOManager`) are importable only
from `dagster._core.storage.db_io_manager`: no public module exports them, and every dagster-duckdb
type handler (dagster-duckdb-pandas included) is written against them. That private import is made
here (and in training_frames.py, the pandas handler) and nowhere else; `dagster` is pinned to one
version in pyproject.toml, so it cannot move under us.

pandas is not imported here: DataFrames are read only by the model's training, through
TrainingFrameIOManager, whose handler is imported when that IO manager is built (a training
step), so the ELT's processes never pay for pandas (0.5 s and 50 MiB each).
"""

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import dagster as dg
import duckdb
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager, DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from pydantic import PrivateAttr

from churn_platform.core import publish
from churn_platform.core.columns import describe
from churn_platform.core.errors import PlatformError
from churn_platform.core.warehouse import (
    SqlTable,
    connect,
    owner_only,
    quote_ident,
    write_table,
)
from churn_platform.defs.failures import (
    interrupts_end_the_run,
    reported_as_failure,
    require_input,
)

# The step that publishes a run's candidates (defs/elt/assets.py): a run without it publishes none.
PUBLISHED = dg.AssetKey(["analytics", "published"])


def run_key(run) -> str:
    """The name a run's candidates carry: its root run's id, so that a retry or a re-execution
    of the run reads (and publishes) what the earlier attempt wrote."""
    return run.root_run_id or run.run_id


def _publishing_run(context) -> str | None:
    """The run key when this run publishes its candidates (its plan holds the publish step)."""
    try:
        step = context.step_context
    except Exception:  # built outside a run (direct invocation): nothing to publish
        return None
    if PUBLISHED not in step.job_def.asset_layer.asset_graph.executable_asset_keys:
        return None
    return run_key(step.dagster_run)


ELT_TABLE_NAMES = frozenset(name for name, _ in publish.ELT_TABLES)


def _refuse_unpublished(table: str) -> None:
    if table in ELT_TABLE_NAMES:
        raise dg.Failure(
            description=(
                f"{table} is published only together with the rest of its run, after the"
                f" blocking checks: select {PUBLISHED.to_user_string()} too (or run"
                " churn_elt_job). Nothing was written; the published tables are unchanged."
            ),
            allow_retries=False,
        )


class SqlTableTypeHandler(DbTypeHandler[SqlTable]):
    """Runs the SQL inside DuckDB; loads a table as a reference to it, not as its rows."""

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [SqlTable]

    def handle_output(self, context: dg.OutputContext, table_slice: TableSlice, obj: SqlTable,
                      connection: duckdb.DuckDBPyConnection):
        table, note = table_slice.table, {}
        published_name = f"{table_slice.schema}.{table_slice.table}"
        # Only the ELT's tables are published together; any other table is written in place.
        key = _publishing_run(context) if published_name in ELT_TABLE_NAMES else None
        if key is None:
            if context is not None:
                _refuse_unpublished(f"{table_slice.schema}.{table_slice.table}")
        else:
            publish.drop_leftovers(connection, key)
            table = publish.candidate_name(table_slice.table, key)
            note = {"publication": dg.MetadataValue.md(
                f"Written as this run's candidate `{table_slice.schema}.{table}`."
                f" `{PUBLISHED.to_user_string()}` publishes it with the rest of the run once"
                " the blocking checks pass; its materialization in this run lists what it"
                " published. Without one, this table was held back: readers still see the"
                " previous one.")}
        with reported_as_failure():
            written = write_table(connection, table_slice.schema, table, obj)
        return {
            **note,
            "dagster/row_count": written.row_count,
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(name, dtype, description=describe(published_name, name))
                    for name, dtype in written.columns
                ]
            ),
            **written.snapshot,
            **obj.metadata,
        }

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection) -> SqlTable:
        # This run's candidate when it wrote one, else the published table.
        table = f"{table_slice.schema}.{table_slice.table}"
        read = publish.reading(connection, table, _publishing_run(context))
        require_input(context, connection, read, table)
        return SqlTable(f"SELECT * FROM {read}")


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
        # Owner-only while it writes: DuckDB creates the WAL again after every checkpoint.
        with owner_only():
            with reported_as_failure():
                conn = connect(config["database"], config["connection_config"])
            try:
                with interrupts_end_the_run():  # every statement of a write, the schema's included
                    yield conn
            finally:
                conn.close()


class WarehouseIOManager(DuckDBIOManager):
    """DuckDB IO manager for `SqlTable` outputs and inputs; the asset key is `schema/table`."""

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


class TrainingFrameIOManager(WarehouseIOManager):
    """The warehouse read as pandas DataFrames, for the model's training input only
    (`input_manager_key`): dagster-duckdb-pandas' handler, sampled (training_frames.py).
    Built, and pandas imported, only in a run whose steps read a frame."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        from churn_platform.training_frames import SampledPandasTypeHandler

        return [SampledPandasTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        import pandas as pd

        return pd.DataFrame


class WarehouseResource(DuckDBResource):
    """The warehouse for checks and reads: same file, same settings, same bounded lock wait.

    For the length of a run it holds one connection open. DuckDB shares one database per file
    within a process, so every step's connection (IO manager and checks, same config) joins it,
    and closing a step's connection no longer checkpoints: the database is checkpointed once,
    when the run ends, instead of after every step (about 0.8 s per million rows each time).
    """

    _run_connection: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)
    _owner_only: ExitStack = PrivateAttr(default_factory=ExitStack)
    _run_key: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # The files DuckDB creates during the run (the WAL, spill files) are owner-only.
        self._owner_only.enter_context(owner_only())
        self._run_key = run_key(context.dagster_run) if context.dagster_run else None
        # Without waiting, and without failing here: if another process holds the file, or a
        # setting is wrong, the steps meet the same error as before, and may wait and retry.
        try:
            self._run_connection = connect(self.database, self.connection_config, timeout_s=0)
        except PlatformError:  # WarehouseLockedError included
            self._run_connection = None

    @property
    def run_key(self) -> str | None:
        """The run this resource serves (its candidates' name), None outside a run."""
        return self._run_key

    def table(self, conn: duckdb.DuckDBPyConnection, name: str) -> str:
        """What this run reads for the table `name`: its candidate if it wrote one, else the
        published table (outside a run: the published one)."""
        return publish.reading(conn, name, self._run_key)

    def history(self, conn: duckdb.DuckDBPyConnection, name: str, key: str) -> str:
        """A SELECT of the history `name` as it will read once this run publishes."""
        return publish.history_reading(conn, name, key, self._run_key)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run_connection is not None:
            self._run_connection.close()  # the checkpoint, under the owner-only umask
            self._run_connection = None
        self._owner_only.close()

    @contextmanager
    def get_connection(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        # Inside a run that holds the file, every connection is a cursor on the run's database
        # (DuckDB refuses a read-only one beside it in the same process; no other can write).
        with owner_only():
            if self._run_connection is not None:
                conn = self._run_connection.cursor()
            else:
                with reported_as_failure():
                    conn = connect(self.database, self.connection_config, read_only=read_only)
            try:
                with interrupts_end_the_run():  # a check's statement stopped by Terminate
                    yield conn
            finally:
                conn.close()
