"""Loading landing exports (core/landing_load.py) on a real DuckDB file without Dagster: the
partition a load replaces, what it refuses, and history against the hand-computed tables of
test_landing_load.py (whose real runs are too slow for mutation testing)."""

from datetime import date

import duckdb
import pytest

from churn_platform.core import landing
from churn_platform.core import landing_load as ll
from churn_platform.core.errors import InputError
from churn_platform.core.history import ExportRef
from churn_platform.core.mapping import DEFAULT_MAPPING, load_mapping
from churn_platform.core.settings import PSEUDONYMIZATION_KEY_ENV
from churn_platform.core.source import SourceFileError
from churn_platform_tests.conftest import HEADER, LANDING_KEY
from churn_platform_tests.test_landing_load import D1, D2, D3, DAYS, assert_hand_computed, row

KEY = LANDING_KEY.encode()
MAPPING = load_mapping(DEFAULT_MAPPING)


def export_of(folder, day, lines, name=None):
    path = folder / (name or f"crm_{day.isoformat()}.csv")
    path.write_text("\n".join(lines) + "\n")
    [export] = [e for e in landing.scan(folder, settle_s=0).exports if e.path == path]
    return export


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def database(tmp_path):
    return tmp_path / "w.duckdb"


def partition(conn, export, columns="source_row, \"CustomerID\", \"Tenure\""):
    return conn.execute(f"SELECT {columns} FROM landing.export_rows WHERE export_id = ?"
                        " ORDER BY source_row", [export.partition_key]).fetchall()


def test_three_exports_loaded_directly_match_the_hand_computed_history(folder, database):
    exports = [export_of(folder, d, [HEADER, *DAYS[d]]) for d in (D1, D2, D3)]
    with duckdb.connect(str(database)) as conn:
        loaded = [ll.load_export(conn, e, MAPPING, KEY, 1) for e in exports]
        # Loaded again: the same rows replace themselves, history unchanged.
        again = ll.load_export(conn, exports[1], MAPPING, KEY, 1)
        assert [r[0] for r in conn.execute("SELECT export_id FROM landing.export_rows"
                                           " GROUP BY ALL ORDER BY 1").fetchall()] == sorted(
            e.partition_key for e in exports)
        assert partition(conn, exports[1]) == [(2, "C-A", "6"), (3, "C-B", "21"), (4, "C-C", "31")]
        assert partition(conn, exports[0], "export_date") == [(D1,)] * 4
    assert loaded == [ll.Loaded(4, "appended", 4, 0), ll.Loaded(3, "appended", 3, 0),
                      ll.Loaded(4, "appended", 4, 0)]
    assert again == ll.Loaded(3, "unchanged", 3, 0)
    assert_hand_computed(database)


def test_the_history_rows_temp_table_is_dropped_after_a_load(folder, database):
    export = export_of(folder, D1, [HEADER, *DAYS[D1]])
    with duckdb.connect(str(database)) as conn:
        ll.load_export(conn, export, MAPPING, KEY, 1)
        assert conn.execute("SELECT count(*) FROM duckdb_tables()"
                            " WHERE table_name = '_history_rows'").fetchone()[0] == 0


def test_a_late_export_rebuilds_and_repeated_customers_are_counted(folder, database):
    later = export_of(folder, D2, [HEADER, *DAYS[D2]])
    earlier = export_of(folder, D1, [HEADER, *DAYS[D1], row("A", 9, "One-Year", "No")])
    with duckdb.connect(str(database)) as conn:
        assert ll.load_export(conn, later, MAPPING, KEY, 1) == ll.Loaded(3, "appended", 3, 0)
        assert ll.load_export(conn, earlier, MAPPING, KEY, 1) == ll.Loaded(5, "rebuilt", 4, 1)


