"""Write-audit-publish's rules on a real DuckDB, without Dagster: candidate names, which table a
run reads, what one publish swaps or merges, and the split's parity (the fast tests mutation
testing runs against core/publish.py; the Dagster runs are in test_publish.py)."""

import duckdb
import pytest

from churn_platform.core import publish as wap
from churn_platform.core.errors import PlatformError

RUN = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
OTHER = "ffffffff-eeee-dddd-cccc-bbbbbbbbbbbb"
MINE = "_candidate_0a1b2c3d4e5f_"  # the run's tag: its key without dashes, first 12 characters


@pytest.fixture
def conn(tmp_path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    connection.execute("CREATE SCHEMA staging; CREATE SCHEMA analytics")
    yield connection
    connection.close()


def names(conn, schema):
    return [r[0] for r in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY 1", [schema]
    ).fetchall()]


def rows(conn, table):
    return conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def test_a_candidate_is_named_by_the_first_12_characters_of_the_run_key_without_dashes():
    assert wap.run_tag(RUN) == "0a1b2c3d4e5f"
    assert wap.run_tag("abc") == "abc"
    assert wap.candidate_name("customer_churn", RUN) == MINE + "customer_churn"


def test_leftovers_of_other_runs_are_dropped_and_this_runs_candidates_kept(conn):
    conn.execute(f"CREATE TABLE staging.{MINE}customer_churn AS SELECT 1 AS a")
    conn.execute("CREATE TABLE staging._candidate_ffffffffeeee_customer_churn AS SELECT 2 AS a")
    conn.execute("CREATE TABLE analytics._candidate_ffffffffeeee_customer_churn AS SELECT 3 AS a")
    conn.execute("CREATE TABLE staging.customer_churn AS SELECT 4 AS a")
    conn.execute("CREATE TABLE staging.x_candidate_ffffffffeeee_t AS SELECT 5 AS a")
    assert wap.candidates(conn) == [
        ("analytics", "_candidate_ffffffffeeee_customer_churn"),
        ("staging", "_candidate_0a1b2c3d4e5f_customer_churn"),
        ("staging", "_candidate_ffffffffeeee_customer_churn"),
    ]
    assert wap.drop_leftovers(conn, RUN) == [
        "analytics._candidate_ffffffffeeee_customer_churn",
        "staging._candidate_ffffffffeeee_customer_churn",
    ]
    assert names(conn, "staging") == [f"{MINE}customer_churn", "customer_churn",
                                       "x_candidate_ffffffffeeee_t"]
    assert names(conn, "analytics") == []
    assert wap.drop_leftovers(conn, RUN) == []


def test_a_run_reads_its_own_candidate_else_the_published_table(conn):
    conn.execute("CREATE TABLE staging.customer_churn AS SELECT 1 AS a")
    assert wap.reading(conn, "staging.customer_churn", RUN) == '"staging"."customer_churn"'
    conn.execute(f"CREATE TABLE staging.{MINE}customer_churn AS SELECT 2 AS a")
    assert wap.reading(conn, "staging.customer_churn", RUN) == f'"staging"."{MINE}customer_churn"'
    assert wap.reading(conn, "staging.customer_churn", OTHER) == '"staging"."customer_churn"'
    assert wap.reading(conn, "staging.customer_churn", None) == '"staging"."customer_churn"'
    assert wap.reading(conn, "staging.customer_churn", "") == '"staging"."customer_churn"'


def test_a_history_reads_as_it_will_once_published(conn):
    table = "analytics.data_quality_metrics"
    candidate = f"analytics.{MINE}data_quality_metrics"
    # No candidate: the published history.
    conn.execute(f"CREATE TABLE {table} AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(s, v)")
    read = wap.history_reading(conn, table, "s", RUN)
    assert read == 'SELECT * FROM "analytics"."data_quality_metrics"'
    assert rows(conn, f"({read})") == [(1, "a"), (2, "b")]
    # A candidate: its snapshot replaces the published one of the same key, others stay.
    conn.execute(f"CREATE TABLE {candidate} AS SELECT * FROM (VALUES (2, 'B'), (3, 'c')) t(s, v)")
    assert rows(conn, f"({wap.history_reading(conn, table, 's', RUN)})") == [
        (1, "a"), (2, "B"), (3, "c")]
    # A candidate and no published history yet: the candidate alone.
    conn.execute(f"DROP TABLE {table}")
    read = wap.history_reading(conn, table, "s", RUN)
    assert read == f'SELECT * FROM "analytics"."{MINE}data_quality_metrics"'
    assert rows(conn, f"({read})") == [(2, "B"), (3, "c")]


