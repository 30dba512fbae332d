"""A backup of a landing-mode warehouse carries every export and the whole customer history.

"Staging keeps every export": a restore that lost `landing.export_rows` or the history tables
would lose what no later run can rebuild (the files may be gone). Real exports, real runs, the
real backup job and the restore command; then history goes on in the restored file.
"""

from datetime import date

import dagster as dg

from churn_platform.core import backups as backup
from churn_platform.core import tables
from churn_platform.defs.backup import assets as backup_defs
from churn_platform.defs.resources import build_resources
from churn_platform_tests.conftest import query
from churn_platform_tests.location import platform_defs
from churn_platform_tests.test_landing_load import (
    D1,
    D2,
    D3,
    EVENTS,
    HISTORY,
    MTM,
    drop,
    events,
    history,
    monthly,
    retention,
    row,
    run_requested,
)
from churn_platform_tests.test_landing_sensor import tick

LANDING_TABLES = (tables.EXPORT_ROWS_TABLE, tables.CLOSED_VERSIONS_TABLE, tables.EVENTS_TABLE,
                  tables.EXPORTS_TABLE, tables.LAST_SEEN_TABLE, tables.RETENTION_TABLE,
                  tables.MONTHLY_CHURN_TABLE)


def every_table(database) -> dict[str, tuple]:
    """Each table's and view's kind and columns with their types, and its rows in a fixed order
    (customer_history is a view over two tables: a backup holds the tables, restore the view)."""
    names = query(database, "SELECT table_schema || '.' || table_name, table_type"
                            " FROM information_schema.tables ORDER BY ALL")
    return {name: (kind, query(database, "SELECT column_name, data_type FROM"
                                         " information_schema.columns WHERE table_schema || '.'"
                                         " || table_name = ? ORDER BY ordinal_position", [name]),
                   sorted(query(database, f"SELECT * FROM {name}"), key=repr))
            for name, kind in names}


def test_a_landing_warehouse_backs_up_and_restores_row_for_row(
        landing_folder, instance, warehouse, sample_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(tmp_path / "backups"))
    location = platform_defs(warehouse, sample_csv)
    load = location.resolve_job_def("landing_export_job")
    for day in (D1, D2, D3):
        drop(landing_folder, day)
    cursor, runs = run_requested(instance, load)
    assert [r.success for r in runs] == [True, True, True]
    location.resolve_job_def("churn_elt_job").execute_in_process(instance=instance)
    dg.materialize([backup_defs.warehouse_backup], resources=build_resources(str(warehouse)))
    [taken] = backup.list_backups(tmp_path / "backups")

    restored = tmp_path / "restored.duckdb"
    assert backup.main(["restore", str(taken), str(restored)]) == 0
    before, after = every_table(warehouse), every_table(restored)
    assert set(LANDING_TABLES) <= set(before)
    assert before[tables.HISTORY_TABLE][0] == "VIEW" and before[tables.HISTORY_TABLE][2]
    assert query(warehouse, f"SELECT count(DISTINCT export_id) FROM {tables.EXPORT_ROWS_TABLE}"
                 ) == [(3,)]
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], name

    # History goes on in the restored warehouse as in the original: a fourth export, loaded
    # into both, leaves the same history, events and cohort tables.
    fourth = drop(landing_folder, date(2026, 4, 21), [row("A", 8, MTM, "Yes"), row("C", 33, MTM, "No"),
                                              row("E", 6, MTM, "No")])
    _, [request] = run_requested_request(instance, cursor)
    for database in (warehouse, restored):
        monkeypatch.setenv("CHURN_DUCKDB_PATH", str(database))
        result = platform_defs(database, sample_csv).resolve_job_def(
            "landing_export_job").execute_in_process(partition_key=request.partition_key,
                                                     instance=instance)
        assert result.success
    assert fourth.exists()
    for read in (history, events, retention, monthly):
        assert read(restored) == read(warehouse)
    assert query(restored, f"SELECT count(*) FROM {tables.EXPORTS_TABLE}") == [(4,)]
    assert len(history(restored)) > len(HISTORY) and len(events(restored)) > len(EVENTS)


def run_requested_request(instance, cursor):
    """One landing_sensor tick: its cursor and the run requests, not executed."""
    result = tick(instance, cursor)
    return result.cursor, list(result.run_requests)
