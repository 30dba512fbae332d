"""Rules of the core stated on both sides of each boundary, small and without Dagster: the tests
written to kill the mutants that survived mutation testing (docs/mutation-testing.md)."""

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from churn_platform.core import backups, settings
from churn_platform.core.export import snapshots
from churn_platform.core.fields import FIELDS, METRICS_TABLE, SEGMENT_TABLE
from churn_platform.core.pseudonymize import hmac_pads, pseudonym, pseudonym_sql

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
    for age in ages:
        (root / backups.backup_name(NOW - age)).mkdir()


def ages(root: Path) -> list[timedelta]:
    return [NOW - backups.taken_at(b) for b in backups.list_backups(root)]


@pytest.mark.parametrize("count, keep, left", [(3, 3, 3), (4, 3, 3), (3, 4, 3), (3, 1, 1),
                                               (2, 0, 1)])
def test_pruning_keeps_exactly_the_newest_keep_backups(tmp_path, count, keep, left):
    hours = [timedelta(hours=h) for h in range(1, count + 1)]
    backups_aged(tmp_path, *hours)
    removed = backups.prune_backups(tmp_path, keep=keep, max_age=timedelta(days=9), now=NOW)
    assert ages(tmp_path) == sorted(hours, reverse=True)[count - left:]  # oldest first
    assert len(removed) == count - left


def test_pruning_keeps_a_backup_exactly_max_age_old_and_removes_one_a_microsecond_older(tmp_path):
    max_age = timedelta(hours=48)
    backups_aged(tmp_path, timedelta(hours=1), max_age, max_age + timedelta(microseconds=1))
    removed = backups.prune_backups(tmp_path, keep=10, max_age=max_age, now=NOW)
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
    assert backups.taken_at(Path("/b") / name) == datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)


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
