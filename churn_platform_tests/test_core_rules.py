"""Rules of the core stated on both sides of each boundary, small and without Dagster: the tests
written to kill the mutants that survived mutation testing (docs/mutation-testing.md)."""

import base64
import ctypes
import dataclasses
import errno
import hashlib
import hmac
import json
import os
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from churn_platform.core import backups, settings
from churn_platform.core import warehouse as wh
from churn_platform.core.errors import InputError, PlatformError, TransientError
from churn_platform.core.export import postgres as pg
from churn_platform.core.export import snapshots
from churn_platform.core.fields import FIELDS
from churn_platform.core.mapping import (
    DEFAULT_MAPPING,
    Dialect,
    load_mapping,
    normalize,
    read_mapping,
)
from churn_platform.core.pseudonymize import hmac_pads, pseudonym, pseudonym_sql
from churn_platform.core.quality import churn_by_segment_sql, data_quality_sql
from churn_platform.core.source import (
    SourceFileError,
    check_header,
    header_problems,
    read_header,
    staging_table,
)
from churn_platform.core.tables import METRICS_TABLE, SEGMENT_TABLE
from churn_platform.core.transform import analytics_sql, rejected_sql
from churn_platform_tests.conftest import HEADER, load_and_transform, write_csv
from churn_platform_tests.postgres import free_port

# --- pseudonym key handling -------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 63, 64, 65, 200])
def test_keyed_pseudonyms_are_hmac_sha256_for_keys_of_every_length(length):
    """RFC 2104: a key up to the block size (64 bytes) is padded as is; a longer one is hashed."""
    key = bytes(range(1, length + 1)) if length < 256 else b"k" * length
    expected = hmac.new(key, b"C-42", hashlib.sha256).hexdigest()[:32]
    assert pseudonym("C-42", key).replace("-", "") == expected
    sql, params = pseudonym_sql("id", key)
    [(value,)] = duckdb.execute(f"SELECT {sql} FROM (SELECT 'C-42' AS id)", params).fetchall()
    assert str(value).replace("-", "") == expected


def test_hmac_pads_are_the_key_padded_to_64_bytes_xored_with_0x36_and_0x5c():
    inner, outer = hmac_pads(b"\x01" * 64)
    assert inner == b"\x37" * 64 and outer == b"\x5d" * 64
    inner, outer = hmac_pads(b"\x01")
    assert inner == b"\x37" + b"\x36" * 63 and outer == b"\x5d" + b"\x5c" * 63


# --- settings: each variable's default, and the variable read when set --------------------------

SETTINGS = [
    ("CHURN_SOURCE_CSV", settings.source_csv, "/x/in.csv", "/x/in.csv", str(settings.SAMPLE_CSV)),
    ("CHURN_SOURCE_MAPPING", settings.source_mapping, "/x/m.yaml", "/x/m.yaml",
     str(settings.DEFAULT_SOURCE_MAPPING)),
    ("CHURN_DUCKDB_PATH", settings.duckdb_path, "/x/w.duckdb", "/x/w.duckdb",
     str(settings.DEFAULT_DUCKDB_PATH)),
    ("CHURN_DUCKDB_LOCK_TIMEOUT", settings.duckdb_lock_timeout_seconds, "2.5", 2.5, 60.0),
    ("CHURN_RETRY_DELAY_SECONDS", settings.retry_delay_seconds, "7", 7.0, 300.0),
    ("CHURN_BACKUP_DIR", settings.backup_dir, "/x/b", Path("/x/b"),
     settings.PROJECT_ROOT / "data" / "backups"),
    ("CHURN_BACKUP_KEEP", settings.backup_keep, "3", 3, 24),
    ("CHURN_BACKUP_MAX_AGE_HOURS", settings.backup_max_age, "1.5", timedelta(minutes=90),
     timedelta(hours=168)),
    ("CHURN_METRICS_DSN", settings.metrics_dsn, "host=db", "host=db", None),
    ("CHURN_METRICS_RETENTION_DAYS", settings.metrics_retention, "2", timedelta(days=2),
     timedelta(days=400)),
]


@pytest.mark.parametrize("variable, read, value, expected, default", SETTINGS,
                         ids=[s[0] for s in SETTINGS])
def test_each_setting_has_its_documented_default_and_reads_its_variable(
    monkeypatch, variable, read, value, expected, default
):
    monkeypatch.delenv(variable, raising=False)
    assert read() == default
    monkeypatch.setenv(variable, value)
    assert read() == expected


def test_settings_paths_are_the_projects():
    root = Path(settings.__file__).resolve().parents[2]
    assert settings.PROJECT_ROOT == root
    assert settings.SAMPLE_CSV == root / "data" / "customer_churn_data.csv"
    assert settings.DEFAULT_DUCKDB_PATH == root / "data" / "churn_warehouse.duckdb"
    assert settings.DEFAULT_SOURCE_MAPPING == root / "churn_platform/core/mappings/default.yaml"


@pytest.mark.parametrize("variable", ["CHURN_SOURCE_CSV", "CHURN_DUCKDB_PATH", "CHURN_METRICS_DSN"])
def test_an_empty_setting_means_its_default(monkeypatch, variable):
    monkeypatch.setenv(variable, "")
    read = {"CHURN_SOURCE_CSV": settings.source_csv, "CHURN_DUCKDB_PATH": settings.duckdb_path,
            "CHURN_METRICS_DSN": settings.metrics_dsn}[variable]
    assert read() == {"CHURN_SOURCE_CSV": str(settings.SAMPLE_CSV),
                      "CHURN_DUCKDB_PATH": str(settings.DEFAULT_DUCKDB_PATH),
                      "CHURN_METRICS_DSN": None}[variable]


def test_duckdb_config_bounds_memory_and_sets_threads_only_when_asked(monkeypatch):
    monkeypatch.delenv("CHURN_DUCKDB_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("CHURN_DUCKDB_THREADS", raising=False)
    assert settings.duckdb_config() == {"memory_limit": "1GB"}
    monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", "3GB")
    monkeypatch.setenv("CHURN_DUCKDB_THREADS", "2")
    assert settings.duckdb_config() == {"memory_limit": "3GB", "threads": "2"}


def test_grafana_reader_needs_a_password_and_defaults_its_name(monkeypatch):
    monkeypatch.delenv("CHURN_GRAFANA_DB_PASSWORD", raising=False)
    monkeypatch.delenv("CHURN_GRAFANA_DB_USER", raising=False)
    assert settings.grafana_reader() is None
    monkeypatch.setenv("CHURN_GRAFANA_DB_PASSWORD", "")
    assert settings.grafana_reader() is None
    monkeypatch.setenv("CHURN_GRAFANA_DB_PASSWORD", "s3cret")
    assert settings.grafana_reader() == ("grafana_reader", "s3cret")
    monkeypatch.setenv("CHURN_GRAFANA_DB_USER", "viewer")
    assert settings.grafana_reader() == ("viewer", "s3cret")


# --- backup pruning: exactly at `keep` and at `max_age` ----------------------------------------

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def backups_aged(root: Path, *ages: timedelta) -> None:
    """Backups the platform writes (verified ones: only those are counted or pruned)."""
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        for age in ages:
            backups.take_backup(conn, root, NOW - age)


def ages(root: Path) -> list[timedelta]:
    return [NOW - backups.taken_at(b) for b in backups.list_backups(root)]


@pytest.mark.parametrize("count, keep, left", [(3, 3, 3), (4, 3, 3), (3, 4, 3), (3, 1, 1),
                                               (2, 0, 1)])
def test_pruning_keeps_exactly_the_newest_keep_backups(tmp_path, count, keep, left):
    hours = [timedelta(hours=h) for h in range(1, count + 1)]
    backups_aged(tmp_path, *hours)
    removed = backups.prune_backups(tmp_path, keep=keep, max_age=timedelta(days=9), now=NOW).removed
    assert ages(tmp_path) == sorted(hours, reverse=True)[count - left:]  # oldest first
    assert len(removed) == count - left


def test_pruning_keeps_a_backup_exactly_max_age_old_and_removes_one_a_microsecond_older(tmp_path):
    max_age = timedelta(hours=48)
    backups_aged(tmp_path, timedelta(hours=1), max_age, max_age + timedelta(microseconds=1))
    removed = backups.prune_backups(tmp_path, keep=10, max_age=max_age, now=NOW).removed
    assert [NOW - backups.taken_at(b) for b in removed] == [max_age + timedelta(microseconds=1)]
    assert ages(tmp_path) == [max_age, timedelta(hours=1)]


def test_the_newest_backup_stays_however_old(tmp_path):
    backups_aged(tmp_path, timedelta(days=30), timedelta(days=40))
    backups.prune_backups(tmp_path, keep=5, max_age=timedelta(hours=1), now=NOW)
    assert ages(tmp_path) == [timedelta(days=30)]


def test_backups_are_complete_folders_named_by_time_oldest_first(tmp_path):
    assert backups.list_backups(tmp_path / "nowhere") == []
    backups_aged(tmp_path, timedelta(hours=2), timedelta(hours=1))
    (tmp_path / backups.backup_name(NOW - timedelta(hours=3))).write_text("a file, not a backup")
    (tmp_path / ".partial-warehouse-20260601T000000000000Z").mkdir()
    (tmp_path / "other").mkdir()
    assert ages(tmp_path) == [timedelta(hours=2), timedelta(hours=1)]
    name = backups.backup_name(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc))
    assert name == "warehouse-20260102T030405000006Z"
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert backups.taken_at(Path("/b") / name) == at


def test_a_backup_is_taken_whole_and_restores_every_table(tmp_path):
    source = tmp_path / "w.duckdb"
    with duckdb.connect(str(source)) as conn:
        conn.execute("CREATE SCHEMA analytics; CREATE TABLE analytics.t AS SELECT 1 AS x")
        (tmp_path / "b" / f".partial-{backups.backup_name(NOW)}").mkdir(parents=True)
        taken = backups.take_backup(conn, tmp_path / "b", NOW)
    assert taken == tmp_path / "b" / backups.backup_name(NOW) and taken.is_dir()
    assert [p.name for p in (tmp_path / "b").iterdir()] == [taken.name]  # no partial left
    backups.restore_backup(taken, tmp_path / "restored.duckdb")
    with duckdb.connect(str(tmp_path / "restored.duckdb")) as conn:
        assert conn.execute("SELECT x FROM analytics.t").fetchall() == [(1,)]


# --- the export's reads of DuckDB history: by run id, since the retention, oldest first ---------


@pytest.fixture
def history():
    """An in-memory warehouse with three metrics snapshots and their segments."""
    conn = duckdb.connect()
    counts = {"customer_id": 1, "age": 2, "gender": "NULL"}  # gender: absent from the source
    missing = ", ".join(f"{counts.get(f.name, 0)}::BIGINT AS missing_{f.name}" for f in FIELDS)
    conn.execute(f"""
        CREATE SCHEMA analytics;
        CREATE TABLE {METRICS_TABLE} AS
        SELECT 'snap-' || i AS snapshot_id, 'run-' || i AS run_id,
               TIMESTAMP '2026-01-01' + to_hours(i) AS snapshot_at, 'f.csv' AS source_file,
               10 * i AS total_records, 9 * i AS analytics_records, i AS rejected_rows,
               20.5 + i AS churn_rate_percent, 50.25 AS avg_monthly_charges,
               12.5 AS avg_tenure_months, i - 1 AS duplicate_customer_ids, {missing}
        FROM range(1, 4) t(i);
        CREATE TABLE {SEGMENT_TABLE} AS
        SELECT 'snap-' || i AS snapshot_id, 'run-' || i AS run_id,
               TIMESTAMP '2026-01-01' + to_hours(i) AS snapshot_at, 'contract_type' AS dimension,
               s AS segment, 4 AS customers, 1 AS churned, 25.0 AS churn_rate_percent
        FROM range(1, 4) t(i), (VALUES ('One-Year'), ('Two-Year')) v(s);
    """)
    return conn


def spec(name: str) -> snapshots.HistoryTable:
    return next(t for t in snapshots.HISTORY_TABLES if t.name == name)


def test_missing_rows_are_those_of_unknown_runs_since_the_retention_oldest_first(history):
    kpi = spec("kpi_snapshots")
    since = datetime(2026, 1, 1, 2)  # exactly snapshot 2's time: it is in, snapshot 1 is not
    rows = snapshots.missing_rows(history, kpi, {"run-3"}, since)
    assert rows == [("snap-2", "run-2", datetime(2026, 1, 1, 2, tzinfo=timezone.utc),
                     20, 18, 2, 22.5, 50.25, 12.5)]
    rows = snapshots.missing_rows(history, kpi, set(), since - timedelta(microseconds=1))
    assert [r[1] for r in rows] == ["run-2", "run-3"]
    all_rows = snapshots.missing_rows(history, kpi, set(), datetime(2000, 1, 1))
    assert [r[1] for r in all_rows] == ["run-1", "run-2", "run-3"]
    assert snapshots.missing_rows(history, kpi, {"run-1", "run-2", "run-3"},
                                  datetime(2000, 1, 1)) == []


def test_each_history_table_reads_its_columns(history):
    old = datetime(2000, 1, 1)
    [first, *_] = snapshots.missing_rows(history, spec("data_quality_snapshots"), set(), old)
    at = datetime(2026, 1, 1, 1, tzinfo=timezone.utc)
    # missing cells: 1 + 2 + 0, an absent field (NULL) counting as none
    assert first == ("snap-1", "run-1", at, "f.csv", 10, 9, 1, 0, 3)
    missing = snapshots.missing_rows(history, spec("missing_values"), {"run-2", "run-3"}, old)
    assert dict(r[3:] for r in missing) == {f.name: {"customer_id": 1, "age": 2}.get(f.name, 0)
                                            for f in FIELDS if f.name != "gender"}
    segments = snapshots.missing_rows(history, spec("churn_by_segment"), {"run-2", "run-3"}, old)
    assert segments == [("snap-1", "run-1", at, "contract_type", s, 4, 1, 25.0)
                        for s in ("One-Year", "Two-Year")]


def test_a_history_table_not_yet_written_has_nothing_missing():
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA analytics")
    assert snapshots.missing_rows(conn, spec("kpi_snapshots"), set(), datetime(2000, 1, 1)) == []


# --- data-quality and churn-by-segment snapshots: every figure on a hand-made run ---------------


SNAPSHOT = {"snapshot_id": "s1", "run_id": "r1", "snapshot_at": datetime(2026, 1, 1)}


