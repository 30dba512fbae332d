"""Customer history, churn events and cohorts over exports, against hand-computed tables.

Three monthly exports of six customers (ids shortened to their last letter below):
  a  stays the same throughout;
  b  churns in the second export (churn No -> Yes) and stays listed as churned;
  c  changes contract (Month-to-Month -> One-Year) in the second export;
  e  is missing from the second export and comes back in the third (a second lifecycle);
  f  appears in the second export already churned;
  d  is listed twice in the first export: the last row (Two-Year) is the one history keeps.
"""

import time
from datetime import date, datetime, timezone

import duckdb
import pytest

from churn_platform.core.errors import InputError, PlatformError
from churn_platform.core.history import (
    ExportRef,
    apply_export,
    monthly_churn_sql,
    retention_by_cohort_sql,
)

D1, D2, D3 = date(2026, 1, 20), date(2026, 2, 17), date(2026, 3, 24)
K1 = ExportRef("2026-01-20__000000000001", D1, datetime(2026, 1, 20, 6, tzinfo=timezone.utc))
K2 = ExportRef("2026-02-17__000000000002", D2, datetime(2026, 2, 17, 6, tzinfo=timezone.utc))
K3 = ExportRef("2026-03-24__000000000003", D3, datetime(2026, 3, 24, 6, tzinfo=timezone.utc))
MTM, ONE, TWO = "Month-to-Month", "One-Year", "Two-Year"

# (export, customer, source_row, tenure, contract, internet, tech support, charges band,
#  tenure band, churn)
ROWS = [
    (K1, "a", 1, 5, MTM, "DSL", "No", "Medium", "New", "No"),
    (K1, "b", 2, 20, ONE, "Fiber Optic", "Yes", "High", "Medium", "No"),
    (K1, "c", 3, 30, MTM, "DSL", "No", "Low", "Medium", "No"),
    (K1, "e", 4, 3, MTM, "DSL", "No", "Low", "New", "No"),
    (K1, "d", 5, 40, MTM, "DSL", "Yes", "Medium", "Long", "No"),
    (K1, "d", 6, 40, TWO, "DSL", "Yes", "Medium", "Long", "No"),
    (K2, "a", 1, 6, MTM, "DSL", "No", "Medium", "New", "No"),
    (K2, "b", 2, 21, ONE, "Fiber Optic", "Yes", "High", "Medium", "Yes"),
    (K2, "c", 3, 31, ONE, "DSL", "No", "Low", "Medium", "No"),
    (K2, "f", 4, 2, MTM, "None", "No", "Low", "New", "Yes"),
    (K2, "d", 5, 41, TWO, "DSL", "Yes", "Medium", "Long", "No"),
    (K3, "a", 1, 7, MTM, "DSL", "No", "Medium", "New", "No"),
    (K3, "b", 2, 21, ONE, "Fiber Optic", "Yes", "High", "Medium", "Yes"),
    (K3, "c", 3, 32, ONE, "DSL", "No", "Low", "Medium", "No"),
    (K3, "e", 4, 5, MTM, "DSL", "No", "Low", "New", "No"),
    (K3, "f", 5, 3, MTM, "None", "No", "Low", "New", "Yes"),
    (K3, "d", 6, 42, TWO, "DSL", "Yes", "Medium", "Long", "No"),
]

# (customer, lifecycle, valid_from, valid_to, is_current, contract, internet, tech support,
#  charges band, tenure band, churn, first_tenure, closed_by, opened by export)
HISTORY = [
    ("a", 1, D1, None, True, MTM, "DSL", "No", "Medium", "New", "No", 5, None, K1.key),
    ("b", 1, D1, D2, False, ONE, "Fiber Optic", "Yes", "High", "Medium", "No", 20, "change",
     K1.key),
    ("b", 1, D2, None, True, ONE, "Fiber Optic", "Yes", "High", "Medium", "Yes", 21, None, K2.key),
    ("c", 1, D1, D2, False, MTM, "DSL", "No", "Low", "Medium", "No", 30, "change", K1.key),
    ("c", 1, D2, None, True, ONE, "DSL", "No", "Low", "Medium", "No", 31, None, K2.key),
    ("d", 1, D1, None, True, TWO, "DSL", "Yes", "Medium", "Long", "No", 40, None, K1.key),
    ("e", 1, D1, D2, False, MTM, "DSL", "No", "Low", "New", "No", 3, "missing", K1.key),
    ("e", 2, D3, None, True, MTM, "DSL", "No", "Low", "New", "No", 5, None, K3.key),
    ("f", 1, D2, None, True, MTM, "None", "No", "Low", "New", "Yes", 2, None, K2.key),
]