def test_tables_maps_a_name_it_does_not_hold_to_itself():
    t = wap.Tables({"a.b": "a.c"})
    assert t["a.b"] == "a.c" and t["x.y"] == "x.y"


def test_publish_swaps_candidates_merges_histories_and_leaves_the_rest(conn):
    conn.execute("CREATE TABLE staging.customer_churn AS SELECT 'old' AS v")
    conn.execute(f"CREATE TABLE staging.{MINE}customer_churn AS SELECT 'new' AS v, 7 AS n")
    conn.execute("CREATE TABLE analytics.customer_churn AS SELECT 'kept' AS v")
    conn.execute("CREATE TABLE analytics.data_quality_metrics AS"
                 " SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(snapshot_id, v)")
    conn.execute(f"CREATE TABLE analytics.{MINE}data_quality_metrics AS"
                 " SELECT 2 AS snapshot_id, 'B' AS v")
    seen = []
    published = wap.publish(conn, [("staging.customer_churn", None),
                                   ("analytics.customer_churn", None),
                                   ("analytics.data_quality_metrics", "snapshot_id")],
                            RUN, lambda c, done: seen.append(list(done)))
    assert seen == [["staging.customer_churn", "analytics.data_quality_metrics"]]
    assert published == [
        wap.Published("staging.customer_churn", 1, [("v", "VARCHAR"), ("n", "INTEGER")]),
        wap.Published("analytics.data_quality_metrics", 2,
                      [("snapshot_id", "INTEGER"), ("v", "VARCHAR")]),
    ]
    assert rows(conn, "staging.customer_churn") == [("new", 7)]
    assert rows(conn, "analytics.customer_churn") == [("kept",)]
    assert rows(conn, "analytics.data_quality_metrics") == [(1, "a"), (2, "B")]
    assert names(conn, "staging") == ["customer_churn"]
    assert names(conn, "analytics") == ["customer_churn", "data_quality_metrics"]


def test_a_candidate_published_where_nothing_was_before_becomes_the_table(conn):
    conn.execute(f"CREATE TABLE analytics.{MINE}churn_by_segment AS SELECT 5 AS snapshot_id")
    conn.execute(f"CREATE TABLE staging.{MINE}customer_churn AS SELECT 1 AS a")
    wap.publish(conn, [("staging.customer_churn", None),
                       ("analytics.churn_by_segment", "snapshot_id")], RUN, lambda c, d: None)
    assert rows(conn, "analytics.churn_by_segment") == [(5,)]
    assert rows(conn, "staging.customer_churn") == [(1,)]


def test_a_verify_that_raises_keeps_the_previous_set_whole(conn):
    conn.execute("CREATE TABLE staging.customer_churn AS SELECT 'old' AS v")
    conn.execute(f"CREATE TABLE staging.{MINE}customer_churn AS SELECT 'new' AS v")

    def refuse(c, done):
        assert rows(c, "staging.customer_churn") == [("new",)]  # it sees the set as it will be
        raise PlatformError("no")

    with pytest.raises(PlatformError, match="no"):
        wap.publish(conn, [("staging.customer_churn", None)], RUN, refuse)
    assert rows(conn, "staging.customer_churn") == [("old",)]
    assert rows(conn, f"staging.{MINE}customer_churn") == [("new",)]


def split(conn, staging, analytics, rejected):
    for table, source_rows in (("staging.customer_churn", staging),
                               ("analytics.customer_churn", analytics),
                               ("analytics.rejected_rows", rejected)):
        if source_rows is None:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            continue
        conn.execute(f"CREATE OR REPLACE TABLE {table} (source_row BIGINT)")
        for r in source_rows:
            conn.execute(f"INSERT INTO {table} VALUES (?)", [r])