def snapshot_row(conn, sql: str) -> dict:
    cursor = conn.execute(sql, SNAPSHOT)
    names = [d[0] for d in cursor.description]
    [row] = cursor.fetchall()
    return dict(zip(names, row))


@pytest.fixture
def run_tables():
    """Staging (text, as loaded), analytics and rejected rows of a small run."""
    conn = duckdb.connect()
    columns = [f.source_column for f in FIELDS]
    rows = [
        ["C1", "40", "Female", "1", "10", "One-Year", "DSL", "10", "Yes", "Yes"],
        [" C1\u00a0", "", " ", "2", "20", "One-Year", "DSL", "20", "No", "No"],  # C1 again
        ["C2", "\t", "Male", "", "30", "", "DSL", "30", "No", "No"],
        ["C3", "x", "Male", "3", "40", "Two-Year", "DSL", "\u00a0", "No", "No"],
        ["", "50", "Male", "4", "50", "Two-Year", "DSL", "50", "No", "No"],  # no id: rejected
    ]
    values = ", ".join("(" + ", ".join(duckdb_text(v) for v in [*r, "f.csv", i + 2]) + ")"
                       for i, r in enumerate(rows))
    names = ", ".join(f'"{c}"' for c in columns)
    conn.execute(f"CREATE TABLE staging AS SELECT * FROM (VALUES {values}) t({names},"
                 " source_file, source_row)")
    conn.execute("""CREATE TABLE analytics AS SELECT * FROM (VALUES
        ('One-Year', 'New', 'Low', 1, 10.0, 1), ('One-Year', 'New', 'Low', 0, 20.0, 2),
        ('Month-to-Month', 'New', 'Low', 0, 30.0, 0)) t(contract_type, tenure_category,
        monthly_charges_category, churn_flag, monthly_charges, tenure)""")
    conn.execute("CREATE TABLE rejected AS SELECT * FROM (VALUES (5), (6)) t(source_row)")
    return conn


def duckdb_text(value) -> str:
    return str(value) if isinstance(value, int) else "'" + value + "'"


def test_data_quality_counts_volumes_kpis_missing_cells_and_duplicate_ids(run_tables):
    row = snapshot_row(run_tables, data_quality_sql("SELECT * FROM staging",
                                                    "SELECT * FROM analytics",
                                                    "SELECT * FROM rejected"))
    assert (row["snapshot_id"], row["run_id"], row["snapshot_at"]) == (
        "s1", "r1", datetime(2026, 1, 1))
    assert (row["source_file"], row["total_records"], row["analytics_records"],
            row["rejected_rows"]) == ("f.csv", 5, 3, 2)
    assert row["churn_rate_percent"] == 33.33  # 1 of 3, rounded to 2 decimals
    assert row["avg_monthly_charges"] == 20.0 and row["avg_tenure_months"] == 1.0
    # " C1\u00a0" is C1 once trimmed; the empty id is not an id at all
    assert row["duplicate_customer_ids"] == 1
    # empty, blank and non-breaking-space cells are missing; "x" and "0"-like text are not
    assert {f.name: row[f"missing_{f.name}"] for f in FIELDS} == {
        "customer_id": 1, "age": 2, "gender": 1, "tenure": 1, "monthly_charges": 0,
        "contract_type": 1, "internet_service": 0, "total_charges": 1, "tech_support": 0,
        "churn": 0}
    assert row["absent_fields"] == ""


def test_data_quality_names_absent_fields_and_counts_none_of_their_cells(run_tables):
    fields = tuple(dataclasses.replace(f, source_column=None)
                   if f.name in ("gender", "tenure") else f for f in FIELDS)
    row = snapshot_row(run_tables, data_quality_sql("SELECT * FROM staging",
                                                    "SELECT * FROM analytics",
                                                    "SELECT * FROM rejected", fields))
    assert row["missing_gender"] is None and row["missing_tenure"] is None
    assert row["missing_age"] == 2
    assert row["absent_fields"] == "gender, tenure"


def test_churn_by_segment_counts_customers_churned_and_rate_per_segment_of_each_dimension(
    run_tables
):
    cursor = run_tables.execute(churn_by_segment_sql("SELECT * FROM analytics"), SNAPSHOT)
    rows = [r[3:] for r in cursor.fetchall()]
    assert rows == [
        ("contract_type", "Month-to-Month", 1, 0, 0.0),
        ("contract_type", "One-Year", 2, 1, 50.0),
        ("monthly_charges_category", "Low", 3, 1, 33.33),
        ("tenure_category", "New", 3, 1, 33.33),
    ]


# --- typing: every range on both sides of its bound, blanks, imputation -------------------------


ROW = ["C1", "40", "Female", "10", "70.5", "One-Year", "DSL", "705", "Yes", "No"]
COLUMN = {f.name: i for i, f in enumerate(FIELDS)}


def typed(tmp_path, *rows: dict, key: bytes | None = None) -> tuple[list[dict], list[dict]]:
    """(analytics rows, rejected rows) of ROW with each dict's {field: text} changes."""
    lines = []
    for changes in rows:
        cells = list(ROW)
        for name, text in changes.items():
            cells[COLUMN[name]] = text
        lines.append(",".join(cells))
    csv = write_csv(tmp_path / "in.csv", "\n".join([HEADER, *lines]) + "\n")
    conn = duckdb.connect()
    load_and_transform(conn, csv, key)

    def rows_of(table: str) -> list[dict]:
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY source_row")
        return [dict(zip([d[0] for d in cursor.description], r)) for r in cursor.fetchall()]

    return rows_of("analytics.customer_churn"), rows_of("analytics.rejected_rows")


@pytest.mark.parametrize("field, inside, beyond, reason", [
    ("age", "0", "-1", "below the minimum 0"),
    ("age", "130", "131", "above the maximum 130"),
    ("tenure", "0", "-1", "below the minimum 0"),
    ("tenure", "1200", "1201", "above the maximum 1200"),
    ("monthly_charges", "0", "-0.01", "below the minimum 0"),
    ("total_charges", "0", "-0.01", "below the minimum 0"),
])
def test_each_range_takes_its_bound_and_rejects_just_beyond_it(tmp_path, field, inside, beyond,
                                                                 reason):
    accepted, rejected = typed(tmp_path, {field: inside}, {field: beyond})
    assert [r["source_row"] for r in accepted] == [2]
    assert accepted[0][field] == float(inside)
    assert [(r["source_row"], r["reason"], r["offending_value"]) for r in rejected] == [
        (3, reason, beyond)]


def test_charges_have_no_upper_bound(tmp_path):
    [row], rejected = typed(tmp_path, {"monthly_charges": "1e9", "total_charges": "123456789.5"})
    assert rejected == [] and row["monthly_charges"] == 1e9 and row["total_charges"] == 123456789.5


@pytest.mark.parametrize("text, value", [("40.0", 40), ("4e1", 40), (" 40 ", 40)])
def test_a_whole_number_is_accepted_however_written(tmp_path, text, value):
    [row], rejected = typed(tmp_path, {"age": text})
    assert rejected == [] and row["age"] == value


@pytest.mark.parametrize("text, reason", [("40.5", "not a whole number"),
                                          ("inf", "not a finite number"),
                                          ("-inf", "not a finite number"),
                                          ("forty", "not a number")])
def test_integers_reject_fractions_infinities_and_words(tmp_path, text, reason):
    _, [rejected] = typed(tmp_path, {"tenure": text})
    assert (rejected["column_name"], rejected["reason"]) == ("Tenure", reason)


@pytest.mark.parametrize("blank", ["\u00a0", "\t", " \u00a0\t "])
def test_blanks_at_the_edges_of_any_cell_are_trimmed(tmp_path, blank):
    [row], rejected = typed(tmp_path, {"age": f"{blank}41{blank}",
                                       "monthly_charges": f"{blank}12.5{blank}",
                                       "gender": f"{blank}male{blank}",
                                       "internet_service": f"fiber{blank}optic{blank}",
                                       "churn": f"{blank}YES"},
                            key=b"k")
    assert rejected == []
    assert (row["age"], row["monthly_charges"], row["gender"], row["internet_service"],
            row["churn"], row["churn_flag"]) == (41, 12.5, "Male", "Fiber Optic", "Yes", 1)


@pytest.mark.parametrize("blank", ["", " ", "\u00a0", "\t\u00a0 "])
def test_a_blank_cell_is_missing_and_imputed_never_rejected(tmp_path, blank):
    accepted, rejected = typed(tmp_path, {}, {"age": blank, "gender": blank, "tenure": blank,
                                              "total_charges": blank, "churn": blank})
    assert rejected == []
    imputed = accepted[1]
    assert (imputed["age"], imputed["gender"], imputed["tenure"], imputed["total_charges"],
            imputed["churn"], imputed["churn_flag"]) == (40, "Unknown", 0, 0.0, "No", 0)


def test_the_id_is_trimmed_of_blanks_before_its_pseudonym(tmp_path):
    accepted, rejected = typed(tmp_path, {"customer_id": "\u00a0C1\t"}, {"customer_id": "C1"},
                               key=b"k")
    assert rejected == []
    assert {str(r["anonymized_customer_id"]) for r in accepted} == {pseudonym("C1", b"k")}


@pytest.mark.parametrize("blank", ["", " ", "\u00a0\t"])
def test_a_blank_id_is_rejected_as_missing_without_its_text(tmp_path, blank):
    _, [rejected] = typed(tmp_path, {"customer_id": blank})
    assert (rejected["column_name"], rejected["reason"], rejected["offending_value"]) == (
        "CustomerID", "missing customer id", None)


def test_a_category_inside_blank_runs_matches_but_a_different_word_does_not(tmp_path):
    accepted, rejected = typed(tmp_path, {"contract_type": "one-YEAR"},
                               {"contract_type": "Two \u00a0 -Year"})
    assert [r["contract_type"] for r in accepted] == ["One-Year"]
    assert rejected[0]["reason"] == (
        "not an accepted value (Month-to-Month, One-Year, Two-Year)")


def test_the_median_is_rounded_half_away_from_zero_and_the_mean_is_not_rounded(tmp_path):
    accepted, _ = typed(tmp_path, {"age": "30", "monthly_charges": "10"},
                        {"age": "31", "monthly_charges": "11"}, {"age": "", "monthly_charges": ""})
    assert accepted[2]["age"] == 31  # median 30.5
    assert accepted[2]["monthly_charges"] == pytest.approx(10.5)


def test_several_problems_are_counted_and_the_first_in_source_order_named(tmp_path):
    _, [rejected] = typed(tmp_path, {"age": "x", "churn": "Maybe", "tenure": "-1"})
    assert (rejected["column_name"], rejected["reason"], rejected["problem_count"]) == (
        "Age", "not a number", 3)
    _, [rejected] = typed(tmp_path, {"churn": "Maybe", "tenure": "1.5"})
    assert (rejected["column_name"], rejected["problem_count"]) == ("Tenure", 2)


def test_offending_values_keep_exactly_200_characters(tmp_path):
    _, [rejected] = typed(tmp_path, {"gender": "y" * 201})
    assert rejected["offending_value"] == "y" * 200
    _, [rejected] = typed(tmp_path, {"gender": "z" * 200})
    assert rejected["offending_value"] == "z" * 200


# --- the PostgreSQL side of the export (a real server: the postgres fixtures) -------------------


KPI = spec("kpi_snapshots").columns
SEGMENTS = spec("churn_by_segment").columns
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def kpi(snapshot: str, run: str, total: int) -> tuple:
    return (snapshot, run, AT, total, total - 1, 1, 25.0, 50.0, 12.0)


def segment(snapshot: str, run: str, name: str, customers: int) -> tuple:
    return (snapshot, run, AT, "contract_type", name, customers, 1, 100 / customers)