# (customer, last_seen_date, last_seen_tenure)
LAST_SEEN = [("a", D3, 7), ("b", D3, 21), ("c", D3, 32), ("d", D3, 42), ("e", D3, 5), ("f", D3, 3)]

# (customer, lifecycle, event_date, detected_date, rule, tenure, contract, detected by export)
EVENTS = [
    ("b", 1, D2, D2, "churn_flag", 21, ONE, K2.key),
    ("e", 1, D2, D2, "missing", 3, MTM, K2.key),
    ("f", 1, D2, D2, "churn_flag_at_first_sight", 2, MTM, K2.key),
]

JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
# (cohort_month, month, measured_on, months_since_start, customers, retained, retention_percent)
# Cohort = month of (first sight - tenure then): d 2022-09, c 2023-07, b 2024-05, a 2025-08,
# e 2025-10, f 2025-12 (first seen in February).
RETENTION = [
    (date(2022, 9, 1), JAN, D1, 40, 1, 1, 100.0),
    (date(2022, 9, 1), FEB, D2, 41, 1, 1, 100.0),
    (date(2022, 9, 1), MAR, D3, 42, 1, 1, 100.0),
    (date(2023, 7, 1), JAN, D1, 30, 1, 1, 100.0),
    (date(2023, 7, 1), FEB, D2, 31, 1, 1, 100.0),
    (date(2023, 7, 1), MAR, D3, 32, 1, 1, 100.0),
    (date(2024, 5, 1), JAN, D1, 20, 1, 1, 100.0),
    (date(2024, 5, 1), FEB, D2, 21, 1, 0, 0.0),
    (date(2024, 5, 1), MAR, D3, 22, 1, 0, 0.0),
    (date(2025, 8, 1), JAN, D1, 5, 1, 1, 100.0),
    (date(2025, 8, 1), FEB, D2, 6, 1, 1, 100.0),
    (date(2025, 8, 1), MAR, D3, 7, 1, 1, 100.0),
    (date(2025, 10, 1), JAN, D1, 3, 1, 1, 100.0),
    (date(2025, 10, 1), FEB, D2, 4, 1, 0, 0.0),
    (date(2025, 10, 1), MAR, D3, 5, 1, 1, 100.0),
    (date(2025, 12, 1), FEB, D2, 2, 1, 0, 0.0),
    (date(2025, 12, 1), MAR, D3, 3, 1, 0, 0.0),
]

MONTHLY = [
    (FEB, "churn_flag", 1),
    (FEB, "churn_flag_at_first_sight", 1),
    (FEB, "missing", 1),
]

ID = "right(anonymized_customer_id::VARCHAR, 1) AS customer"
HISTORY_QUERY = f"""
    SELECT {ID}, lifecycle, valid_from, valid_to, is_current, contract_type, internet_service,
           tech_support, monthly_charges_category, tenure_category, churn, first_tenure,
           closed_by, opened_by_export
    FROM analytics.customer_history ORDER BY ALL"""
EVENTS_QUERY = f"""
    SELECT {ID}, lifecycle, event_date, detected_date, rule, tenure, contract_type,
           detected_by_export
    FROM analytics.churn_events ORDER BY ALL"""
LAST_SEEN_QUERY = f"""
    SELECT {ID}, last_seen_date, last_seen_tenure FROM analytics.customer_last_seen ORDER BY ALL"""
EXPORTS_QUERY = """
    SELECT export_key, export_date, customers, repeated_rows, superseded_by
    FROM analytics.history_exports ORDER BY ALL"""


