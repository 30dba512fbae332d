"""Nothing leaks and nothing is injected: customer ids stay in staging, the key stays secret,
hostile paths, column names and settings are bound or quoted."""

import json
import re
import secrets
import zipfile

import dagster as dg
import duckdb
import psycopg
import pytest

from churn_platform.core import backups as backup
from churn_platform.core.pseudonymize import (
    KEY_MIN_CHARS,
    KEY_MIN_DISTINCT,
    MAKE_A_KEY,
    WeakKeyError,
    checked_key,
    pseudonym,
)
from churn_platform.defs.backup import assets as backup_defs
from churn_platform.defs.resources import build_resources
from churn_platform.sample_data import write_sample
from churn_platform_tests.conftest import HEADER, query, run_elt, write_csv
from churn_platform_tests.export_support import pg_rows, run_job
from churn_platform_tests.location import platform_defs

KEY = "k3y-that-must-never-show-in-any-log"
IDS = [f"SECRETID-{n:04d}-XQ" for n in range(1, 7)]
ROWS = [
    f"{IDS[0]},40,Female,10,70.5,One-Year,DSL,705.0,Yes,No",
    f"{IDS[1]},33,Male,2,abc,Month-to-Month,None,10,No,Yes",  # rejected: charges
    f"{IDS[2]},,,,,,,,,",  # imputed everywhere
    f"{IDS[3]},51,Other,-4,99,Two-Year,Fiber Optic,0,Yes,No",  # rejected: tenure
    f"{IDS[4]},29,Female,40,120,One-Year,DSL,4800,Maybe,No",  # rejected: tech support
    f"{IDS[5]},61,Male,70,55,Two-Year,DSL,3850,No,No",
]


def everything_outside_staging(database, result) -> str:
    """Every value outside the staging schema, every event and its metadata, as one text."""
    texts = [repr(e) for e in result.all_events]
    with duckdb.connect(str(database), read_only=True) as conn:
        for schema, table in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE schema_name <> 'staging'"
        ).fetchall():
            texts.append(repr(conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()))
    return "\n".join(texts)


def test_ids_and_key_appear_nowhere_but_staging(tmp_path, warehouse, monkeypatch, capfd):
    monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", KEY)
    csv = write_csv(tmp_path / "ids.csv", "\n".join([HEADER, *ROWS]) + "\n")
    result = run_elt(csv, warehouse)
    logs = "".join(capfd.readouterr())
    assert "Pseudonymization: keyed" in logs  # the run's logs were captured
    text = everything_outside_staging(warehouse, result) + logs
    assert query(warehouse, "SELECT count(*) FROM analytics.rejected_rows") == [(3,)]
    for customer in IDS:
        assert customer not in text
    assert KEY not in text
    assert KEY.encode() not in warehouse.read_bytes()
    assert all(c in query(warehouse, 'SELECT "CustomerID" FROM staging.customer_churn')[i]
               for i, c in enumerate(IDS))  # staging, and only staging, keeps them


def test_a_failing_row_is_named_by_line_without_its_content(tmp_path, warehouse, capfd):
    csv = write_csv(tmp_path / "ragged.csv", f"{HEADER}\n{ROWS[0]}\n{IDS[5]},40,extra,fields\n")
    result = run_elt(csv, warehouse, raise_on_error=False)
    assert not result.success
    text = repr(result.all_events) + "".join(capfd.readouterr())
    assert "Line: 3" in text
    assert IDS[5] not in text and IDS[0] not in text


VARIED = "abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        (VARIED[:KEY_MIN_CHARS - 1], False),  # one character short
        (VARIED[:KEY_MIN_CHARS], True),
        (VARIED[:KEY_MIN_DISTINCT - 1] * 5, False),  # long enough, too few different characters
        (VARIED[:KEY_MIN_DISTINCT] * 5, True),
        ("a-key", False),
        (secrets.token_urlsafe(32), True),  # what the message tells users to run
        (secrets.token_hex(32), True),  # `openssl rand -hex 32`
    ],
    # Named, not shown: a random key as a test id differs from one collection to the next.
    ids=["short", "long-enough", "few-distinct", "enough-distinct", "a-key", "token-urlsafe",
         "token-hex"],
)
def test_weak_keys_are_refused_without_showing_them(key, accepted):
    if accepted:
        assert checked_key(key, "CHURN_PSEUDONYMIZATION_KEY") == key.encode()
        return
    with pytest.raises(WeakKeyError) as error:
        checked_key(key, "CHURN_PSEUDONYMIZATION_KEY")
    message = error.value.description
    assert "CHURN_PSEUDONYMIZATION_KEY is too weak" in message and MAKE_A_KEY in message
    assert key not in message and error.value.retryable is False