@pytest.fixture
def metrics(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        pg.ensure_schema(conn)
        pg.ensure_schema(conn)  # idempotent
        yield conn


def test_a_snapshot_exported_again_replaces_its_rows_whole_and_leaves_the_others(metrics):
    conn = metrics
    assert pg.replace_snapshots(conn, "kpi_snapshots", KPI,
                                [kpi("s1", "r1", 10), kpi("s2", "r2", 20)]) == 2
    pg.replace_snapshots(conn, "churn_by_segment", SEGMENTS,
                         [segment("s1", "r1", "One-Year", 4), segment("s1", "r1", "Two-Year", 5),
                          segment("s2", "r2", "One-Year", 6)])
    # s1's run re-executed (a new run id and new figures); one of its segments is gone.
    assert pg.replace_snapshots(conn, "kpi_snapshots", KPI, [kpi("s1", "r1b", 11)]) == 1
    pg.replace_snapshots(conn, "churn_by_segment", SEGMENTS, [segment("s1", "r1b", "One-Year", 7)])
    assert conn.execute("SELECT snapshot_id, source_run_id, total_records"
                        " FROM churn_metrics.kpi_snapshots ORDER BY 1").fetchall() == [
        ("s1", "r1b", 11), ("s2", "r2", 20)]
    assert conn.execute("SELECT snapshot_id, source_run_id, segment, customers"
                        " FROM churn_metrics.churn_by_segment ORDER BY 1, 3").fetchall() == [
        ("s1", "r1b", "One-Year", 7), ("s2", "r2", "One-Year", 6)]
    assert pg.replace_snapshots(conn, "kpi_snapshots", KPI, []) == 0
    assert conn.execute("SELECT count(*) FROM churn_metrics.kpi_snapshots").fetchone() == (2,)


def test_upsert_inserts_new_keys_and_updates_existing_ones_in_place(metrics):
    conn = metrics
    columns = ("source_run_id", "snapshots_added", "runs_synced", "warehouse_file_bytes")
    assert pg.upsert_rows(conn, "exports", columns, "source_run_id",
                          [("e1", 1, 2, 300), ("e2", 0, 1, 400)]) == 2
    first_export = conn.execute("SELECT exported_at FROM churn_metrics.exports"
                                " WHERE source_run_id = 'e1'").fetchone()[0]
    conn.commit()
    assert pg.upsert_rows(conn, "exports", columns, "source_run_id", [("e1", 5, 6, 700)]) == 1
    assert conn.execute("SELECT source_run_id, snapshots_added, runs_synced, warehouse_file_bytes"
                        " FROM churn_metrics.exports ORDER BY 1").fetchall() == [
        ("e1", 5, 6, 700), ("e2", 0, 1, 400)]
    updated = conn.execute("SELECT exported_at FROM churn_metrics.exports"
                           " WHERE source_run_id = 'e1'").fetchone()[0]
    assert updated > first_export  # the row says when it last reached PostgreSQL


def test_copy_rows_counts_what_it_copied_into_the_named_table(metrics):
    rows = [kpi("s9", "r9", 3)]
    assert pg.copy_rows(metrics, "kpi_snapshots", KPI, rows) == 1
    assert pg.copy_rows(metrics, pg.table("kpi_snapshots"), KPI, []) == 0
    assert metrics.execute("SELECT snapshot_id, source_run_id, snapshot_at, total_records"
                           " FROM churn_metrics.kpi_snapshots").fetchall() == [
        ("s9", "r9", AT, 3)]


def test_the_reader_role_may_read_and_nothing_else(metrics, pg_dsn):
    pg.grant_reader(metrics, "reader_x", "pw-1")
    metrics.commit()
    as_reader = make_conninfo(pg_dsn, user="reader_x", password="pw-1")
    with psycopg.connect(as_reader) as reader:
        assert reader.execute("SELECT count(*) FROM churn_metrics.kpi_snapshots").fetchone() == (0,)
        with pytest.raises((psycopg.errors.InsufficientPrivilege,
                            psycopg.errors.ReadOnlySqlTransaction)):
            reader.execute("DELETE FROM churn_metrics.kpi_snapshots")
    setting = metrics.execute("SELECT current_setting('churn.reader_password', true)").fetchone()
    assert setting[0] in ("", None)  # the password does not linger in the session


def test_an_unreachable_server_is_a_transient_error_that_never_shows_the_password():
    dsn = f"host=127.0.0.1 port={free_port()} dbname=m user=u password=hunter2 connect_timeout=3"
    with pytest.raises(TransientError) as raised:
        pg.open_metrics_database(dsn)
    message = str(raised.value)
    assert message.startswith("metrics database (host=127.0.0.1 port=")
    assert "dbname=m user=u) unavailable: " in message
    assert "hunter2" not in message and raised.value.retryable


def test_describe_dsn_names_host_port_database_and_user_only():
    assert pg.describe_dsn("host=db port=5433 dbname=metrics user=exporter password=hunter2") == (
        "host=db port=5433 dbname=metrics user=exporter")
    assert pg.describe_dsn("postgresql://exporter:hunter2@db/metrics") == (
        "host=db dbname=metrics user=exporter")
    assert pg.describe_dsn("host=db") == "host=db"
    assert pg.describe_dsn("not a dsn ===") == "<unparsable connection string>"


# --- the warehouse: history merges by key, lock and error messages -------------------------------


def test_a_column_added_to_snapshots_joins_the_history_with_nulls_for_older_rows():
    conn = duckdb.connect()
    wh.write_table(conn, "analytics", "h", wh.SqlTable("SELECT 's1' AS k, 1 AS a",
                                                      history_key="k"))
    written = wh.write_table(conn, "analytics", "h", wh.SqlTable(
        "SELECT 's2' AS k, 2 AS a, 'x''y' AS \"new col\"", history_key="k"))
    assert conn.execute("SELECT k, a, \"new col\" FROM analytics.h ORDER BY k").fetchall() == [
        ("s1", 1, None), ("s2", 2, "x'y")]
    assert written.columns == [("k", "VARCHAR"), ("a", "INTEGER"), ("new col", "VARCHAR")]
    assert written.snapshot == {"a": 2}  # a one-row snapshot's numbers; text is left out
    # The same key again replaces its row (row identity: one row per key, the new values)
    wh.write_table(conn, "analytics", "h", wh.SqlTable("SELECT 's1' AS k, 9 AS a",
                                                      history_key="k"))
    assert conn.execute("SELECT k, a FROM analytics.h ORDER BY k").fetchall() == [
        ("s1", 9), ("s2", 2)]
    many = wh.write_table(conn, "analytics", "h", wh.SqlTable(
        "SELECT 's' || i AS k, i AS a FROM range(3, 5) t(i)", history_key="k"))
    assert many.snapshot == {} and many.row_count == 4


def test_a_lock_error_names_the_holder_or_says_it_is_unknown():
    held = duckdb.IOException('Could not set lock on file "w.duckdb": Conflicting lock is held'
                              " in /usr/bin/python3 (PID 42)\nSee also ...")
    message = str(wh._locked("w.duckdb", held, 2.4))
    assert message == (
        "DuckDB file w.duckdb is locked by another process (/usr/bin/python3 (PID 42)); waited"
        " 2 s. Close that process's connection (a notebook, a BI tool, another run) or raise"
        " CHURN_DUCKDB_LOCK_TIMEOUT, then run again.")
    anonymous = str(wh._locked("w.duckdb", duckdb.IOException("lock"), 60))
    assert "(unknown holder); waited 60 s." in anonymous


def test_duckdb_errors_are_cut_before_the_echoed_line_and_the_option_dump():
    error = duckdb.InvalidInputException(
        "Invalid Input Error: Could not convert\n\nOriginal Line: C-SECRET,1\n"
        "  file = /data/in.csv\n  delimiter = ,\nmore after")
    assert wh.clean_duckdb_error(error) == "Invalid Input Error: Could not convert"
    error = duckdb.InvalidInputException("Bad\nPossible fixes: x\nC-SECRET")
    assert wh.clean_duckdb_error(error) == "Bad"


# --- a mapping's renamed columns reach every statement, and imputed constants are literals -------


def test_renamed_source_columns_are_typed_imputed_and_rejected_under_their_own_names():
    """A mapping binds fields to other columns: the statistic, analytics and rejections all read
    those columns, never the default names (which the staging table here does not have)."""
    renamed = tuple(dataclasses.replace(f, source_column=f"src_{f.name}") for f in FIELDS)
    conn = duckdb.connect()
    good = {"customer_id": "C1", "age": "30", "gender": "Male", "tenure": "1",
            "monthly_charges": "10", "contract_type": "One-Year", "internet_service": "DSL",
            "total_charges": "10", "tech_support": "No", "churn": "No"}
    rows = [good, {**good, "customer_id": "C2", "age": "40"}, {**good, "customer_id": "C3",
                                                              "age": ""},
            {**good, "customer_id": "C4", "age": "x"}]
    select = " UNION ALL ".join(
        "SELECT " + ", ".join(f"'{r[f.name]}' AS src_{f.name}" for f in FIELDS)
        + f", {i + 2} AS source_row, TIMESTAMP '2026-01-01' AS load_timestamp"
        for i, r in enumerate(rows))
    conn.execute(f"CREATE TABLE staging AS {select}")
    sql, params = analytics_sql("SELECT * FROM staging", None, datetime(2026, 1, 2), renamed)
    conn.execute(f"CREATE TABLE analytics AS {sql}", params)
    assert conn.execute("SELECT source_row, age, processed_timestamp FROM analytics"
                        " ORDER BY 1").fetchall() == [
        (2, 30, datetime(2026, 1, 2)), (3, 40, datetime(2026, 1, 2)),
        (4, 35, datetime(2026, 1, 2))]  # median of 30 and 40
    rejected = conn.execute(rejected_sql("SELECT * FROM staging", "SELECT * FROM analytics",
                                         renamed)).fetchall()
    assert [(r[0], r[1], r[2]) for r in rejected] == [(5, "src_age", "not a number")]


def test_an_imputed_constant_is_a_quoted_sql_literal():
    fields = tuple(dataclasses.replace(f, impute="it's \"odd\"\\") if f.name == "gender" else f
                   for f in FIELDS)
    conn = duckdb.connect()
    conn.execute("CREATE TABLE staging AS SELECT " + ", ".join(
        f"'{v}' AS \"{f.source_column}\"" for f, v in zip(
            FIELDS, ["C1", "30", "", "1", "10", "One-Year", "DSL", "10", "No", "No"]))
        + ", 2 AS source_row, TIMESTAMP '2026-01-01' AS load_timestamp")
    sql, params = analytics_sql("SELECT * FROM staging", None, datetime(2026, 1, 2), fields)
    assert conn.execute(f"SELECT gender FROM ({sql})", params).fetchall() == [
        ("it's \"odd\"\\",)]


def test_a_missing_source_file_is_named_in_the_error(tmp_path):
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(SourceFileError) as raised:
        read_header(missing)
    assert str(raised.value) == (
        f"{missing}: file not found (set CHURN_SOURCE_CSV to the source CSV)")


def test_connect_waits_10_seconds_by_default_or_the_dsn_connect_timeout(pg_dsn):
    with pg.open_metrics_database(pg_dsn) as conn:
        assert conn.info.get_parameters()["connect_timeout"] == "10"
        assert conn.execute("SELECT current_database()").fetchone()[0] in pg_dsn
    with pg.open_metrics_database(make_conninfo(pg_dsn, connect_timeout="3")) as conn:
        assert conn.info.get_parameters()["connect_timeout"] == "3"


def test_a_driver_message_echoing_the_password_is_masked():
    """libpq echoes what it could not use; here the password doubles as the unresolvable host."""
    secret = "no-such-host.invalid"
    with pytest.raises(TransientError) as raised:
        pg.open_metrics_database(f"host={secret} dbname=m user=u password={secret} connect_timeout=3")
    _, driver_message = str(raised.value).split(" unavailable: ")
    assert secret not in driver_message
    assert "'***'" in driver_message


def test_the_backup_command_lists_oldest_first_and_restores_into_a_new_file(
    tmp_path, monkeypatch, capsys
):
    root = tmp_path / "backups"
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(root))
    assert backups.main(["list"]) == 0 and capsys.readouterr().out == ""
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT 7 AS x")
        newer = backups.take_backup(conn, root, NOW)
        older = backups.take_backup(conn, root, NOW - timedelta(hours=1))
    assert backups.main(["list"]) == 0
    assert capsys.readouterr().out == f"{older}\n{newer}\n"
    target = tmp_path / "restored.duckdb"
    assert backups.main(["restore", str(newer), str(target)]) == 0
    assert capsys.readouterr().err == f"restored {newer} into {target}\n"
    with duckdb.connect(str(target)) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
    assert backups.main(["restore", str(newer), str(target)]) == 1
    assert "the target exists: restore into a new file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        backups.main([])


def test_a_backup_folder_is_created_with_its_parents_and_a_crashed_partial_is_discarded(tmp_path):
    root = tmp_path / "a" / "b" / "backups"
    partial = root / f".partial-{backups.backup_name(NOW)}"
    partial.mkdir(parents=True)
    (partial / "stale.parquet").write_text("left by a crash")
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        taken = backups.take_backup(conn, root, NOW)
        assert not (taken / "stale.parquet").exists() and not partial.exists()
        fresh = backups.take_backup(conn, tmp_path / "new" / "deeper", NOW)
    assert fresh.is_dir()


def test_restore_refuses_an_existing_file_and_says_what_to_do(tmp_path):
    existing = tmp_path / "w.duckdb"
    existing.write_bytes(b"")
    with pytest.raises(backups.BackupRefused) as raised:
        backups.restore_backup(tmp_path / "any", existing)
    assert str(raised.value) == (f"{existing}: refused: the target exists: restore into a new"
                                 " file, then point CHURN_DUCKDB_PATH at it")


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.mkdir(), "is not a regular file (a directory, FIFO or device cannot be read)"),
    (lambda p: p.write_bytes(b""), "is empty: expected a header line and data rows"),
    (lambda p: p.write_bytes(b"\n\nx"), "is empty: expected a header line and data rows"),
])
def test_each_unreadable_source_is_named_with_its_problem(tmp_path, make, problem):
    path = tmp_path / "in.csv"
    make(path)
    with pytest.raises(SourceFileError) as raised:
        read_header(path)
    assert (str(raised.value), raised.value.problem) == (f"{path}: {problem}", problem)


def test_a_source_that_fails_to_read_is_named_with_the_system_error():
    # A regular file whose read fails (EIO), even for root: reading its own memory at offset 0.
    path = Path("/proc/self/mem")
    if not path.is_file():
        pytest.skip("needs Linux /proc")
    with pytest.raises(SourceFileError) as raised:
        read_header(path)
    assert str(raised.value) == f"{path}: cannot be read (Input/output error)"


@pytest.mark.parametrize("text, problem", [
    (b"a,b\n", "has no line 3 (the mapping's csv.header_row)"),
    (b"title\nsub\n \t\nx,y\n", "line 3, the header, is empty"),
])
def test_a_header_row_past_the_end_or_blank_is_named_with_the_file(tmp_path, text, problem):
    path = tmp_path / "in.csv"
    path.write_bytes(text)
    with pytest.raises(SourceFileError) as raised:
        read_header(path, Dialect(header_row=3))
    assert str(raised.value) == f"{path}: {problem}"


def test_the_backup_command_describes_itself(capsys):
    with pytest.raises(SystemExit) as exited:
        backups.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "\n\nList or restore warehouse backups.\n" in text
    assert "  verified backups under CHURN_BACKUP_DIR, oldest first\n" in text
    assert "  load a verified backup into a new DuckDB file\n" in text


def test_a_header_is_split_by_the_mappings_delimiter_and_quote_keeping_inner_blanks(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"'x;y';b ;MAX\r\n1;2;3\r\n")
    assert read_header(path, Dialect(delimiter=";", quote="'")) == ["x;y", "b ", "MAX"]
    path.write_bytes(b"a;b \r\n1;2\r\n")  # a trailing blank is part of the last name
    assert read_header(path, Dialect(delimiter=";")) == ["a", "b "]


def test_a_header_that_is_not_utf8_names_the_byte_its_position_and_the_fix(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"ab,\xe9c\n1,2\n")
    with pytest.raises(SourceFileError) as raised:
        read_header(path)
    assert str(raised.value) == (
        f"{path}: line 1 is not UTF-8 text (byte 0xe9 at position 4; set csv.encoding: latin-1"
        " in the source mapping if the export is Latin-1)")


def test_category_spellings_trim_the_same_blanks_as_the_sql():
    """normalize() and the typing SQL agree on what a blank is (mapping.BLANKS): other Unicode
    spaces are text, in Python as in DuckDB."""
    assert normalize("\u00a0\tYes \n") == "yes"
    assert normalize("\u2003Yes\x0b") == "\u2003yes\x0b"