def uuid_of(letter: str) -> str:
    return f"00000000-0000-0000-0000-00000000000{letter}"


def load_rows(con, rows):
    con.execute("""CREATE TABLE export_rows (
        export_key VARCHAR, anonymized_customer_id UUID, source_row BIGINT, tenure INTEGER,
        contract_type VARCHAR, internet_service VARCHAR, tech_support VARCHAR,
        monthly_charges_category VARCHAR, tenure_category VARCHAR, churn VARCHAR)""")
    con.executemany("INSERT INTO export_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(ref.key, uuid_of(c), *rest) for ref, c, *rest in rows])


def rows_for(ref: ExportRef) -> str:
    return f"SELECT * EXCLUDE (export_key) FROM export_rows WHERE export_key = '{ref.key}'"


@pytest.fixture
def con(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        load_rows(connection, ROWS)
        yield connection


def apply(con, ref, missing=1, rows=rows_for):
    return apply_export(con, ref, rows, missing_for_churn=missing)


def tables(con):
    return {name: con.execute(sql).fetchall()
            for name, sql in (("history", HISTORY_QUERY), ("events", EVENTS_QUERY),
                              ("last_seen", LAST_SEEN_QUERY), ("exports", EXPORTS_QUERY))}


def test_three_exports_give_the_hand_computed_history_events_and_cohorts(con):
    assert [apply(con, ref) for ref in (K1, K2, K3)] == ["appended"] * 3
    assert con.execute(HISTORY_QUERY).fetchall() == HISTORY
    assert con.execute(LAST_SEEN_QUERY).fetchall() == LAST_SEEN
    assert con.execute(EVENTS_QUERY).fetchall() == EVENTS
    assert con.execute(retention_by_cohort_sql()).fetchall() == RETENTION
    assert con.execute(monthly_churn_sql()).fetchall() == MONTHLY
    # d's repeat in the first export is counted, not kept.
    assert con.execute(EXPORTS_QUERY).fetchall() == [
        (K1.key, D1, 5, 1, None), (K2.key, D2, 5, 0, None), (K3.key, D3, 6, 0, None)]


def test_reapplying_any_export_changes_nothing(con):
    for ref in (K1, K2, K3):
        apply(con, ref)
    before = tables(con)
    applied_at = con.execute("SELECT list(applied_at ORDER BY export_key)"
                             " FROM analytics.history_exports").fetchone()
    for ref in (K3, K1, K2):
        assert apply(con, ref) == "unchanged"
    assert tables(con) == before
    assert con.execute("SELECT list(applied_at ORDER BY export_key)"
                       " FROM analytics.history_exports").fetchone() == applied_at


def test_a_late_export_is_placed_by_its_date(con):
    assert apply(con, K1) == "appended"
    assert apply(con, K3) == "appended"
    # Without the February export, e never went missing: one version, no event.
    assert [row for row in con.execute(HISTORY_QUERY).fetchall() if row[0] == "e"] == [
        ("e", 1, D1, None, True, MTM, "DSL", "No", "Low", "New", "No", 3, None, K1.key)]
    assert apply(con, K2) == "rebuilt"
    assert con.execute(HISTORY_QUERY).fetchall() == HISTORY
    assert con.execute(LAST_SEEN_QUERY).fetchall() == LAST_SEEN
    assert con.execute(EVENTS_QUERY).fetchall() == EVENTS
    assert con.execute(retention_by_cohort_sql()).fetchall() == RETENTION


def test_a_second_export_of_a_date_supersedes_the_first(con):
    # A corrected February export: c did not change contract after all, f was not a customer.
    k2b = ExportRef("2026-02-17__00000000002b", D2, datetime(2026, 2, 17, 9, tzinfo=timezone.utc))
    corrected = [(k2b, c, *rest) for ref, c, *rest in ROWS if ref == K2 and c not in "cf"]
    corrected.append((k2b, "c", 3, 31, MTM, "DSL", "No", "Low", "Medium", "No"))
    con.execute("DROP TABLE export_rows")
    load_rows(con, ROWS + corrected)
    for ref in (K1, K2):
        apply(con, ref)
    assert apply(con, k2b) == "rebuilt"
    assert [row[:6] for row in con.execute(HISTORY_QUERY).fetchall() if row[0] == "c"] == [
        ("c", 1, D1, None, True, MTM)]
    assert "f" not in {row[0] for row in con.execute(HISTORY_QUERY).fetchall()}
    assert con.execute(LAST_SEEN_QUERY).fetchall() == [
        ("a", D2, 6), ("b", D2, 21), ("c", D2, 31), ("d", D2, 41), ("e", D1, 3)]
    assert con.execute(EXPORTS_QUERY).fetchall() == [
        (K1.key, D1, 5, 1, None), (K2.key, D2, None, None, k2b.key), (k2b.key, D2, 4, 0, None)]
    assert apply(con, K2) == "unchanged"  # the superseded one stays superseded


def test_missing_counts_only_from_the_configured_number_of_exports(con):
    # N = 2: missing from February alone is not churn; from February and March it is,
    # dated by February (when e was first missing) and detected in March.
    k3 = ExportRef("2026-03-24__00000000003c", D3, K3.arrived_at)
    without_e = [(k3, c, *rest) for ref, c, *rest in ROWS if ref == K3 and c != "e"]
    con.execute("DROP TABLE export_rows")
    load_rows(con, ROWS + without_e)
    apply(con, K1, missing=2)
    apply(con, K2, missing=2)
    e_rows = f"SELECT * FROM ({HISTORY_QUERY}) WHERE customer = 'e'"
    assert con.execute(e_rows).fetchall() == [
        ("e", 1, D1, None, True, MTM, "DSL", "No", "Low", "New", "No", 3, None, K1.key)]
    assert ("e", D1, 3) in con.execute(LAST_SEEN_QUERY).fetchall()
    assert "missing" not in {row[4] for row in con.execute(EVENTS_QUERY).fetchall()}
    apply(con, k3, missing=2)
    assert con.execute(e_rows).fetchall() == [
        ("e", 1, D1, D2, False, MTM, "DSL", "No", "Low", "New", "No", 3, "missing", K1.key)]
    assert [row for row in con.execute(EVENTS_QUERY).fetchall() if row[4] == "missing"] == [
        ("e", 1, D2, D3, "missing", 3, MTM, k3.key)]


def test_an_absent_customer_already_churned_is_closed_without_a_second_event(con):
    # b churned in February; absent in March, the version closes, the churn is not counted again.
    k3 = ExportRef("2026-03-24__00000000003d", D3, K3.arrived_at)
    without_b = [(k3, c, *rest) for ref, c, *rest in ROWS if ref == K3 and c != "b"]
    con.execute("DROP TABLE export_rows")
    load_rows(con, ROWS + without_b)
    for ref in (K1, K2, k3):
        apply(con, ref)
    b_rows = [row for row in con.execute(HISTORY_QUERY).fetchall() if row[0] == "b"]
    assert [(r[2], r[3], r[4], r[12]) for r in b_rows] == [
        (D1, D2, False, "change"), (D2, D3, False, "missing")]
    assert [row[4] for row in con.execute(EVENTS_QUERY).fetchall() if row[0] == "b"] == [
        "churn_flag"]


def test_a_failing_export_leaves_history_as_it_was(con):
    for ref in (K1, K2):
        apply(con, ref)
    before = tables(con)
    broken = ExportRef("2026-03-24__00000000bad0", D3, K3.arrived_at)
    with pytest.raises(PlatformError, match="00000000bad0"):
        apply(con, broken, rows=lambda ref: rows_for(K3).replace("EXCLUDE (export_key)",
                                                                 "EXCLUDE (export_key, churn)"))
    assert tables(con) == before
    assert apply(con, K3) == "appended"
    assert con.execute(HISTORY_QUERY).fetchall() == HISTORY


@pytest.mark.parametrize("missing", [0, -1])
def test_the_missing_threshold_is_at_least_one(con, missing):
    with pytest.raises(InputError, match="CHURN_MISSING_EXPORTS_FOR_CHURN"):
        apply(con, K1, missing=missing)


def test_history_from_real_csv_exports_joins_on_keyed_pseudonyms(tmp_path):
    """Two CSV exports through the real staging and transform SQL: history keys on the keyed
    pseudonym (never the id), and a second export with random pseudonyms would join nothing."""
    from churn_platform.core.pseudonymize import pseudonym
    from churn_platform_tests.conftest import HEADER, load_and_transform, write_csv

    key = b"history-test-key-0123456789abcdef"
    day1 = ["C1,40,Female,10,70.5,Month-to-Month,DSL,705.0,No,No",
            "C2,50,Male,30,20.0,One-Year,DSL,600.0,Yes,No",
            "C3,30,Male,2,20.0,Month-to-Month,DSL,40.0,No,No"]
    day2 = ["C1,40,Female,11,70.5,Two-Year,DSL,775.5,No,No",
            "C2,50,Male,31,20.0,One-Year,DSL,620.0,Yes,Yes"]
    refs = [ExportRef(f"2026-0{i}-01__00000000000{i}", date(2026, i, 1),
                      datetime(2026, i, 1, tzinfo=timezone.utc)) for i in (1, 2)]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    for ref, rows in zip(refs, (day1, day2)):
        load_and_transform(con, write_csv(tmp_path / f"{ref.key}.csv",
                                          "\n".join([HEADER, *rows]) + "\n"), key)
        apply_export(con, ref, lambda _: "SELECT * FROM analytics.customer_churn", 1)
    ids = {str(pseudonym(c, key)): c for c in ("C1", "C2", "C3")}
    history = [(ids[str(r[0])], *r[1:]) for r in con.execute(
        "SELECT anonymized_customer_id, valid_from, valid_to, contract_type, churn, closed_by"
        " FROM analytics.customer_history ORDER BY ALL").fetchall()]
    jan, feb = date(2026, 1, 1), date(2026, 2, 1)
    assert sorted(history) == [
        ("C1", jan, feb, MTM, "No", "change"), ("C1", feb, None, TWO, "No", None),
        ("C2", jan, feb, ONE, "No", "change"), ("C2", feb, None, ONE, "Yes", None),
        ("C3", jan, feb, MTM, "No", "missing")]
    events = [(ids[str(r[0])], *r[1:]) for r in con.execute(
        "SELECT anonymized_customer_id, event_date, rule, tenure FROM analytics.churn_events"
    ).fetchall()]
    assert sorted(events) == [("C2", feb, "churn_flag", 31), ("C3", feb, "missing", 2)]
    # A third export in random mode: not one pseudonym joins, everyone looks new and gone.
    ref3 = ExportRef("2026-03-01__000000000003", date(2026, 3, 1),
                     datetime(2026, 3, 1, tzinfo=timezone.utc))
    load_and_transform(con, tmp_path / f"{refs[1].key}.csv", None)
    apply_export(con, ref3, lambda _: "SELECT * FROM analytics.customer_churn", 1)
    assert con.execute(
        "SELECT count(*) FILTER (WHERE is_current AND valid_from = DATE '2026-03-01'),"
        " count(*) FILTER (WHERE closed_by = 'missing' AND valid_to = DATE '2026-03-01')"
        " FROM analytics.customer_history").fetchone() == (2, 2)


CHILD = """
import sys, time, duckdb
from churn_platform_tests.test_history import K1, K2, K3, ROWS, load_rows, rows_for
from churn_platform.core.history import apply_export
marker = sys.argv[2]
con = duckdb.connect(sys.argv[1])
load_rows(con, ROWS)
apply_export(con, K1, rows_for, 1)
apply_export(con, K3, rows_for, 1)
con.execute("CHECKPOINT")

def rows_then_hang(ref):
    if ref == K3:  # K1 and K2 are already rebuilt inside the transaction
        open(marker, "w").close()
        time.sleep(120)
    return rows_for(ref)

apply_export(con, K2, rows_then_hang, 1)
"""


def test_a_rebuild_killed_midway_leaves_the_last_history_and_resumes(tmp_path):
    import signal
    import subprocess
    import sys

    database, marker = tmp_path / "w.duckdb", tmp_path / "inside"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(database), str(marker)])
    try:
        for _ in range(600):
            if marker.exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the child never reached the middle of the rebuild"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with duckdb.connect(str(database)) as con:
        # As after K1 and K3: nothing of the half-done rebuild.
        assert [row[0] for row in con.execute(EXPORTS_QUERY).fetchall()] == [K1.key, K3.key]
        assert "missing" not in {row[4] for row in con.execute(EVENTS_QUERY).fetchall()}
        assert apply(con, K2) == "rebuilt"
        assert tables(con)["history"] == HISTORY
        assert con.execute(EVENTS_QUERY).fetchall() == EVENTS