def test_parity_names_the_staging_rows_in_neither_table_up_to_the_sample(conn):
    split(conn, [1, 2, 3, 4, 5, 6, 7, 8], [1, 9], [2])
    parity = wap.split_parity(conn, "staging.customer_churn", "analytics.customer_churn",
                              "analytics.rejected_rows", sample=3)
    assert parity == wap.Parity(8, 2, 1, [3, 4, 5])
    assert not parity.holds
    counts = wap.split_parity(conn, "staging.customer_churn", "analytics.customer_churn",
                              "analytics.rejected_rows", sample=3, counts_only=True)
    assert counts == wap.Parity(8, 2, 1, [])


@pytest.mark.parametrize("parity, holds", [
    (wap.Parity(3, 2, 1, []), True),
    (wap.Parity(3, 2, 0, []), False),
    (wap.Parity(3, 3, 1, []), False),
    (wap.Parity(3, 2, 1, [7]), False),
])
def test_parity_holds_when_staging_is_analytics_plus_rejected_with_none_unaccounted(parity,
                                                                                    holds):
    assert parity.holds is holds


ALL = ["staging.customer_churn", "analytics.customer_churn", "analytics.rejected_rows"]


@pytest.mark.parametrize("tables, published", [
    ([None, None, None], ["analytics.data_quality_metrics"]),  # the split untouched
    ([[1], None, None], ["staging.customer_churn"]),  # staging alone in a new warehouse
    ([[1, 2], [1], [2]], ALL),
    ([[1, 2], [1], [2]], ["analytics.customer_churn"]),
])
def test_a_split_that_holds_or_is_untouched_is_published(conn, tables, published):
    split(conn, *tables)
    wap.verify_split(conn, published)


def test_a_split_missing_a_table_is_refused_naming_it(conn):
    split(conn, [1], [1], None)
    with pytest.raises(PlatformError, match=r"^publishing analytics.customer_churn would leave"
                                            r" analytics.rejected_rows missing beside"):
        wap.verify_split(conn, ["analytics.customer_churn"])
    split(conn, None, [1], [2])
    with pytest.raises(PlatformError, match="would leave staging.customer_churn missing"):
        wap.verify_split(conn, ["analytics.customer_churn"])


def test_a_split_out_of_parity_is_refused_with_its_counts(conn):
    # All three published: counts compared (equal counts, a wrong row, still pass).
    split(conn, [1, 2], [1], [3])
    wap.verify_split(conn, ALL)
    split(conn, [1, 2, 4], [1], [2])
    with pytest.raises(PlatformError, match=r"staging 3 rows, analytics 1, rejected 1,"
                                            r" unaccounted source_rows none\."):
        wap.verify_split(conn, ALL)
    # Only some published: checked row by row.
    split(conn, [1, 2], [1], [3])
    with pytest.raises(PlatformError, match=r"would break row_count_parity: staging 2 rows,"
                                            r" analytics 1, rejected 1, unaccounted"
                                            r" source_rows \[2\]"):
        wap.verify_split(conn, ["analytics.customer_churn"])


def test_the_refusals_say_what_was_published_what_is_missing_and_what_to_do(conn):
    split(conn, None, [1], None)
    with pytest.raises(PlatformError) as raised:
        wap.verify_split(conn, ["analytics.customer_churn", "analytics.rejected_rows"])
    assert str(raised.value) == (
        "publishing analytics.customer_churn, analytics.rejected_rows would leave"
        " analytics.rejected_rows, staging.customer_churn missing beside the rest of the split."
        " Materialize staging, analytics and rejected rows together, or run churn_elt_job."
        " Nothing was published.")
    split(conn, [1, 2, 3, 4, 5, 6, 7, 8], [1], [])
    with pytest.raises(PlatformError) as raised:
        wap.verify_split(conn, ["analytics.customer_churn", "analytics.churn_by_segment"])
    assert str(raised.value) == (  # five unaccounted rows named, no more
        "publishing analytics.customer_churn, analytics.churn_by_segment would break"
        " row_count_parity: staging 8 rows, analytics 1, rejected 0, unaccounted source_rows"
        " [2, 3, 4, 5, 6]. Materialize staging, analytics and rejected rows together, or run"
        " churn_elt_job. Nothing was published; the previous tables stay.")