def test_every_alias_problem_is_reported_and_the_good_aliases_still_bound(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("fields:\n  customer_id: CustomerID\n  churn:\n    column: Churn\n"
                    "    aliases:\n      j: [Yes]\n      nope: Maybe\n      ja: Yes\n")
    mapping, problems = read_mapping(path)
    assert problems == [
        "fields.churn.aliases: expected text on both sides, got 'j': ['Yes']",
        "fields.churn.aliases: 'nope' -> 'Maybe' names no category of churn (accepted: Yes, No)",
    ]
    assert mapping.field("churn").aliases == (("ja", "Yes"),)


def header_problems_of(*extra: str, header: list[str] | None = None) -> list[str]:
    columns = [f.source_column for f in FIELDS]
    return header_problems(header if header is not None else [*columns, *extra],
                           load_mapping(DEFAULT_MAPPING))


def test_a_name_repeated_exactly_is_a_duplicate_and_one_repeated_in_other_case_says_why():
    assert header_problems_of("Age") == ["columns named more than once: Age"]
    assert header_problems_of("churn") == [
        "columns named more than once (DuckDB ignores case): Churn, churn"]
    assert header_problems_of() == []


def test_unnamed_columns_are_listed_by_position_when_the_header_has_several():
    columns = [f.source_column for f in FIELDS]
    assert header_problems_of(header=["", *columns, " "]) == [
        "header columns without a name, by position: 1, 12"]
    assert header_problems_of(header=["", "x"])[-1] == (
        "header columns without a name, by position: 1")


def test_a_one_column_header_says_so_with_a_guess_only_when_there_is_one():
    missing = "missing required columns: " + ", ".join(f.source_column for f in FIELDS)
    assert header_problems_of(header=["abc"]) == [
        missing, "the header has a single column; columns must be separated by ','"]
    assert header_problems_of(header=["a;b"])[-1] == (
        "the header has a single column (it looks delimited by ';'); columns must be separated"
        " by ','")
    assert header_problems_of(header=[""]) == [
        missing, "the header has a single column; columns must be separated by ','"]


def test_columns_named_like_stagings_own_are_all_listed():
    assert header_problems_of("source_row", "Load_Timestamp") == [
        "columns named like those staging adds: source_row, Load_Timestamp"]


@pytest.mark.parametrize("spelling", ["true", "True", "yes", "YES"])
def test_a_field_is_left_out_with_absent_true_or_yes(tmp_path, spelling):
    path = tmp_path / "m.yaml"
    path.write_text(f"fields:\n  customer_id: CustomerID\n  churn: Churn\n"
                    f"  age:\n    absent: {spelling}\n")
    mapping, problems = read_mapping(path)
    assert problems == [] and mapping.field("age").absent


@pytest.mark.parametrize("entry, problem", [
    ("    column: Age\n    absent: true\n",
     "fields.age: has both `column` and `absent`; choose one"),
    ("    column: [Age]\n", "fields.age: expected `column: <source column>` or `absent: true`"),
    ("    absent: no\n", "fields.age.absent: expected `true`, got 'no'"),
])
def test_a_field_entry_that_is_not_clear_binds_no_column(tmp_path, entry, problem):
    path = tmp_path / "m.yaml"
    path.write_text(f"fields:\n  customer_id: CustomerID\n  churn: Churn\n  age:\n{entry}")
    mapping, problems = read_mapping(path)
    assert problems == [problem]
    assert mapping.field("age").source_column is None


@pytest.mark.parametrize("csv_section, problems", [
    ("  quote: ab\n", ["csv.quote: expected one character, got 'ab'"]),
    ("  delimiter: \"\\n\"\n", ["csv.delimiter: expected one character, got '\\n'"]),
    ("  delimiter: X\n  quote: \"|\"\n", []),  # any one character but a line break
])
def test_the_delimiter_and_quote_are_one_character_each_and_not_a_line_break(
    tmp_path, csv_section, problems
):
    path = tmp_path / "m.yaml"
    path.write_text(f"csv:\n{csv_section}fields:\n  customer_id: CustomerID\n  churn: Churn\n")
    assert read_mapping(path)[1] == problems


def test_every_header_problem_is_in_one_message_and_a_custom_mapping_is_named(tmp_path):
    columns = [f.source_column for f in FIELDS]
    with pytest.raises(SourceFileError) as raised:
        check_header("in.csv", [*columns[1:], "Age", "source_row"])
    assert str(raised.value) == (
        "in.csv: missing required columns: CustomerID; columns named more than once: Age;"
        " columns named like those staging adds: source_row")
    custom = tmp_path / "m.yaml"
    custom.write_text("fields:\n  customer_id: Id\n  churn: Churn\n")
    with pytest.raises(SourceFileError) as raised:
        check_header("in.csv", ["Churn", "Age"], load_mapping(custom))
    assert str(raised.value) == (
        f"in.csv: missing required columns: Id (source mapping {custom.resolve()})")


def stage(path: Path):
    """Write the staging table of `path` into an in-memory warehouse: (connection, Written)."""
    conn = duckdb.connect()
    return conn, wh.write_table(conn, "staging", "customer_churn", staging_table(path))


def test_staging_records_the_file_the_load_time_and_what_it_kept(tmp_path):
    path = write_csv(tmp_path / "in.csv", f"{HEADER},Extra\n{','.join(ROW)},x\n")
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    conn, written = stage(path)
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    [(source_file, loaded, source_row)] = conn.execute(
        "SELECT source_file, load_timestamp, source_row FROM staging.customer_churn").fetchall()
    assert (source_file, source_row) == (str(path.resolve()), 2)
    assert before <= loaded <= after  # UTC, as DuckDB keeps it: naive
    table = staging_table(path)
    assert table.error_context == f"loading {path.resolve()}"
    mapping = load_mapping(DEFAULT_MAPPING)
    assert table.metadata == {
        "source_file": str(path.resolve()), "source_columns": 11,
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "source_mapping": mapping.path, "source_mapping_sha256": mapping.sha256,
        "absent_fields": "none", "columns_kept_in_staging_only": "Extra"}
    assert written.row_count == 1


def test_a_header_without_rows_is_refused_naming_the_file(tmp_path):
    path = write_csv(tmp_path / "in.csv", f"{HEADER}\n")
    with pytest.raises(SourceFileError) as raised:
        stage(path)
    assert str(raised.value) == f"{path.resolve()}: has a header but no data rows"


def test_a_row_duckdb_cannot_read_fails_naming_the_file_being_loaded(tmp_path):
    path = write_csv(tmp_path / "in.csv", f"{HEADER}\n{','.join(ROW)},1,2,3\n")
    with pytest.raises(PlatformError) as raised:
        stage(path)
    assert str(raised.value).startswith(f"loading {path.resolve()}: ")


def test_a_source_rewritten_after_its_check_is_refused_and_nothing_is_loaded(tmp_path):
    path = write_csv(tmp_path / "in.csv", f"{HEADER}\n{','.join(ROW)}\n")
    table = staging_table(path)  # the file is checked and fingerprinted here
    with path.open("a") as handle:
        handle.write(",".join(ROW) + "\n")
    conn = duckdb.connect()
    with pytest.raises(SourceFileError) as raised:
        wh.write_table(conn, "staging", "customer_churn", table)
    assert str(raised.value) == (
        f"{path.resolve()}: changed while it was being read; nothing was loaded")
    assert conn.execute("SELECT count(*) FROM information_schema.tables"
                        " WHERE table_name = 'customer_churn'").fetchone() == (0,)


def test_the_load_timestamp_is_utc_whatever_the_machines_time_zone(tmp_path, monkeypatch):
    import time
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no summer time
    time.tzset()
    try:
        path = write_csv(tmp_path / "in.csv", f"{HEADER}\n{','.join(ROW)}\n")
        conn, _ = stage(path)
        loaded = conn.execute("SELECT load_timestamp FROM staging.customer_churn").fetchone()[0]
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        assert timedelta(0) <= now - loaded < timedelta(minutes=5)
    finally:
        monkeypatch.undo()
        time.tzset()


# --- backup manifests: every rule that makes a folder a backup, on both sides ------------------

from churn_platform.core import backup_manifest as bm  # noqa: E402

SHA0 = "0" * 64


def table_entry(**edits) -> dict:
    entry = {"schema": "analytics", "name": "t", "columns": [{"name": "x", "type": "INTEGER"}],
             "row_count": 0, "file": "table-001.parquet", "size_bytes": 0, "sha256": SHA0}
    return {**entry, **edits}


def document(*tables: dict, **edits) -> dict:
    return {"format": bm.FORMAT, "version": bm.VERSION, "created_at": "2026-06-01",
            "tables": list(tables) or [table_entry()], "models": [], **edits}


def version_1(document: dict) -> dict:
    """The same manifest as version 1 wrote it: no models."""
    return {**{k: v for k, v in document.items() if k != "models"}, "version": 1}


@pytest.mark.parametrize("data_type", ["INTEGER", "TIMESTAMP WITH TIME ZONE", "DECIMAL(1,0)",
                                       "DECIMAL(18,3)", "DECIMAL(5,5)", "DECIMAL(38,38)"])
def test_a_whitelisted_type_or_a_decimal_of_1_to_38_digits_may_be_restored(data_type):
    assert bm.check_type(data_type) is None


@pytest.mark.parametrize("data_type", ["integer", "VARCHAR[]", "INTEGER; DROP TABLE t",
                                       "DECIMAL(0,0)", "DECIMAL(39,0)", "DECIMAL(5,6)",
                                       "DECIMAL(38,39)", "DECIMAL(5,0) "])
def test_any_other_type_is_refused_by_name(data_type):
    assert bm.check_type(data_type) == f"type {data_type!r} is not one a backup may hold"


@pytest.mark.parametrize("name", ["x", "a" * 1024, 'with "quotes" and blanks', "é"])
def test_a_column_name_is_any_text_of_1_to_1024_characters_without_nul(name):
    assert bm.check_column_name(name) is None


@pytest.mark.parametrize("name", ["", "a" * 1025, "a\x00b", 5, None])
def test_an_empty_long_nul_holding_or_non_text_column_name_is_refused(name):
    assert bm.check_column_name(name) == (
        f"column name {name!r} is not 1 to 1024 characters without NUL")


@pytest.mark.parametrize("name", ["a", "_x", "churn_2", "a" * 63, "main"])
def test_a_schema_or_table_name_is_lower_case_letters_digits_and_underscores(name):
    assert bm.check_table_name(name) is None


@pytest.mark.parametrize("name", ["A", "1a", "a" * 64, "a-b", "a.b", "", "temp", "system",
                                  "information_schema", "pg_catalog", 5])
def test_other_or_reserved_schema_and_table_names_are_refused(name):
    assert bm.check_table_name(name) == (
        f"name {name!r} is not lower-case letters, digits and underscores, nor reserved")


def test_a_manifest_within_every_rule_lists_its_tables():
    second = table_entry(name="u", columns=[{"name": "a", "type": "VARCHAR"},
                                            {"name": "b", "type": "DECIMAL(18,3)"}],
                         row_count=7, file="table-002.parquet", size_bytes=9, sha256="a" * 64)
    tables = [
        bm.Table("analytics", "t", (("x", "INTEGER"),), 0, "table-001.parquet", 0, SHA0),
        bm.Table("analytics", "u", (("a", "VARCHAR"), ("b", "DECIMAL(18,3)")), 7,
                 "table-002.parquet", 9, "a" * 64),
    ]
    assert bm.parse_manifest(document(table_entry(), second)) == bm.Contents(tables, [])
    assert bm.parse_manifest(version_1(document(table_entry(), second))) == bm.Contents(tables, [])


FIELDS_ERROR = ("the manifest does not have exactly the fields"
                " ['created_at', 'format', 'models', 'tables', 'version']")
FIELDS_ERROR_1 = ("the manifest does not have exactly the fields"
                  " ['created_at', 'format', 'tables', 'version']")
MALFORMED = "the manifest's created_at, tables or models is malformed"
NOT_OURS = "the manifest is not churn_platform-backup version 1 or 2"


@pytest.mark.parametrize("manifest, why", [
    ([], NOT_OURS),
    ({**document(), "extra": 1}, FIELDS_ERROR),
    ({k: v for k, v in document().items() if k != "created_at"}, FIELDS_ERROR),
    ({k: v for k, v in document().items() if k != "models"}, FIELDS_ERROR),
    (document(version=1), FIELDS_ERROR_1),  # version 1 has no models
    ({**version_1(document()), "models": []}, FIELDS_ERROR_1),
    (document(format="other"), NOT_OURS),
    (document(version=3), NOT_OURS),
    (document(version=0), NOT_OURS),
    (document(version="2"), NOT_OURS),
    (document(created_at=5), MALFORMED),
    (document(tables={}), MALFORMED),
    (document(models={}), MALFORMED),
    (document(table_entry(), table_entry(file="table-002.parquet")), "two tables share a name"),
    (document(table_entry(), table_entry(name="u")), "two tables or models share a file"),
])
def test_a_manifest_breaking_one_rule_is_refused_saying_which(manifest, why):
    with pytest.raises(ValueError) as raised:
        bm.parse_manifest(manifest)
    assert str(raised.value) == why


KEYS = "['columns', 'file', 'name', 'row_count', 'schema', 'sha256', 'size_bytes']"
NAME_RULE = "is not lower-case letters, digits and underscores, nor reserved"


def second(**edits) -> dict:
    """The manifest's second table, `analytics.u`: an error names the table by its place."""
    return table_entry(**{"name": "u", "file": "table-002.parquet", **edits})


@pytest.mark.parametrize("entry, why", [
    ("a table", f"table 2 of the manifest does not have exactly the fields {KEYS}"),
    ({**second(), "extra": 1}, f"table 2 of the manifest does not have exactly the fields {KEYS}"),
    (second(schema="A"), f"table 2 of the manifest: schema name 'A' {NAME_RULE}"),
    (second(name="temp"), f"table 2 of the manifest: name name 'temp' {NAME_RULE}"),
    (second(columns=[]), "analytics.u: no column list"),
    (second(columns="x"), "analytics.u: no column list"),
    (second(columns=[{"name": "x"}]), "analytics.u: a column is not {name, type}"),
    (second(columns=[{"name": "x", "type": "INTEGER", "z": 1}]),
     "analytics.u: a column is not {name, type}"),
    (second(columns=["x"]), "analytics.u: a column is not {name, type}"),
    (second(columns=[{"name": "", "type": "INTEGER"}]),
     "analytics.u: column name '' is not 1 to 1024 characters without NUL"),
    (second(columns=[{"name": "x", "type": "JSON"}]),
     "analytics.u: type 'JSON' is not one a backup may hold"),
    (second(columns=[{"name": "x", "type": 5}]), "analytics.u: type 5 is not text"),
    (second(columns=[{"name": "x", "type": "INTEGER"}, {"name": "X", "type": "VARCHAR"}]),
     "analytics.u: two columns share a name"),
    (second(row_count=-1), "analytics.u: row_count is not a count"),
    (second(size_bytes=-1), "analytics.u: size_bytes is not a count"),
    (second(row_count="1"), "analytics.u: row_count is not a count"),
    (second(row_count=True), "analytics.u: row_count is not a count"),
    (second(row_count=1.0), "analytics.u: row_count is not a count"),
    (second(file="../table-002.parquet"),
     "analytics.u: file name '../table-002.parquet' is not table-NNN.parquet"),
    (second(file="table-2.parquet"),
     "analytics.u: file name 'table-2.parquet' is not table-NNN.parquet"),
    (second(file=2), "analytics.u: file name 2 is not table-NNN.parquet"),
    (second(sha256="A" * 64), "analytics.u: sha256 is not 64 lower-case hex digits"),
    (second(sha256="a" * 63), "analytics.u: sha256 is not 64 lower-case hex digits"),
    (second(sha256=5), "analytics.u: sha256 is not 64 lower-case hex digits"),
])
def test_a_table_entry_breaking_one_rule_is_refused_naming_the_table(entry, why):
    with pytest.raises(ValueError) as raised:
        bm.parse_manifest(document(table_entry(), entry))
    assert str(raised.value) == why


def written(folder: Path, content: bytes = b"rows") -> Path:
    """A folder as the platform writes one: a table file and its manifest (checked but not
    parsed as Parquet: verification is by size and SHA-256)."""
    folder.mkdir()
    (folder / "table-001.parquet").write_bytes(content)
    size, sha256 = bm.file_digest(folder / "table-001.parquet")
    table = bm.Table("analytics", "t", (("x", "INTEGER"),), 1, "table-001.parquet", size, sha256)
    bm.write_manifest(folder, "2026-06-01T00:00:00+00:00", [table])
    return folder


def test_a_manifest_is_never_written_over_an_existing_one_nor_through_a_link(tmp_path):
    folder = written(tmp_path / "b")
    before = (folder / bm.MANIFEST).read_bytes()
    with pytest.raises(FileExistsError):
        bm.write_manifest(folder, "2026-06-02T00:00:00+00:00", [])
    assert (folder / bm.MANIFEST).read_bytes() == before
    (folder / bm.MANIFEST).unlink()
    (folder / bm.MANIFEST).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(FileExistsError):
        bm.write_manifest(folder, "2026-06-02T00:00:00+00:00", [])
    assert not (tmp_path / "elsewhere.json").exists()


def refused_because(folder: Path) -> str:
    with pytest.raises(bm.BackupRefused) as raised:
        bm.verify_backup(folder)
    assert str(raised.value) == f"{folder}: refused: {raised.value.why}"
    return raised.value.why


@contextmanager
def as_a_non_root_user():
    """File permissions enforced on this thread as for a non-root deployment: root's bypass
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) left out of its effective capabilities, and given
    back after. Capabilities are per thread in Linux; without root there is nothing to drop."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    assert libc.capget(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    before = data[0].effective
    data[0].effective = before & ~0b110  # bits 1 and 2: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        data[0].effective = before
        assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())


def test_a_backup_folder_that_cannot_be_listed_is_refused_naming_it(tmp_path):
    folder = written(tmp_path / "b")
    folder.chmod(0o100)  # its files can be opened by name, the folder not listed
    try:
        with as_a_non_root_user():
            why = refused_because(folder)
    finally:
        folder.chmod(0o700)
    assert why == "cannot be read (Permission denied)"
    assert bm.verify_backup(folder).tables  # the same folder, readable again, verifies


def test_a_folder_holding_its_manifest_and_the_files_it_lists_verifies(tmp_path):
    folder = written(tmp_path / "b")
    assert bm.verify_backup(folder).tables == [bm.Table("analytics", "t", (("x", "INTEGER"),), 1,
                                                 "table-001.parquet", 4,
                                                 hashlib.sha256(b"rows").hexdigest())]
    assert oct((folder / bm.MANIFEST).stat().st_mode & 0o777) == "0o600"


def test_a_missing_folder_a_file_or_a_link_to_a_backup_is_not_a_backup(tmp_path):
    folder = written(tmp_path / "b")
    assert refused_because(tmp_path / "none") == "does not exist"
    (tmp_path / "link").symlink_to(folder)
    assert refused_because(tmp_path / "link") == "not a folder (a symbolic link is not followed)"
    (tmp_path / "file").write_text("x")
    assert refused_because(tmp_path / "file") == "not a folder (a symbolic link is not followed)"


def test_a_manifest_missing_linked_or_not_a_file_is_refused(tmp_path):
    assert refused_because(written(tmp_path / "b").parent / "none") == "does not exist"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert refused_because(empty) == ("no manifest.json: not a backup the platform wrote"
                                      " (or not a complete one)")
    linked = written(tmp_path / "linked")
    (linked / bm.MANIFEST).rename(tmp_path / "elsewhere.json")
    (linked / bm.MANIFEST).symlink_to(tmp_path / "elsewhere.json")
    assert refused_because(linked) == ("manifest.json cannot be opened as a regular file"
                                       " (Too many levels of symbolic links)")
    (empty / bm.MANIFEST).mkdir()
    assert refused_because(empty) == "manifest.json is not a regular file"


def padded(folder: Path, size: int, created_at: str = "2026-06-01") -> None:
    """A valid manifest of exactly `size` bytes (JSON allows trailing blanks)."""
    empty = table_entry(sha256=hashlib.sha256(b"").hexdigest())
    text = json.dumps(document(empty, created_at=created_at), ensure_ascii=False).encode()
    (folder / bm.MANIFEST).write_bytes(text + b" " * (size - len(text)))


def test_a_manifest_of_exactly_1_mib_is_read_and_one_byte_more_is_refused(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "table-001.parquet").write_bytes(b"")
    padded(folder, bm.MAX_MANIFEST_BYTES)
    assert [t.label for t in bm.verify_backup(folder).tables] == ["analytics.t"]
    padded(folder, bm.MAX_MANIFEST_BYTES + 1)
    assert refused_because(folder) == "manifest.json is larger than 1048576 bytes"
    padded(folder, bm.MAX_MANIFEST_BYTES + 1, created_at="é")  # bytes are counted, not characters
    assert refused_because(folder) == "manifest.json is larger than 1048576 bytes"


def test_a_manifest_that_is_not_json_is_refused_saying_why(tmp_path):
    folder = written(tmp_path / "b")
    (folder / bm.MANIFEST).write_text("{")
    assert refused_because(folder) == "manifest.json is not valid JSON (JSONDecodeError)"
    (folder / bm.MANIFEST).write_text("[" * 100_000)
    assert refused_because(folder) == "manifest.json is not valid JSON (RecursionError)"


def test_a_stray_entry_a_missing_linked_or_changed_file_is_refused_naming_it(tmp_path):
    folder = written(tmp_path / "b")
    (folder / "stray").write_text("x")
    assert refused_because(folder) == "unexpected entries ['stray'] beside the manifest"
    (folder / "stray").unlink()
    (folder / "table-001.parquet").write_bytes(b"ROWS")  # same size, other content
    assert refused_because(folder) == (
        "table-001.parquet (analytics.t) does not match its SHA-256 in the manifest: changed or"
        " damaged since the backup was taken")
    (folder / "table-001.parquet").write_bytes(b"rows!")  # other size
    assert "does not match its SHA-256" in refused_because(folder)
    (folder / "table-001.parquet").unlink()
    assert refused_because(folder) == "table-001.parquet (analytics.t) is missing"
    (tmp_path / "rows").write_bytes(b"rows")
    (folder / "table-001.parquet").symlink_to(tmp_path / "rows")
    assert refused_because(folder) == ("table-001.parquet cannot be opened as a regular file"
                                       " (Too many levels of symbolic links)")
    (folder / "table-001.parquet").unlink()
    (folder / "table-001.parquet").mkdir()
    assert refused_because(folder) == "table-001.parquet is not a regular file"


# --- backups: what is listed, pruned and restored, and why the rest is refused -----------------

NAME_RULE_OF_BACKUPS = "the name is not warehouse-<YYYYmmddTHHMMSSffffff>Z"


def test_a_survey_lists_verified_backups_oldest_first_and_says_why_the_rest_is_left(tmp_path):
    backups_aged(tmp_path, timedelta(hours=1), timedelta(hours=2))
    (tmp_path / "other").mkdir()
    (tmp_path / backups.backup_name(NOW)).mkdir()
    found = backups.survey(tmp_path)
    assert [NOW - backups.taken_at(b) for b in found.backups] == [timedelta(hours=2),
                                                                   timedelta(hours=1)]
    assert found.ignored == {
        backups.backup_name(NOW): ("no manifest.json: not a backup the platform wrote"
                                   " (or not a complete one)"),
        "other": NAME_RULE_OF_BACKUPS,
    }
    with pytest.raises(ValueError, match=r"^the name is not warehouse-<YYYYmmddTHHMMSSffffff>Z$"):
        backups.taken_at(tmp_path / "warehouse-2026")


def test_pruning_reports_what_it_removed_kept_and_left_alone(tmp_path):
    backups_aged(tmp_path, timedelta(hours=1), timedelta(hours=2), timedelta(hours=3))
    (tmp_path / "other").mkdir()
    oldest, middle, newest = backups.list_backups(tmp_path)
    pruned = backups.prune_backups(tmp_path, keep=2, max_age=timedelta(days=9), now=NOW)
    assert (pruned.removed, pruned.kept) == ([oldest], [middle, newest])
    assert pruned.ignored == {"other": NAME_RULE_OF_BACKUPS}



def test_a_backup_that_cannot_be_removed_is_kept_and_reported_with_the_systems_reason(tmp_path):
    """A read-only backup (mode 0500: its files cannot be removed by its owner, unless root):
    pruning removes the others, keeps it whole and says why; once it can be, the next pruning
    removes it."""
    backups_aged(tmp_path, timedelta(hours=1), timedelta(hours=2), timedelta(hours=3))
    oldest, middle, newest = backups.list_backups(tmp_path)
    oldest.chmod(0o500)
    try:
        with as_a_non_root_user():
            pruned = backups.prune_backups(tmp_path, keep=1, max_age=timedelta(days=9), now=NOW)
    finally:
        oldest.chmod(0o700)
    assert (pruned.removed, pruned.kept) == ([middle], [oldest, newest])
    assert pruned.ignored == {oldest.name: "could not be removed (Permission denied)"}
    assert backups.list_backups(tmp_path) == [oldest, newest]  # still whole: it verifies
    pruned = backups.prune_backups(tmp_path, keep=1, max_age=timedelta(days=9), now=NOW)
    assert (pruned.removed, pruned.kept, pruned.ignored) == ([oldest], [newest], {})

def test_the_backup_just_taken_stays_even_when_its_stamp_is_the_oldest(tmp_path):
    backups_aged(tmp_path, timedelta(hours=1), timedelta(hours=2), timedelta(hours=3))
    oldest, middle, newest = backups.list_backups(tmp_path)
    pruned = backups.prune_backups(tmp_path, keep=2, max_age=timedelta(days=9), now=NOW,
                                   taken=oldest)
    assert (pruned.removed, pruned.kept) == ([middle], [oldest, newest])


def test_with_keep_1_only_the_backup_just_taken_stays(tmp_path):
    backups_aged(tmp_path, timedelta(hours=1), timedelta(hours=2), timedelta(hours=3))
    oldest, middle, newest = backups.list_backups(tmp_path)
    pruned = backups.prune_backups(tmp_path, keep=1, max_age=timedelta(days=9), now=NOW,
                                   taken=oldest)
    assert (pruned.removed, pruned.kept) == ([newest, middle], [oldest])


def test_a_taken_backup_that_is_not_listed_changes_nothing(tmp_path):
    backups_aged(tmp_path, timedelta(hours=1), timedelta(hours=2))
    older, newer = backups.list_backups(tmp_path)
    pruned = backups.prune_backups(tmp_path, keep=1, max_age=timedelta(days=9), now=NOW,
                                   taken=tmp_path / "elsewhere")
    assert (pruned.removed, pruned.kept) == ([older], [newer])


def test_the_list_command_says_on_stderr_why_a_folder_is_not_a_backup(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(tmp_path))
    (tmp_path / "other").mkdir()
    assert backups.main(["list"]) == 0
    assert capsys.readouterr() == ("", f"not a verified backup, ignored: other:"
                                       f" {NAME_RULE_OF_BACKUPS}\n")


def test_restore_refuses_a_link_a_wal_or_a_missing_folder_as_target(tmp_path):
    def why(target: Path) -> str:
        with pytest.raises(backups.BackupRefused) as raised:
            backups.restore_backup(tmp_path / "any", target)
        assert str(raised.value) == f"{target}: refused: {raised.value.why}"
        return raised.value.why
    (tmp_path / "link.duckdb").symlink_to(tmp_path / "nowhere")
    assert why(tmp_path / "link.duckdb") == ("the target a symbolic link: restore into a new"
                                             " file, then point CHURN_DUCKDB_PATH at it")
    (tmp_path / "w.duckdb.wal").write_bytes(b"")
    assert why(tmp_path / "w.duckdb") == f"{tmp_path / 'w.duckdb'}.wal exists and would be" \
                                         " replayed into it"
    assert why(tmp_path / "no" / "w.duckdb") == f"the folder {tmp_path / 'no'} does not exist"


def taken_backup(root: Path, sql: str) -> Path:
    with duckdb.connect() as conn:
        conn.execute(sql)
        return backups.take_backup(conn, root, NOW)


def with_manifest(backup: Path, **edits) -> None:
    """The backup's manifest written again with its table changed: as if forged consistently."""
    [table] = bm.verify_backup(backup).tables
    (backup / bm.MANIFEST).unlink()
    bm.write_manifest(backup, NOW.isoformat(), [dataclasses.replace(table, **edits)])


def test_restore_loads_every_column_of_a_table_in_its_place(tmp_path):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS a, 'x' AS b, 2.5 AS c")
    backups.restore_backup(taken, tmp_path / "r.duckdb")
    with duckdb.connect(str(tmp_path / "r.duckdb")) as conn:
        assert conn.execute("SELECT * FROM t").fetchall() == [(1, "x", 2.5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "r.duckdb"]  # nothing else left


def refused_restore(backup: Path, target: Path) -> str:
    with pytest.raises(backups.BackupRefused) as raised:
        backups.restore_backup(backup, target)
    assert str(raised.value) == f"{backup}: refused: {raised.value.why}"
    assert not os.path.lexists(target) and sorted(os.listdir(target.parent)) == ["b"]
    return raised.value.why



_LINK = os.link


def linking(monkeypatch, target: Path, *, appears: bool = False, code: int | None = None):
    """os.link as on a file system without hard links (failing with `code`), or losing a race (the
    target `appears` just before the link), for the link to `target` only. Injected: no file
    system here lacks hard links, none can be mounted in a container without loop devices, and the
    race needs another process at exactly that moment."""
    def patched(source, destination, **kwargs):
        if Path(destination) == target:
            if appears:
                target.write_bytes(b"another process's file")
            if code is not None:
                raise OSError(code, os.strerror(code))
        return _LINK(source, destination, **kwargs)

    monkeypatch.setattr(os, "link", patched)


EXISTS = "the target exists: restore into a new file, then point CHURN_DUCKDB_PATH at it"


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOTSUP, errno.EXDEV], ids=errno.errorcode.get)
def test_without_hard_links_restore_renames_into_a_new_file_and_refuses_one_that_appeared(
    tmp_path, monkeypatch, code
):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS x")
    target = tmp_path / "r.duckdb"
    linking(monkeypatch, target, code=code)
    backups.restore_backup(taken, target)
    with duckdb.connect(str(target)) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert sorted(os.listdir(tmp_path)) == ["b", "r.duckdb"]  # renamed: no temporary file left
    other = tmp_path / "other.duckdb"
    linking(monkeypatch, other, appears=True, code=code)
    with pytest.raises(backups.BackupRefused) as raised:
        backups.restore_backup(taken, other)
    assert str(raised.value) == f"{other}: refused: {EXISTS}"
    assert other.read_bytes() == b"another process's file"  # not replaced
    assert sorted(os.listdir(tmp_path)) == ["b", "other.duckdb", "r.duckdb"]