def test_a_load_replaces_only_its_own_partition(folder, database):
    one = export_of(folder, D1, [HEADER, row("A", 5, "One-Year", "No")])
    two = export_of(folder, D2, [HEADER, row("B", 6, "One-Year", "No"),
                                 row("C", 7, "One-Year", "No")])
    with duckdb.connect(str(database)) as conn:
        assert ll.load_rows(conn, one, MAPPING.path) == 1
        assert ll.load_rows(conn, two, MAPPING.path) == 2
        assert ll.load_rows(conn, two, MAPPING.path) == 2
        assert partition(conn, one) == [(2, "C-A", "5")]
        assert partition(conn, two) == [(2, "C-B", "6"), (3, "C-C", "7")]
        assert conn.execute("SELECT count(*) FROM landing.export_rows").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM duckdb_tables()"
                            " WHERE table_name = '_prepared'").fetchone()[0] == 0


def test_a_column_first_seen_later_is_added_and_older_exports_hold_null(folder, database):
    one = export_of(folder, D1, [HEADER, row("A", 5, "One-Year", "No")])
    two = export_of(folder, D2, [HEADER + ",Region", row("B", 6, "One-Year", "No") + ",North",
                                 row("C", 6, "One-Year", "No") + ","])
    with duckdb.connect(str(database)) as conn:
        ll.load_rows(conn, one, MAPPING.path)
        ll.load_rows(conn, two, MAPPING.path)
        assert partition(conn, one, '"CustomerID", "Region"') == [("C-A", None)]
        assert partition(conn, two, '"CustomerID", "Region"') == [("C-B", "North"), ("C-C", "")]


@pytest.mark.parametrize("column", ["export_id", "Export_Date"])
def test_a_column_named_like_the_loads_own_is_refused_before_anything_is_written(
        folder, database, column):
    export = export_of(folder, D1, [HEADER + f",{column}", row("A", 5, "One-Year", "No") + ",x"])
    with duckdb.connect(str(database)) as conn:
        with pytest.raises(SourceFileError, match=f"columns named like those the landing load"
                                                  f" adds: {column}$"):
            ll.load_rows(conn, export, MAPPING.path)
        assert conn.execute("SELECT count(*) FROM landing.export_rows").fetchone()[0] == 0


def test_a_file_changed_since_its_scan_is_refused_as_a_new_export(folder, database):
    export = export_of(folder, D1, [HEADER, row("A", 5, "One-Year", "No")])
    export.path.write_text("\n".join([HEADER, row("A", 6, "One-Year", "No")]) + "\n")
    with duckdb.connect(str(database)) as conn:
        with pytest.raises(SourceFileError, match=f"changed since it was registered as export"
                                                  f" {export.partition_key}; it is registered"
                                                  " again as a new export on the next scan"):
            ll.load_rows(conn, export, MAPPING.path)


def test_a_file_that_is_not_csv_is_refused_and_keeps_earlier_rows(folder, database):
    good = export_of(folder, D1, [HEADER, row("A", 5, "One-Year", "No")])
    bad = export_of(folder, D2, [HEADER, row("B", 5, "One-Year", "No") + ',"unterminated'])
    with duckdb.connect(str(database)) as conn:
        ll.load_rows(conn, good, MAPPING.path)
        with pytest.raises(SourceFileError, match="cannot be read as CSV: "):
            ll.load_rows(conn, bad, MAPPING.path)
        assert partition(conn, good) == [(2, "C-A", "5")]
        assert partition(conn, bad) == []


def test_history_refers_to_an_export_whose_rows_are_gone(database):
    with duckdb.connect(str(database)) as conn:
        conn.execute("CREATE SCHEMA landing")
        conn.execute(ll._CREATE_ROWS)
        ref = ExportRef("2026-01-20__0123456789ab", date(2026, 1, 20), None)
        with pytest.raises(InputError, match="^export 2026-01-20__0123456789ab is in history but"
                                             " its rows are not in landing.export_rows"):
            ll.typed_rows(conn, KEY, MAPPING, ref)


@pytest.mark.parametrize("key", [None, b""])
def test_without_a_key_nothing_is_loaded(folder, database, monkeypatch, key):
    monkeypatch.delenv(PSEUDONYMIZATION_KEY_ENV, raising=False)
    export = export_of(folder, D1, [HEADER, row("A", 5, "One-Year", "No")])
    with duckdb.connect(str(database)) as conn:
        with pytest.raises(InputError, match="needs the same pseudonym"):
            ll.load_export(conn, export, MAPPING, key, 1)
        assert conn.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0