def test_each_return_after_an_absence_opens_the_next_lifecycle(con):
    # e: seen in January, absent in February, back in March, absent in April, back in May.
    k4 = ExportRef("2026-04-21__000000000004", date(2026, 4, 21), K3.arrived_at)
    k5 = ExportRef("2026-05-19__000000000005", date(2026, 5, 19), K3.arrived_at)
    e_row = (MTM, "DSL", "No", "Low", "New", "No")
    later = [(k4, "a", 1, 8, MTM, "DSL", "No", "Medium", "New", "No"),
             (k5, "e", 1, 7, *e_row)]
    con.execute("DROP TABLE export_rows")
    load_rows(con, ROWS + later)
    for ref in (K1, K2, K3, k4, k5):
        apply(con, ref)
    assert [(r[1], r[2], r[3], r[12]) for r in con.execute(HISTORY_QUERY).fetchall()
            if r[0] == "e"] == [(1, D1, D2, "missing"), (2, D3, k4.export_date, "missing"),
                                (3, k5.export_date, None, None)]
    assert [(r[1], r[2], r[4]) for r in con.execute(EVENTS_QUERY).fetchall() if r[0] == "e"] == [
        (1, D2, "missing"), (2, k4.export_date, "missing")]


def test_applying_an_export_reads_no_closed_version_and_never_rewrites_one(con):
    """The cost rule: an export is applied against the per-customer table only. Closed versions
    are appended (by absence and by change) and neither read, updated nor deleted."""
    from churn_platform.core.history import apply_statements
    from churn_platform.core.tables import CLOSED_VERSIONS_TABLE, HISTORY_TABLE

    statements = apply_statements(K3, rows_for(K3), 1)
    closed = [s for s in statements if CLOSED_VERSIONS_TABLE in s]
    assert len(closed) == 2
    assert all(" ".join(s.split()).startswith(f"INSERT INTO {CLOSED_VERSIONS_TABLE} SELECT")
               and s.count(CLOSED_VERSIONS_TABLE) == 1 for s in closed)
    assert not [s for s in statements if HISTORY_TABLE in s]
    # Row identity: the versions closed after February are the same rows after March, in place.
    apply(con, K1)
    apply(con, K2)
    closed_sql = f"SELECT rowid, * FROM {CLOSED_VERSIONS_TABLE} ORDER BY rowid"
    after_february = con.execute(closed_sql).fetchall()
    assert sorted(str(r[1])[-1] for r in after_february) == ["b", "c", "e"]
    apply(con, K3)
    assert con.execute(closed_sql).fetchall()[:len(after_february)] == after_february