def test_a_target_that_appears_at_the_link_is_refused_and_other_link_errors_are_not_swallowed(
    tmp_path, monkeypatch
):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS x")
    target = tmp_path / "r.duckdb"
    linking(monkeypatch, target, appears=True)
    with pytest.raises(backups.BackupRefused) as raised:
        backups.restore_backup(taken, target)
    assert str(raised.value) == f"{target}: refused: {EXISTS}"
    assert target.read_bytes() == b"another process's file"
    assert sorted(os.listdir(tmp_path)) == ["b", "r.duckdb"]
    target.unlink()
    linking(monkeypatch, target, code=errno.EIO)  # a failing disk, not a missing feature
    with pytest.raises(OSError) as raised:
        backups.restore_backup(taken, target)
    assert raised.value.errno == errno.EIO
    assert sorted(os.listdir(tmp_path)) == ["b"]

def test_a_row_count_other_than_the_manifests_is_refused_and_leaves_nothing(tmp_path):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS x")
    with_manifest(taken, row_count=2)
    assert refused_restore(taken, tmp_path / "r.duckdb") == "main.t has 1 rows, the manifest says 2"


def test_a_file_that_does_not_load_as_its_declared_types_is_refused_naming_it(tmp_path):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 'abc' AS x")
    with_manifest(taken, columns=(("x", "INTEGER"),))
    why = refused_restore(taken, tmp_path / "r.duckdb")
    assert why.startswith("table-001.parquet (main.t) does not load: Conversion Error: ")
    assert "'abc'" in why


