"""The warehouse IO manager writes atomically; connections wait a bounded time for a lock."""

import subprocess
import sys

import dagster as dg
import duckdb
import pytest

from churn_platform.core.warehouse import (
    SqlTable,
    WarehouseLockedError,
    clean_duckdb_error,
    connect,
)
from churn_platform.defs.resources import build_resources
from churn_platform.defs.warehouse_io import WarehouseIOManager, WarehouseResource
from churn_platform_tests.conftest import query, run_elt, write_table

KEY = dg.AssetKey(["analytics", "things"])


def write(database, table: SqlTable, raise_on_error=True):
    return write_table(database, KEY, table, raise_on_error)


def test_a_failing_query_leaves_the_previous_table_whole(warehouse):
    write(warehouse, SqlTable("SELECT range AS n FROM range(5)"))
    result = write(warehouse, SqlTable("SELECT 1 / 0 AS n, error('boom') AS e"), raise_on_error=False)
    assert not result.success
    assert query(warehouse, "SELECT count(*) FROM analytics.things") == [(5,)]


def test_a_changed_schema_replaces_the_table_in_one_step(warehouse):
    write(warehouse, SqlTable("SELECT range AS n FROM range(5)"))
    write(warehouse, SqlTable("SELECT 'x' AS label, range AS n FROM range(2)"))
    assert query(warehouse, "SELECT label, n FROM analytics.things ORDER BY n") == [("x", 0), ("x", 1)]


def test_a_failed_verification_rolls_the_write_back(warehouse):
    def verify(row_count):
        if row_count == 0:
            raise dg.Failure("no rows in x.csv")

    write(warehouse, SqlTable("SELECT range AS n FROM range(5)", verify=verify))
    result = write(warehouse, SqlTable("SELECT 1 AS n WHERE false", verify=verify),
                   raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no rows in x.csv" in str(failure.step_failure_data.user_failure_data.description)
    assert query(warehouse, "SELECT count(*) FROM analytics.things") == [(5,)]


def test_history_merges_by_key_so_a_repeated_snapshot_is_not_duplicated(warehouse):
    snapshot = "SELECT $id AS snapshot_id, $value AS value"
    write(warehouse, SqlTable(snapshot, {"id": "a", "value": 1}, history_key="snapshot_id"))
    write(warehouse, SqlTable(snapshot, {"id": "b", "value": 2}, history_key="snapshot_id"))
    result = write(warehouse, SqlTable(snapshot, {"id": "b", "value": 3}, history_key="snapshot_id"))
    assert query(warehouse, "SELECT * FROM analytics.things ORDER BY 1") == [("a", 1), ("b", 3)]
    [event] = result.get_asset_materialization_events()
    materialization = event.materialization
    assert materialization.metadata["value"].value == 3  # a one-row snapshot's numbers
    assert materialization.metadata["dagster/row_count"].value == 2


def test_a_run_keeps_its_database_open_between_steps(warehouse):
    """Steps share the run's connection: no checkpoint after each write, one when the run ends."""
    wal = warehouse.with_name(warehouse.name + ".wal")
    seen = {}

    @dg.asset(key=KEY)
    def things() -> SqlTable:
        return SqlTable("SELECT range AS n FROM range(3)")

    @dg.asset_check(asset=KEY)
    def things_readable(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        seen["wal after the write step"] = wal.exists()
        with warehouse.get_connection(read_only=True) as conn:  # beside the run's connection
            seen["rows"] = conn.execute("SELECT count(*) FROM analytics.things").fetchone()[0]
        return dg.AssetCheckResult(passed=True)

    dg.materialize([things, things_readable], resources={
        "io_manager": WarehouseIOManager(database=str(warehouse)),
        "warehouse": WarehouseResource(database=str(warehouse)),
    })
    assert seen == {"wal after the write step": True, "rows": 3}
    assert not wal.exists()  # checkpointed once, when the run let go of the file


def _hold_lock(warehouse) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys; c = duckdb.connect({str(warehouse)!r}); print('ready', flush=True);"
         " sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_a_held_lock_fails_after_the_timeout_naming_the_holder(warehouse):
    duckdb.connect(str(warehouse)).close()
    holder = _hold_lock(warehouse)
    try:
        with pytest.raises(WarehouseLockedError) as raised:
            connect(str(warehouse), timeout_s=0.5)
        assert str(warehouse) in raised.value.description
        assert f"PID {holder.pid}" in raised.value.description
        assert "CHURN_DUCKDB_LOCK_TIMEOUT" in raised.value.description
    finally:
        holder.kill()
        holder.wait()
    connect(str(warehouse), timeout_s=5).close()  # free again once the holder is gone


def test_a_run_started_on_a_held_file_fails_in_a_retryable_step(warehouse, sample_csv,
                                                                 monkeypatch):
    """The run's shared connection does not wait for the lock: the steps do, and may retry."""
    monkeypatch.setenv("CHURN_DUCKDB_LOCK_TIMEOUT", "0.5")
    duckdb.connect(str(warehouse)).close()
    holder = _hold_lock(warehouse)
    try:
        result = run_elt(sample_csv, warehouse, raise_on_error=False)
    finally:
        holder.kill()
        holder.wait()
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "staging__customer_churn"
    assert "is locked by another process" in failure.step_failure_data.error.message
    assert run_elt(sample_csv, warehouse).success


def test_duckdb_errors_lose_the_echoed_source_line():
    error = duckdb.InvalidInputException(
        "Invalid Input Error: CSV Error on Line: 3\nOriginal Line: C-SECRET,40\n"
        "Expected Number of Columns: 10 Found: 2\n\nPossible fixes:\n* Enable ignore errors\n"
    )
    cleaned = clean_duckdb_error(error)
    assert cleaned == ("Invalid Input Error: CSV Error on Line: 3"
                       " Expected Number of Columns: 10 Found: 2")


@pytest.mark.parametrize("setting, shown", [(None, "953.6 MiB"), ("2GB", "1.8 GiB")])
def test_duckdb_memory_is_bounded_by_default_and_configurable(warehouse, monkeypatch, setting,
                                                              shown):
    if setting:
        monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", setting)
    else:
        monkeypatch.delenv("CHURN_DUCKDB_MEMORY_LIMIT", raising=False)
    resources = build_resources(str(warehouse), "unused.csv")
    with resources["warehouse"].get_connection() as conn:
        assert conn.execute("SELECT current_setting('memory_limit')").fetchone() == (shown,)