def test_the_first_sight_outlives_an_absence(con):
    """e's cohort is from its first sight (January, tenure 3), not its return in March."""
    for ref in (K1, K2, K3):
        apply(con, ref)
    assert con.execute(
        f"SELECT {ID}, first_seen_date, first_seen_tenure, lifecycle, is_current"
        " FROM analytics.customer_last_seen ORDER BY ALL").fetchall() == [
        ("a", D1, 5, 1, True), ("b", D1, 20, 1, True), ("c", D1, 30, 1, True),
        ("d", D1, 40, 1, True), ("e", D1, 3, 2, True), ("f", D2, 2, 1, True)]


def test_history_kept_as_one_updated_table_is_rebuilt_on_the_next_export(con):
    """A warehouse from before the closed versions moved apart: the next export rebuilds history
    from every export's rows, to the same hand-computed rows."""
    apply(con, K1)
    apply(con, K2)
    con.execute("CREATE TABLE old_history AS SELECT * FROM analytics.customer_history")
    con.execute("DROP VIEW analytics.customer_history")
    con.execute("DROP TABLE analytics.customer_versions_closed")
    con.execute("CREATE TABLE analytics.customer_history AS SELECT * FROM old_history")
    con.execute("CREATE OR REPLACE TABLE analytics.customer_last_seen AS SELECT"
                " anonymized_customer_id, last_seen_date, last_seen_tenure, lifecycle"
                " FROM analytics.customer_last_seen")
    assert apply(con, K3) == "rebuilt"
    assert con.execute(HISTORY_QUERY).fetchall() == HISTORY
    assert con.execute(EVENTS_QUERY).fetchall() == EVENTS
    assert con.execute(retention_by_cohort_sql()).fetchall() == RETENTION
    assert apply(con, K3) == "unchanged"