def test_a_backup_path_with_a_pattern_character_is_refused_before_anything_is_read(tmp_path):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS x")
    pattern = taken.rename(tmp_path / "b" / "x[1]")
    assert refused_restore(pattern, tmp_path / "r.duckdb") == (
        "its path holds a pattern character (* ? [ ] { }), which DuckDB would expand: move or"
        " rename the folder")


def test_restore_opens_the_new_file_with_the_platforms_duckdb_settings(tmp_path, monkeypatch):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS x")
    monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(PlatformError, match="'memory_limit': 'lots'"):
        backups.restore_backup(taken, tmp_path / "r.duckdb")
    assert not os.path.lexists(tmp_path / "r.duckdb")
    monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", "200MB")
    backups.restore_backup(taken, tmp_path / "r.duckdb")


def test_a_backups_parquet_keeps_each_columns_type_and_128_bit_integers_as_exact_text(tmp_path):
    huge = 2 ** 100 + 1  # a DOUBLE could not hold it
    taken = taken_backup(tmp_path / "b", f"CREATE TABLE t AS SELECT 1 AS n, {huge}::HUGEINT AS h")
    with duckdb.connect() as conn:
        parquet = str(taken / "table-001.parquet")
        assert [(c, t) for c, t, *_ in conn.execute(f"DESCRIBE FROM '{parquet}'").fetchall()] == [
            ("n", "INTEGER"), ("h", "VARCHAR")]
    backups.restore_backup(taken, tmp_path / "r.duckdb")
    with duckdb.connect(str(tmp_path / "r.duckdb")) as conn:
        assert conn.execute("SELECT n, h FROM t").fetchall() == [(1, huge)]


def test_tables_are_numbered_from_001_and_every_file_is_owner_only(tmp_path):
    taken = taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS x; CREATE TABLE u AS"
                                         " SELECT 2 AS y")
    assert sorted(os.listdir(taken)) == [bm.MANIFEST, "table-001.parquet", "table-002.parquet"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in [taken, *taken.iterdir()]} == {
        taken.name: "0o700", bm.MANIFEST: "0o600", "table-001.parquet": "0o600",
        "table-002.parquet": "0o600"}
    with pytest.raises(PlatformError) as raised:
        taken_backup(tmp_path / "b", "CREATE TABLE t AS SELECT 1 AS x")
    assert str(raised.value) == f"{taken} exists already: not overwritten"


@pytest.mark.parametrize("sql, why", [
    ("CREATE TABLE t (x INTEGER[])", "PlatformError: cannot back up main.t: type 'INTEGER[]' is"
                                     " not one a backup may hold"),
    # DuckDB tells the two names apart; restore would not (it compares them casefolded).
    ('CREATE TABLE t ("ss" INTEGER, "ß" INTEGER)',
     "PlatformError: cannot back up into {partial}: main.t: two columns share a name"),
    ("CREATE TABLE t (x INTEGER); BEGIN",
     "PlatformError: backup into {partial}: TransactionContext Error: cannot start a transaction"
     " within a transaction"),
])
def test_a_backup_restore_would_refuse_is_not_written_and_leaves_no_partial(tmp_path, sql, why):
    partial = tmp_path / f".partial-{backups.backup_name(NOW)}"
    with duckdb.connect() as conn:
        conn.execute(sql)
        with pytest.raises(Exception) as raised:
            backups.take_backup(conn, tmp_path, NOW)
        assert f"{type(raised.value).__name__}: {raised.value}" == why.format(partial=partial)
        assert os.listdir(tmp_path) == []
        if not sql.endswith("BEGIN"):  # the backup's own transaction was rolled back
            conn.execute("CREATE TABLE after_it (x INTEGER)")



def leaving_a_folder_it_cannot_empty(conn, partial: Path, fail: bool = False) -> None:
    """Table `main.a` (the first a backup reads), whose generated column calls a Python function
    while the export reads it: the function leaves `held/` in the partial backup, a folder of mode
    0500 holding a file, which its owner cannot empty, and so not remove, unless root. With `fail`,
    the function then raises, which DuckDB reports as its own error. (The way to act at that moment
    without changing the code under test.)"""
    def hold(x):
        held = partial / "held"
        if partial.is_dir() and not held.exists():
            held.mkdir()
            (held / "file").write_bytes(b"")
            held.chmod(0o500)
            if fail:
                raise OSError("the disk went away")
        return x

    conn.create_function("hold", hold, ["INTEGER"], "INTEGER", side_effects=True)
    conn.execute("CREATE TABLE a (x INTEGER, y INTEGER AS (hold(x))); INSERT INTO a (x) VALUES (1)")


@pytest.mark.parametrize("sql, fail, why", [
    # write_manifest's ValueError
    ('CREATE TABLE t ("ss" INTEGER, "ß" INTEGER)', False,
     "PlatformError: cannot back up into {partial}: main.t: two columns share a name"),
    # a DuckDB error
    ("CREATE TABLE t (x INTEGER)", True,
     "PlatformError: backup into {partial}: Invalid Input Error: Python exception occurred while"
     " executing the UDF: OSError: the disk went away"),
    # any other exception, passed on as it is
    ("CREATE TABLE t (x INTEGER[])", False,
     "PlatformError: cannot back up main.t: type 'INTEGER[]' is not one a backup may hold"),
], ids=["manifest", "duckdb", "other"])
def test_a_failed_backup_reports_its_own_error_even_when_its_partial_cannot_be_removed(
    tmp_path, sql, fail, why
):
    """As a non-root user (root removes anything) the partial folder stays, and the caller still
    gets the failure's own reason, not the removal's; as root the same failure leaves nothing."""
    partial = tmp_path / f".partial-{backups.backup_name(NOW)}"
    with duckdb.connect() as conn:
        conn.execute(sql)
        leaving_a_folder_it_cannot_empty(conn, partial, fail)
        try:
            with as_a_non_root_user(), pytest.raises(Exception) as raised:
                backups.take_backup(conn, tmp_path, NOW)
            assert f"{type(raised.value).__name__}: {raised.value}" == why.format(partial=partial)
            assert "held" in os.listdir(partial)  # it could not be removed
        finally:
            if (partial / "held").exists():
                (partial / "held").chmod(0o700)
        with pytest.raises(Exception) as raised:
            backups.take_backup(conn, tmp_path, NOW)
        assert f"{type(raised.value).__name__}: {raised.value}" == why.format(partial=partial)
        assert os.listdir(tmp_path) == []

def test_only_an_out_of_memory_error_names_the_memory_setting_and_its_value(monkeypatch):
    monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", "300MB")
    error = duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate")
    assert wh.clean_duckdb_error(error) == (
        "Out of Memory Error: failed to allocate (DuckDB's memory limit is"
        " CHURN_DUCKDB_MEMORY_LIMIT, now 300MB: raise it)")
    other = duckdb.InvalidInputException("Invalid Input Error: failed to allocate")
    assert wh.clean_duckdb_error(other) == "Invalid Input Error: failed to allocate"


# --- hostile mapping files: aliases, nesting and size are bounded, each on both sides ----------

from churn_platform.core.files import absolute  # noqa: E402
from churn_platform.core.mapping import MAPPING_MAX_BYTES, MappingError  # noqa: E402
from churn_platform.core.source import file_sha256  # noqa: E402

MINIMAL = "fields:\n  customer_id: id\n  churn: c"


def mapping_problem(path: Path) -> str:
    """The one problem that made the mapping unusable."""
    with pytest.raises(MappingError) as raised:
        read_mapping(path)
    head = f"source mapping {path}: 1 problem(s), nothing was loaded:\n- "
    assert str(raised.value).startswith(head), raised.value
    return str(raised.value).removeprefix(head)


def nested(levels: int) -> str:
    """`x:` at depth 2 holding lists to `levels` in all, a scalar before each inner list (so a
    depth that is not restored after each node shows)."""
    return f"{MINIMAL}\nx: " + "[a, " * (levels - 2) + "a" + "]" * (levels - 2) + "\n"


def test_a_mapping_nested_20_levels_is_read_and_21_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(nested(20))
    assert read_mapping(path)[1] == ["x: unknown section (expected csv and fields)"]
    path.write_text(nested(21))
    assert mapping_problem(path) == "nested deeper than 20 levels (line 4)"


def test_a_yaml_alias_is_refused_naming_it_and_its_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(f"{MINIMAL}\nx: &big [a]\n\ny: *big\n")
    assert mapping_problem(path) == ("YAML aliases (*big) are not accepted in a source mapping"
                                     " (line 6): write the value out")


def test_a_mapping_of_exactly_1_mib_is_read_to_its_last_byte_and_one_byte_more_is_refused(
        tmp_path):
    path = tmp_path / "m.yaml"
    filler = MAPPING_MAX_BYTES - len(MINIMAL) - 3
    path.write_text("# " + "x" * filler + "\n" + MINIMAL)  # ends in `c`, no newline
    assert path.stat().st_size == MAPPING_MAX_BYTES
    mapping, problems = read_mapping(path)
    assert problems == [] and mapping.field("churn").source_column == "c"
    path.write_text("# " + "x" * (filler + 1) + "\n" + MINIMAL)
    assert mapping_problem(path) == "is larger than 1 MiB; a source mapping is a few KiB"


def test_a_symlink_loop_is_named_as_written(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert absolute(tmp_path / "loop") == tmp_path / "loop"
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert absolute(tmp_path / "link") == tmp_path / "real"


def test_a_source_whose_digest_cannot_be_read_is_named_with_the_system_error(tmp_path):
    with pytest.raises(SourceFileError) as raised:
        file_sha256(tmp_path / "none.csv")
    assert str(raised.value) == (
        f"{tmp_path / 'none.csv'}: cannot be read (No such file or directory)")
    (tmp_path / "in.csv").write_bytes(b"abc")
    assert file_sha256(tmp_path / "in.csv") == hashlib.sha256(b"abc").hexdigest()


# --- connect: the wait for a lock, read-only opening, modes of new and existing files ----------

def held(path: Path):
    """Another process holding `path`'s lock until its stdin closes."""
    import subprocess
    import sys
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r});"
         " print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_an_explicit_wait_overrides_the_lock_timeout_setting(tmp_path, monkeypatch):
    import time
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    monkeypatch.setenv("CHURN_DUCKDB_LOCK_TIMEOUT", "60")
    holder = held(path)
    try:
        started = time.monotonic()
        with pytest.raises(wh.WarehouseLockedError):
            wh.connect(str(path), timeout_s=0)
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


def test_connect_gets_a_lock_released_before_its_timeout(tmp_path):
    import threading
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = held(path)
    releaser = threading.Timer(0.5, holder.stdin.close)  # the holder exits at end of input
    releaser.start()
    try:
        wh.connect(str(path), timeout_s=30).close()
    finally:
        releaser.cancel()
        holder.kill()
        holder.wait()



def test_a_locked_file_is_tried_again_after_50_ms_then_twice_as_long_each_time_up_to_1_s():
    pauses, pause = [], None
    for _ in range(8):
        pause = wh.next_pause(pause, now=0.0, deadline=60.0)
        pauses.append(pause)
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert (wh.next_pause(0.4, 0.0, 60.0), wh.next_pause(0.5, 0.0, 60.0),
            wh.next_pause(0.6, 0.0, 60.0)) == (0.8, 1.0, 1.0)  # below, at and beyond the cap