def test_a_wrong_or_missing_key_cannot_reproduce_the_pseudonyms(tmp_path, warehouse, monkeypatch):
    csv = write_csv(tmp_path / "ids.csv", "\n".join([HEADER, ROWS[0], ROWS[5]]) + "\n")
    sql = "SELECT anonymized_customer_id::VARCHAR FROM analytics.customer_churn ORDER BY source_row"
    monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", KEY)
    run_elt(csv, warehouse)
    keyed = [r[0] for r in query(warehouse, sql)]
    assert keyed == [pseudonym(IDS[0], KEY.encode()), pseudonym(IDS[5], KEY.encode())]
    monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", KEY + "x")
    run_elt(csv, warehouse)
    wrong = [r[0] for r in query(warehouse, sql)]
    monkeypatch.delenv("CHURN_PSEUDONYMIZATION_KEY")
    run_elt(csv, warehouse)
    missing = [r[0] for r in query(warehouse, sql)]
    assert set(keyed).isdisjoint(wrong) and set(keyed).isdisjoint(missing)


HOSTILE = "x'; DROP TABLE analytics.customer_churn; --\"$(rm -rf)"


def test_a_hostile_file_name_is_only_a_file_name(tmp_path, sample_csv, warehouse):
    run_elt(sample_csv, warehouse)
    hostile = tmp_path / f"{HOSTILE}.csv"
    hostile.write_bytes(sample_csv.read_bytes())
    assert run_elt(hostile, warehouse).success
    assert query(warehouse, "SELECT DISTINCT source_file FROM staging.customer_churn") == [
        (str(hostile),)]
    assert query(warehouse, "SELECT count(*) FROM analytics.customer_churn")[0][0] > 0


def test_a_hostile_column_name_is_kept_in_staging_and_does_nothing(tmp_path, warehouse):
    csv = write_csv(tmp_path / "cols.csv", f'{HEADER},"{HOSTILE.replace(chr(34), chr(34) * 2)}"\n'
                                           f"{ROWS[0]},boom\n")
    assert run_elt(csv, warehouse).success
    assert query(warehouse, f'SELECT "{HOSTILE.replace(chr(34), chr(34) * 2)}"'
                            " FROM staging.customer_churn") == [("boom",)]
    assert query(warehouse, "SELECT count(*) FROM analytics.customer_churn") == [(1,)]


def test_a_hostile_setting_fails_clearly(sample_csv, warehouse, monkeypatch):
    monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", "1GB'; DROP TABLE x; --")
    result = run_elt(sample_csv, warehouse, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "CHURN_DUCKDB_" in str(failure.step_failure_data.user_failure_data.description)


def test_a_hostile_backup_folder_is_quoted(tmp_path, sample_csv, warehouse, monkeypatch):
    run_elt(sample_csv, warehouse)
    folder = tmp_path / HOSTILE
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(folder))
    dg.materialize([backup_defs.warehouse_backup], resources=build_resources(str(warehouse)))
    [taken] = backup.list_backups(folder)
    restored = tmp_path / "restored.duckdb"
    backup.restore_backup(taken, restored)
    assert query(restored, "SELECT count(*) FROM analytics.customer_churn") == query(
        warehouse, "SELECT count(*) FROM analytics.customer_churn")


@pytest.mark.parametrize("name", ["CustomerID", "customer_id"])
def test_the_id_column_never_reaches_analytics(sample_csv, warehouse, name):
    run_elt(sample_csv, warehouse)
    columns = [r[0] for r in query(warehouse, "DESCRIBE analytics.customer_churn")]
    columns += [r[0] for r in query(warehouse, "DESCRIBE analytics.rejected_rows")]
    assert name not in columns