def test_retention_counts_a_version_closed_for_absence_until_its_first_missed_export(con):
    """e (cohort 2025-10), with N = 2: missing from February and March, so closed in March with
    valid_to February. Retained in January (open then), not in February (valid_to is exclusive,
    even though the closing came later) nor in March (no open version, not back)."""
    k3 = ExportRef("2026-03-24__00000000003c", D3, K3.arrived_at)
    without_e = [(k3, c, *rest) for ref, c, *rest in ROWS if ref == K3 and c != "e"]
    con.execute("DROP TABLE export_rows")
    load_rows(con, ROWS + without_e)
    for ref in (K1, K2, k3):
        apply(con, ref, missing=2)
    assert [row for row in con.execute(retention_by_cohort_sql()).fetchall()
            if row[0] == date(2025, 10, 1)] == [
        (date(2025, 10, 1), JAN, D1, 3, 1, 1, 100.0),
        (date(2025, 10, 1), FEB, D2, 4, 1, 0, 0.0),
        (date(2025, 10, 1), MAR, k3.export_date, 5, 1, 0, 0.0)]


def test_a_customer_closed_for_absence_who_stays_away_is_left_as_closed(con):
    """N = 1. April lists only a: b to f close for absence (c, d and e with an event; b and f had
    churned). May lists only a again: a's last sighting moves on; b to f keep theirs (March), get
    no second event and no second closed version."""
    k4 = ExportRef("2026-04-21__000000000004", date(2026, 4, 21), K3.arrived_at)
    k5 = ExportRef("2026-05-19__000000000005", date(2026, 5, 19), K3.arrived_at)
    a_row = (MTM, "DSL", "No", "Medium", "New", "No")
    con.execute("DROP TABLE export_rows")
    load_rows(con, ROWS + [(k4, "a", 1, 8, *a_row), (k5, "a", 1, 9, *a_row)])
    for ref in (K1, K2, K3, k4):
        apply(con, ref)
    april = tables(con)
    assert [r for r in april["events"] if r[7] == k4.key] == [
        ("c", 1, k4.export_date, k4.export_date, "missing", 32, ONE, k4.key),
        ("d", 1, k4.export_date, k4.export_date, "missing", 42, TWO, k4.key),
        ("e", 2, k4.export_date, k4.export_date, "missing", 5, MTM, k4.key)]
    assert [(r[0], r[3], r[12]) for r in april["history"] if r[3] == k4.export_date] == [
        (c, k4.export_date, "missing") for c in "bcdef"]
    apply(con, k5)
    may = tables(con)
    assert may["events"] == april["events"]
    assert may["history"] == april["history"]
    assert may["last_seen"] == [("a", k5.export_date, 9), ("b", D3, 21), ("c", D3, 32),
                                ("d", D3, 42), ("e", D3, 5), ("f", D3, 3)]
    assert con.execute(f"SELECT {ID}, is_current, lifecycle FROM analytics.customer_last_seen"
                       " ORDER BY ALL").fetchall() == [
        ("a", True, 1), ("b", False, 1), ("c", False, 1), ("d", False, 1), ("e", False, 2),
        ("f", False, 1)]