def test_no_attempt_starts_at_or_after_the_deadline_and_the_last_pause_is_not_cut_short():
    assert wh.next_pause(None, now=9.999, deadline=10.0) == 0.05
    assert wh.next_pause(0.8, now=9.999, deadline=10.0) == 1.0  # may end up to 1 s past it
    assert wh.next_pause(None, now=10.0, deadline=10.0) is None
    assert wh.next_pause(1.0, now=10.001, deadline=10.0) is None


def test_connect_pauses_longer_each_time_a_held_lock_is_still_held(tmp_path, monkeypatch):
    """The pauses connect asks for, recorded instead of slept (nothing here is timed); the holder
    lets go at the sixth, so the seventh attempt gets the file."""
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = held(path)
    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        if len(pauses) == 6:
            holder.kill()
            holder.wait()

    monkeypatch.setattr(wh.time, "sleep", sleep)
    try:
        wh.connect(str(path), timeout_s=60).close()
    finally:
        holder.kill()
        holder.wait()
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]

def test_connect_read_only_refuses_writes_and_read_write_allows_them(tmp_path):
    path = tmp_path / "w.duckdb"
    wh.connect(str(path)).close()
    with wh.connect(str(path), read_only=True) as conn:
        with pytest.raises(duckdb.InvalidInputException, match="read-only"):
            conn.execute("CREATE TABLE t (x INTEGER)")
    with wh.connect(str(path), read_only=False) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")


def test_a_warehouse_created_by_connect_is_owner_only_and_an_existing_ones_mode_is_left(
        tmp_path):
    created = tmp_path / "new.duckdb"
    wh.connect(str(created)).close()
    assert oct(created.stat().st_mode & 0o777) == "0o600"
    existing = tmp_path / "old.duckdb"
    duckdb.connect(str(existing)).close()
    existing.chmod(0o640)
    wh.connect(str(existing)).close()
    assert oct(existing.stat().st_mode & 0o777) == "0o640"


def test_a_fifo_mapping_is_refused_at_once_and_a_link_loop_with_the_system_error(tmp_path):
    """Opening a FIFO without O_NONBLOCK would wait for a writer for ever (and the run with it)."""
    import threading
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    problems = []
    reader = threading.Thread(target=lambda: problems.append(mapping_problem(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    blocked = reader.is_alive()
    if blocked:  # waiting in open() for a writer: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
    assert not blocked
    assert problems == ["is not a regular file (a directory, FIFO or device cannot be read)"]
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    assert mapping_problem(loop) == "cannot be read (Too many levels of symbolic links)"



def test_a_mapping_that_fails_to_read_once_opened_is_named_with_the_system_error():
    """/proc/<pid>/mem is a regular file whose first page is never mapped: reading it fails with
    EIO, a real I/O error after the open, as a failing disk gives."""
    memory = Path(f"/proc/{os.getpid()}/mem")
    assert mapping_problem(memory) == "cannot be read (Input/output error)"

def test_staging_names_absent_fields_and_unmapped_columns_or_says_none(tmp_path):
    path = write_csv(tmp_path / "in.csv", f"{HEADER},Extra,More\n{','.join(ROW)},x,y\n")
    defaults = staging_table(path).metadata
    assert (defaults["absent_fields"], defaults["columns_kept_in_staging_only"]) == (
        "none", "Extra, More")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("fields:\n  customer_id: CustomerID\n  churn: Churn\n")
    narrow = staging_table(path, mapping).metadata
    absent = [f.name for f in FIELDS if f.name not in ("customer_id", "churn")]
    assert narrow["absent_fields"] == ", ".join(absent) and len(absent) > 1
    assert narrow["columns_kept_in_staging_only"] == ("Age, Gender, Tenure, MonthlyCharges,"
                                                      " ContractType, InternetService,"
                                                      " TotalCharges, TechSupport, Extra, More")
    exact = write_csv(tmp_path / "exact.csv", f"{HEADER}\n{','.join(ROW)}\n")
    assert staging_table(exact).metadata["columns_kept_in_staging_only"] == "none"


def test_a_missing_or_shapeless_mapping_is_refused_saying_what_to_do(tmp_path):
    assert mapping_problem(tmp_path / "none.yaml") == (
        "file not found (set CHURN_SOURCE_MAPPING to a mapping file)")
    (tmp_path / "list.yaml").write_text("- a\n")
    assert mapping_problem(tmp_path / "list.yaml") == (
        "expected a YAML mapping with a `fields:` section")


# --- hostile headers: each limit at the bound and one past it ----------------------------------

HEADER_MAX = 1 << 20


def header_problem(path: Path, dialect: Dialect = Dialect()) -> str:
    with pytest.raises(SourceFileError) as raised:
        read_header(path, dialect)
    assert str(raised.value) == f"{path}: {raised.value.problem}"
    return raised.value.problem


def test_a_header_line_of_1_mib_is_read_whole_and_one_byte_more_is_refused_by_number(tmp_path):
    path = tmp_path / "in.csv"
    fields = ["x" * 1023] * 1023 + ["y" * 1024]  # 1 MiB to its last byte, no line break
    assert len(",".join(fields)) == HEADER_MAX
    path.write_bytes(("skip\n" + ",".join(fields)).encode())
    assert read_header(path, Dialect(header_row=2)) == fields
    path.write_bytes(("skip\n" + ",".join(fields) + "y\n").encode())
    assert header_problem(path, Dialect(header_row=2)) == (
        "line 2 is longer than 1 MiB without a line break: not a CSV header this can read")


def test_a_header_field_over_the_csv_limit_is_refused_naming_the_limit(tmp_path):
    import csv
    path = tmp_path / "in.csv"
    limit = csv.field_size_limit()
    path.write_text(f"a,{'b' * limit}\n")
    assert read_header(path) == ["a", "b" * limit]
    path.write_text(f"a,{'b' * (limit + 1)}\n")
    assert header_problem(path) == (
        f"line 1, the header, has a field longer than {limit:,} characters")


def test_a_utf8_bom_under_latin_1_is_refused_and_under_utf_8_skipped(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n")
    assert header_problem(path, Dialect(encoding="latin-1")) == (
        "starts with a UTF-8 byte-order mark: the file is UTF-8, but the source mapping says"
        " csv.encoding: latin-1 (set utf-8)")


# --- error texts the 2026-11-30 run left unanswered -------------------------------------------


def test_a_warehouse_setting_duckdb_refuses_is_named_with_duckdbs_reason(tmp_path):
    database = tmp_path / "w.duckdb"
    with pytest.raises(InputError) as raised:
        wh.connect(str(database), {"memory_limit": "lots"})
    assert str(raised.value) == (
        f"cannot open DuckDB file {database} with the settings {{'memory_limit': 'lots'}}"
        " (CHURN_DUCKDB_*): Parser Error: Memory must have a number (e.g. 1GB)")


def test_a_header_the_csv_module_cannot_parse_is_refused_with_its_reason(tmp_path):
    """A carriage return inside the header line (a line ends at \\n only) is not a CSV record."""
    path = write_csv(tmp_path / "cr.csv", "CustomerID,Age\rGender\nC-1,40,Male\n")
    with pytest.raises(SourceFileError) as raised:
        read_header(path)
    assert raised.value.problem == ("line 1, the header, cannot be parsed (new-line character"
                                    " seen in unquoted field - do you need to open the file in"
                                    " universal-newline mode?)")
    assert read_header(write_csv(tmp_path / "ok.csv", "CustomerID,Age\r\nC-1,40\n")) == [
        "CustomerID", "Age"]


# --- column descriptions and the clock --------------------------------------------------------


def test_band_descriptions_name_each_bands_upper_bound_and_the_open_last_band():
    from churn_platform.core.columns import describe
    assert describe("analytics.customer_churn", "tenure_category") == (
        "Tenure band: New (≤ 12), Medium (≤ 36), Long (above) months")
    assert describe("analytics.customer_churn", "monthly_charges_category") == (
        "Monthly charges band: Low (≤ 50), Medium (≤ 100), High (above)")


def test_a_staging_column_nobody_described_is_a_source_column_elsewhere_undescribed():
    from churn_platform.core.columns import STAGING_SOURCE_COLUMN, describe
    assert describe("staging.customer_churn", "Region") == STAGING_SOURCE_COLUMN
    assert describe("staging.customer_churn", "source_row") not in (None, STAGING_SOURCE_COLUMN)
    assert describe("analytics.customer_churn", "Region") is None
    assert describe("analytics.no_such_table", "Region") is None


def test_the_clock_is_utc_whatever_the_local_zone(monkeypatch):
    import time

    from churn_platform.core.clock import utc_now
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        now = utc_now()
        utc = datetime.now(timezone.utc).replace(tzinfo=None)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert now.tzinfo is None and abs(utc - now) < timedelta(minutes=1)  # New York: 4-5 h off


def test_a_key_needs_32_characters_and_10_distinct_ones_and_its_refusal_never_shows_it():
    from churn_platform.core.pseudonymize import WeakKeyError, checked_key
    ten = "0123456789"
    good = (ten * 4)[:32]
    assert checked_key(good, "K") == good.encode()
    assert checked_key("0123456788" + "9" * 22, "K") == ("0123456788" + "9" * 22).encode()
    for weak in (good[:31], "012345678" * 4):  # 31 characters; 36 but only 9 distinct
        with pytest.raises(WeakKeyError) as raised:
            checked_key(weak, "CHURN_KEY")
        assert weak not in str(raised.value) and str(len(weak)) not in str(raised.value)
        assert str(raised.value) == (
            "CHURN_KEY is too weak: a key needs at least 32 characters, at least 10 of them"
            " different, or pseudonyms can be reversed by guessing it. Make one with: python -c"
            ' "import secrets; print(secrets.token_urlsafe(32))" (or unset CHURN_KEY for random'
            " pseudonyms per run).")


def test_a_malformed_dsn_is_refused_with_advice_and_without_its_text():
    with pytest.raises(InputError) as raised:
        pg.parse_dsn("host=db password='s3cret")  # an unterminated quote
    assert "s3cret" not in str(raised.value)
    assert str(raised.value) == (
        "CHURN_METRICS_DSN is not a valid libpq connection string (its text is not shown: it"
        " holds the password). Quote a value with spaces or quotes as password='a b' (\\' and"
        " \\\\ inside), or use a postgresql:// URI with percent-encoded parts.")
    assert pg.parse_dsn("host=db password='a b'") == {"host": "db", "password": "a b"}


def test_landing_and_model_folders_and_the_settle_time_default_or_follow_the_environment(
        monkeypatch):
    for name in ("CHURN_LANDING_DIR", "CHURN_LANDING_SETTLE_SECONDS", "CHURN_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert settings.landing_dir() is None
    assert settings.landing_settle_seconds() == 10.0
    assert settings.model_dir() == settings.PROJECT_ROOT / "data" / "models"
    monkeypatch.setenv("CHURN_LANDING_DIR", "")
    assert settings.landing_dir() is None  # empty: single-file mode
    monkeypatch.setenv("CHURN_LANDING_DIR", "/srv/landing")
    monkeypatch.setenv("CHURN_LANDING_SETTLE_SECONDS", "2.5")
    monkeypatch.setenv("CHURN_MODEL_DIR", "/srv/models")
    assert settings.landing_dir() == Path("/srv/landing")
    assert settings.landing_settle_seconds() == 2.5
    assert settings.model_dir() == Path("/srv/models")


# --- warehouse.transaction, table_exists and write_table's own error text (new 2026-11-30) -----


def test_table_exists_only_for_a_table_of_this_database_in_that_schema():
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA s; CREATE TABLE s.t (a INT); CREATE VIEW s.v AS SELECT 1 AS a")
    conn.execute("ATTACH ':memory:' AS other")
    conn.execute("CREATE SCHEMA other.o; CREATE TABLE other.o.u (a INT)")
    assert wh.table_exists(conn, "s.t")
    assert not wh.table_exists(conn, "s.v")  # a view
    assert not wh.table_exists(conn, "main.t")  # another schema
    assert not wh.table_exists(conn, "o.u")  # another database's table


def test_a_transaction_commits_whole_or_rolls_back_and_names_the_failure():
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (a INT)")
    with wh.transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]
    with pytest.raises(duckdb.ConversionException):  # no failure text: DuckDB's own error
        with wh.transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            conn.execute("INSERT INTO t VALUES (CAST('x' AS INT))")
    with pytest.raises(InputError) as raised:
        with wh.transaction(conn, "adding rows", InputError):
            conn.execute("INSERT INTO t VALUES (3)")
            conn.execute("INSERT INTO t VALUES (CAST('x' AS INT))")
    assert type(raised.value) is InputError
    assert str(raised.value).startswith(
        "adding rows: Conversion Error: Could not convert string 'x' to INT32")
    with pytest.raises(PlatformError) as raised:
        with wh.transaction(conn, "adding more"):
            conn.execute("INSERT INTO t VALUES (CAST('y' AS INT))")
    assert type(raised.value) is PlatformError and str(raised.value).startswith("adding more: ")
    with pytest.raises(KeyError):  # anything else ends it too, rolled back
        with wh.transaction(conn, "adding rows"):
            conn.execute("INSERT INTO t VALUES (4)")
            raise KeyError("stop")
    assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]
    conn.execute("INSERT INTO t VALUES (5)")  # no transaction left open
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2


def test_a_failed_write_without_an_error_context_names_the_table():
    conn = duckdb.connect()
    with pytest.raises(PlatformError) as raised:
        wh.write_table(conn, "s", "t", wh.SqlTable("SELECT CAST('x' AS INTEGER) AS a"))
    assert str(raised.value).startswith(
        'writing "s"."t": Conversion Error: Could not convert string \'x\' to INT32')
    with pytest.raises(PlatformError) as raised:
        wh.write_table(conn, "s", "t", wh.SqlTable("SELECT CAST('x' AS INTEGER) AS a",
                                                   error_context="loading s.t"))
    assert str(raised.value).startswith("loading s.t: Conversion Error")


# --- model files in backups (core/backup_models.py) ---------------------------------------------


def stored_model(model_dir: Path, content: bytes) -> str:
    version = hashlib.sha256(content).hexdigest()
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / f"{version}.zip").write_bytes(content)
    return version


def test_the_recorded_versions_are_the_distinct_sha256_named_ones_in_order():
    from churn_platform.core.backup_models import recorded_versions
    conn = duckdb.connect()
    assert recorded_versions(conn) == []  # no evaluations table
    conn.execute("CREATE SCHEMA analytics; CREATE TABLE analytics.churn_model_evaluations"
                  " (model_version VARCHAR)")
    a, b = "a" * 64, "0" * 63 + "1"
    conn.execute("INSERT INTO analytics.churn_model_evaluations VALUES (?), (?), (?), (NULL),"
                 " ('not-a-sha'), (?)", [a, b, a, "A" * 64])
    assert recorded_versions(conn) == [b, a]


def test_backing_up_models_copies_each_as_numbered_files_and_says_why_one_was_not(tmp_path):
    from churn_platform.core.backup_manifest import Model
    from churn_platform.core.backup_models import back_up_models
    models, folder = tmp_path / "models", tmp_path / "backup"
    folder.mkdir()
    one, two = stored_model(models, b"model one"), stored_model(models, b"model two")
    changed = stored_model(models, b"model three")
    (models / f"{changed}.zip").write_bytes(b"rewritten")
    missing = "f" * 64
    (models / "folder").mkdir()
    linked = "e" * 64
    (models / f"{linked}.zip").symlink_to(models / f"{one}.zip")
    copied, skipped = back_up_models([one, missing, changed, linked, two], models, folder)
    assert copied == [Model("model-001.zip", one, 9), Model("model-002.zip", two, 9)]
    assert (folder / "model-001.zip").read_bytes() == b"model one"
    assert (folder / "model-002.zip").read_bytes() == b"model two"
    assert sorted(p.name for p in folder.iterdir()) == ["model-001.zip", "model-002.zip"]
    assert oct((folder / "model-001.zip").stat().st_mode & 0o777) == "0o600"
    rewritten = hashlib.sha256(b"rewritten").hexdigest()
    assert skipped == {
        missing: f"{models / (missing + '.zip')} is missing",
        changed: f"{models / (changed + '.zip')} changed since it was stored (SHA-256"
                 f" {rewritten})",
        linked: f"{models / (linked + '.zip')} cannot be read as a regular file (Too many"
                " levels of symbolic links)",
    }


def test_restoring_models_copies_the_missing_keeps_the_same_and_refuses_another(tmp_path):
    from churn_platform.core.backup_manifest import BackupRefused, Model
    from churn_platform.core.backup_models import check_models, restore_models
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "model-001.zip").write_bytes(b"model one")
    (backup / "model-002.zip").write_bytes(b"model two")
    one = Model("model-001.zip", hashlib.sha256(b"model one").hexdigest(), 9)
    two = Model("model-002.zip", hashlib.sha256(b"model two").hexdigest(), 9)
    target = tmp_path / "restored" / "models"
    stored_model(target, b"model two")  # already there, the same
    assert restore_models(backup, [one, two], target) == [target / f"{one.version}.zip"]
    assert (target / f"{one.version}.zip").read_bytes() == b"model one"
    fresh = tmp_path / "fresh" / "models"
    assert restore_models(backup, [two], fresh) == [fresh / f"{two.version}.zip"]
    assert oct(fresh.stat().st_mode & 0o777) == "0o700"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [f"{one.version}.zip", f"{two.version}.zip"])  # no partial file left
    assert restore_models(backup, [one, two], target) == []  # both present: nothing written
    (target / f"{two.version}.zip").write_bytes(b"someone else's")
    for call in (check_models, restore_models):
        with pytest.raises(BackupRefused) as raised:
            call(backup, [one, two], target)
        assert str(raised.value) == (
            f"{backup}: refused: {target / (two.version + '.zip')} exists with other content"
            f" than model {two.version}: move it away, then restore again")
    (target / f"{two.version}.zip").unlink()
    (target / f"{two.version}.zip").mkdir()  # not even a file: refused as well
    with pytest.raises(BackupRefused):
        check_models(backup, [two], target)
    check_models(backup, [one], target)  # the same file: fine