def test_ids_and_key_never_reach_the_postgresql_export(tmp_path, pg_dsn, monkeypatch, capfd):
    monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", KEY)
    monkeypatch.setenv("CHURN_METRICS_DSN", pg_dsn)
    csv = write_csv(tmp_path / "ids.csv", "\n".join([HEADER, *ROWS]) + "\n")
    defs = platform_defs(tmp_path / "w.duckdb", csv)
    with dg.instance_for_test() as instance:
        assert run_job(defs, "churn_elt_job", instance).success
        assert run_job(defs, "metrics_export_job", instance).success
    dumped = []
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables"
                              " WHERE schemaname = 'churn_metrics'").fetchall()
        for schema, table in tables:
            dumped.append(repr(conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()))
    text = "\n".join(dumped) + "".join(capfd.readouterr())
    assert len(tables) >= 8  # every table the export writes was read
    columns = {c for (c,) in pg_rows(pg_dsn, "SELECT column_name FROM information_schema.columns"
                                             " WHERE table_schema = 'churn_metrics'")}
    assert columns and not columns & {"source_row", "anonymized_customer_id", "customer_id"}
    assert pg_rows(pg_dsn, "SELECT count(*) FROM churn_metrics.kpi_snapshots") == [(1,)]
    for customer in IDS:
        assert customer not in text
    assert KEY not in text


def test_hostile_names_in_a_mapping_are_quoted_or_bound(tmp_path, warehouse, monkeypatch):
    """Column names and aliases from a company's mapping never become SQL."""
    id_column = "id'); DROP TABLE staging.customer_churn; --"
    churn_column = 'churn" OR 1=1 --'
    mapping = tmp_path / "hostile.yaml"
    mapping.write_text(
        "fields:\n"
        f"  customer_id: {json.dumps(id_column)}\n"
        "  churn:\n"
        f"    column: {json.dumps(churn_column)}\n"
        "    aliases:\n"
        "      \"y'; DELETE FROM x; --\": \"Yes\"\n"
    )
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(mapping))
    header = ",".join('"' + c.replace('"', '""') + '"' for c in (id_column, churn_column))
    csv = write_csv(tmp_path / "h.csv", f"{header}\nC1,y'; DELETE FROM x; --\nC2,No\n")
    assert run_elt(csv, warehouse).success
    assert query(warehouse, "SELECT churn FROM analytics.customer_churn ORDER BY source_row") == [
        ("Yes",), ("No",)]
    assert query(warehouse, "SELECT count(*) FROM staging.customer_churn") == [(2,)]


def test_ids_never_reach_the_churn_model_its_scores_or_their_events(tmp_path, monkeypatch, capfd):
    """Training reads features and the label only; scores carry the pseudonym."""
    monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", KEY)
    csv = write_sample(tmp_path / "customers.csv", 1500, seed=5)
    ids = {line.split(",")[0] for line in csv.read_text().splitlines()[1:]}
    database, models = tmp_path / "w.duckdb", tmp_path / "models"
    defs = platform_defs(database, csv, models)
    with dg.instance_for_test() as instance:
        elt = run_job(defs, "churn_elt_job", instance)
        model = run_job(defs, "churn_model_job", instance)
        rescored = run_job(defs, "churn_elt_job", instance)
    assert model.success and rescored.success
    texts = [everything_outside_staging(database, r) for r in (elt, model, rescored)]
    [stored] = models.iterdir()
    with zipfile.ZipFile(stored) as archive:
        texts += [archive.read(name).decode("latin-1") for name in archive.namelist()]
    texts.append("".join(capfd.readouterr()))
    text = "\n".join(texts)
    assert query(database, "SELECT count(*) FROM analytics.churn_scores")[0][0] > 500
    assert "churn_risk_gate" in text and "tenure" in text  # the events and file were read
    assert ids & set(re.findall(r"C\d{7}", " ".join(
        r[0] for r in query(database, 'SELECT "CustomerID" FROM staging.customer_churn'))))
    assert not ids & set(re.findall(r"C\d{7}", text))
    assert KEY not in text