# --- whole tables and Grafana's reader role (export code changed since 2026-11-29) ------------


def test_a_whole_table_is_its_columns_in_order_or_none_without_the_table():
    spec = snapshots.WholeTable("t", ("b", "a"), "s.t")
    conn = duckdb.connect()
    assert snapshots.whole_rows(conn, spec) is None
    conn.execute("CREATE SCHEMA s; CREATE TABLE s.t AS SELECT * FROM"
                 " (VALUES (1, 'y', 0), (2, 'x', 0)) v(a, b, c)")
    assert snapshots.whole_rows(conn, spec) == [("x", 2), ("y", 1)]


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (RFC 5803) was made from `password`."""
    iterations, salt, stored = re.fullmatch(
        r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):.+", verifier).groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored


def test_the_reader_gets_a_scram_verifier_of_its_password_whatever_the_servers_default(
        metrics):
    """The test server trusts every login, so the password is checked in pg_authid."""
    role = f"reader_{os.urandom(4).hex()}"  # roles outlive the test's database
    metrics.execute("SET password_encryption = 'md5'")
    pg.grant_reader(metrics, role, "pw-1")
    query = "SELECT rolpassword FROM pg_authid WHERE rolname = %s"
    [(stored,)] = metrics.execute(query, [role]).fetchall()
    assert scram_matches(stored, "pw-1") and not scram_matches(stored, role)
    pg.grant_reader(metrics, role, "pw-2")  # exists: its password is changed
    [(stored,)] = metrics.execute(query, [role]).fetchall()
    assert scram_matches(stored, "pw-2")
    metrics.rollback()


def test_a_reader_role_with_powers_or_memberships_is_refused_naming_them(metrics):
    tag = os.urandom(4).hex()
    metrics.commit()  # the schema stays; each refusal below is rolled back to a savepoint
    for role, create, powers in (
            (f"powerful_{tag}", "CREATE ROLE {} CREATEDB BYPASSRLS", "CREATEDB, BYPASSRLS"),
            (f"writer_{tag}", "CREATE ROLE {}; GRANT pg_write_all_data TO {}",
             "membership in pg_write_all_data"),
            (f"both_{tag}", "CREATE ROLE {} CREATEROLE; GRANT pg_read_all_data TO {}",
             "CREATEROLE, membership in pg_read_all_data")):
        with pytest.raises(InputError) as raised:
            with metrics.transaction():
                metrics.execute(create.replace("{}", role))
                pg.grant_reader(metrics, role, "pw")
        assert str(raised.value) == (
            f"metrics database: role {role} (CHURN_GRAFANA_DB_USER) exists with {powers}: it is"
            " not a read-only role; name another role, or drop that one")
    metrics.rollback()


def test_an_exporter_without_createrole_is_told_what_it_needs(metrics, pg_dsn):
    exporter, reader = f"exporter_{os.urandom(4).hex()}", f"reader_{os.urandom(4).hex()}"
    metrics.execute(f"CREATE ROLE {exporter} LOGIN")
    metrics.commit()
    try:
        with psycopg.connect(make_conninfo(pg_dsn, user=exporter)) as conn:
            with pytest.raises(InputError) as raised:
                pg.grant_reader(conn, reader, "pw")
    finally:
        metrics.execute(f"DROP ROLE {exporter}")
        metrics.commit()
    assert str(raised.value) == (
        f"metrics database: the exporter may not manage Grafana's role {reader} (permission"
        " denied to create role); it needs CREATEROLE, and to own the database (to grant CONNECT"
        " on it): as a superuser, CREATE ROLE <exporter> LOGIN CREATEROLE PASSWORD '...'; CREATE"
        " DATABASE <metrics> OWNER <exporter>")


# --- models in manifest version 2 (backup_manifest._model, Model) -------------------------------

SHA_A, SHA_B = "a" * 64, "b" * 64


def model_entry(**edits) -> dict:
    return {"file": "model-001.zip", "version": SHA_A, "size_bytes": 0, **edits}


def test_a_manifest_lists_its_models_and_writes_them_back_alike():
    second = model_entry(file="model-002.zip", version=SHA_B, size_bytes=7)
    contents = bm.parse_manifest(document(models=[model_entry(), second]))
    assert contents.models == [bm.Model("model-001.zip", SHA_A, 0),
                               bm.Model("model-002.zip", SHA_B, 7)]
    assert [m.as_json() for m in contents.models] == [model_entry(), second]


MODEL_FIELDS = ("model 2 of the manifest does not have exactly the fields"
                " ['file', 'size_bytes', 'version']")


@pytest.mark.parametrize("entry, why", [
    ("model-002.zip", MODEL_FIELDS),
    ({k: v for k, v in model_entry().items() if k != "size_bytes"}, MODEL_FIELDS),
    ({**model_entry(), "sha256": SHA_B}, MODEL_FIELDS),
    (model_entry(file="model-02.zip"),
     "model 2 of the manifest: file name 'model-02.zip' is not model-NNN.zip"),
    (model_entry(file="model-002.zip.tmp"),
     "model 2 of the manifest: file name 'model-002.zip.tmp' is not model-NNN.zip"),
    (model_entry(file=2), "model 2 of the manifest: file name 2 is not model-NNN.zip"),
    (model_entry(file="model-002.zip", version="A" * 64),
     "model 2 of the manifest: version is not 64 lower-case hex digits"),
    (model_entry(file="model-002.zip", version=SHA_B[:63]),
     "model 2 of the manifest: version is not 64 lower-case hex digits"),
    (model_entry(file="model-002.zip", version=5),
     "model 2 of the manifest: version is not 64 lower-case hex digits"),
    (model_entry(file="model-002.zip", version=SHA_B, size_bytes=-1),
     "model 2 of the manifest: size_bytes is not a count"),
    (model_entry(file="model-002.zip", version=SHA_B, size_bytes=True),
     "model 2 of the manifest: size_bytes is not a count"),
    (model_entry(file="model-002.zip", version=SHA_B, size_bytes=1.0),
     "model 2 of the manifest: size_bytes is not a count"),
    (model_entry(version=SHA_B), "two tables or models share a file"),
    (model_entry(file="table-001.parquet", version=SHA_B),
     "model 2 of the manifest: file name 'table-001.parquet' is not model-NNN.zip"),
    (model_entry(file="model-002.zip"), "two models share a version"),
])
def test_a_model_entry_breaking_one_rule_is_refused_saying_which(entry, why):
    with pytest.raises(ValueError) as raised:
        bm.parse_manifest(document(models=[model_entry(), entry]))
    assert str(raised.value) == why
    assert bm.parse_manifest(document(models=[model_entry()])).models  # the first alone: fine


def test_a_model_copy_never_overwrites_nor_writes_through_a_link(tmp_path):
    from churn_platform.core.backup_models import _copy
    source = tmp_path / "source.zip"
    source.write_bytes(b"model")
    (tmp_path / "taken.zip").write_bytes(b"other")
    with pytest.raises(FileExistsError):
        _copy(source, tmp_path / "taken.zip")
    assert (tmp_path / "taken.zip").read_bytes() == b"other"
    (tmp_path / "link.zip").symlink_to(tmp_path / "elsewhere.zip")  # a dangling link
    with pytest.raises(FileExistsError):
        _copy(source, tmp_path / "link.zip")
    assert not (tmp_path / "elsewhere.zip").exists()
    _copy(source, tmp_path / "new.zip")
    assert (tmp_path / "new.zip").read_bytes() == b"model"


def test_a_backup_carries_the_recorded_models_and_a_restore_puts_them_back(tmp_path):
    models = tmp_path / "models"
    one, two = stored_model(models, b"model one"), stored_model(models, b"model two")
    stored_model(models, b"not recorded")
    with duckdb.connect() as conn:
        conn.execute("CREATE SCHEMA analytics; CREATE TABLE analytics.churn_model_evaluations"
                     " AS SELECT * FROM (VALUES (?), (?)) v(model_version)", [two, one])
        without = backups.take_backup(conn, tmp_path / "backups", NOW - timedelta(hours=1))
        taken = backups.take_backup(conn, tmp_path / "backups", NOW, model_dir=models)
    assert bm.verify_backup(without).models == []
    first, second = sorted([one, two])
    assert bm.verify_backup(taken).models == [bm.Model("model-001.zip", first, 9),
                                              bm.Model("model-002.zip", second, 9)]
    # Restored with the models: both come back by version; without a folder, none.
    restored = tmp_path / "restored" / "models"
    backups.restore_backup(taken, tmp_path / "w1.duckdb")
    assert not restored.exists()
    backups.restore_backup(taken, tmp_path / "w2.duckdb", model_dir=restored)
    assert sorted(p.name for p in restored.iterdir()) == sorted(
        [f"{one}.zip", f"{two}.zip"])
    assert (restored / f"{one}.zip").read_bytes() == b"model one"
    backups.restore_backup(without, tmp_path / "w3.duckdb", model_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()  # no model to restore: the folder is not made
    # A different file under a model's name: refused before the warehouse is written.
    (restored / f"{one}.zip").write_bytes(b"someone else's")
    with pytest.raises(bm.BackupRefused) as raised:
        backups.restore_backup(taken, tmp_path / "w4.duckdb", model_dir=restored)
    assert str(raised.value).startswith(f"{taken}: refused: {restored / (one + '.zip')}")
    assert not (tmp_path / "w4.duckdb").exists()


def test_the_restore_command_puts_models_in_the_given_folder_else_the_setting(
        tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    version = stored_model(models, b"model one")
    with duckdb.connect() as conn:
        conn.execute("CREATE SCHEMA analytics; CREATE TABLE analytics.churn_model_evaluations"
                     " AS SELECT ? AS model_version", [version])
        taken = backups.take_backup(conn, tmp_path / "backups", NOW, model_dir=models)
    given, setting = tmp_path / "given", tmp_path / "setting"
    monkeypatch.setenv("CHURN_MODEL_DIR", str(setting))
    assert backups.main(["restore", str(taken), str(tmp_path / "a.duckdb"),
                         "--models", str(given)]) == 0
    assert [p.name for p in given.iterdir()] == [f"{version}.zip"] and not setting.exists()
    assert backups.main(["restore", str(taken), str(tmp_path / "b.duckdb")]) == 0
    assert [p.name for p in setting.iterdir()] == [f"{version}.zip"]
    with pytest.raises(SystemExit):
        backups.main(["restore", "--help"])
    assert re.search(r"MODELS where the backup's model files go \(default: CHURN_MODEL_DIR\)( |$)",
                     " ".join(capsys.readouterr().out.split()))
