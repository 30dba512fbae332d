"""The whole asset graph through `dg.materialize`, on the shipped sample and on the real dataset."""

import csv

import dagster as dg
import duckdb
import pytest

from churn_platform.core.fields import FIELDS
from churn_platform.core.tables import METRICS_TABLE, SEGMENT_TABLE
from churn_platform.core.warehouse import quote_ident
from churn_platform.defs.elt.assets import (
    ANALYTICS,
    METRICS,
    PUBLISHED,
    REJECTED,
    SEGMENTS,
    STAGING,
)
from churn_platform_tests.conftest import (
    HEADER,
    load_and_transform,
    query,
    run_elt,
    write_csv,
)


def read_source(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_the_sample_runs_end_to_end_and_every_check_passes(sample_csv, warehouse):
    result = run_elt(sample_csv, warehouse)
    assert result.success
    checks = check_results(result)
    assert {"row_count_parity", "pseudonyms_unique_and_present", "no_nulls_in_cleaned_columns",
            "categories_accepted", "numeric_ranges", "rejections_explained",
            "churn_rate_drift"} <= set(checks)
    assert all(c.passed for c in checks.values()), {n: c.metadata for n, c in checks.items()}
    source = read_source(sample_csv)
    [(staged, typed, rejected)] = query(
        warehouse,
        "SELECT (SELECT count(*) FROM staging.customer_churn),"
        " (SELECT count(*) FROM analytics.customer_churn),"
        " (SELECT count(*) FROM analytics.rejected_rows)",
    )
    assert staged == len(source) == 1000
    assert typed + rejected == staged and rejected > 0  # the sample carries a few bad values


def test_staging_is_lossless_text_with_its_origin(sample_csv, warehouse):
    run_elt(sample_csv, warehouse, selection=[STAGING])
    source = read_source(sample_csv)
    columns = list(source[0])
    selected = ", ".join(quote_ident(c) for c in columns)
    rows = query(
        warehouse,
        f"SELECT {selected}, source_file, source_row FROM staging.customer_churn ORDER BY source_row",
    )
    assert [dict(zip(columns, r[:-2])) for r in rows] == source
    assert {r[-2] for r in rows} == {str(sample_csv.resolve())}
    assert [r[-1] for r in rows] == list(range(2, len(source) + 2))
    types = query(warehouse, "SELECT DISTINCT data_type FROM information_schema.columns"
                             " WHERE table_name = 'customer_churn' AND table_schema = 'staging'"
                             " AND column_name NOT IN ('load_timestamp', 'source_row')")
    assert types == [("VARCHAR",)]


@pytest.mark.slow
def test_source_row_keeps_file_order_in_a_file_read_in_parallel(tmp_path):
    """1M rows (45 MB): DuckDB reads them in chunks on every core and writes row groups in any
    order; each row must still carry its own line number, and the rejected row its own."""
    rows = [f"K{i},40,Male,3,50,One-Year,DSL,150,Yes,No" for i in range(1_000_000)]
    rows[777_777] = rows[777_777].replace(",40,", ",forty,")
    csv_path = write_csv(tmp_path / "big.csv", "\n".join([HEADER, *rows]) + "\n")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        load_and_transform(conn, csv_path)
        load_and_transform(conn, csv_path)  # again, on a connection that has written unordered
        misplaced = conn.execute(
            "SELECT count(*) FROM staging.customer_churn WHERE CustomerID <> 'K' || (source_row - 2)"
        ).fetchone()
        analytics = conn.execute(
            "SELECT count(*), min(source_row), max(source_row) FROM analytics.customer_churn"
        ).fetchone()
        rejected = conn.execute("SELECT source_row, column_name FROM analytics.rejected_rows").fetchall()
    assert misplaced == (0,)
    assert analytics == (999_999, 2, 1_000_001)
    assert rejected == [(777_779, "Age")]


def test_loading_the_same_file_twice_gives_the_same_staging_table(sample_csv, warehouse):
    sql = "SELECT * EXCLUDE (load_timestamp) FROM staging.customer_churn ORDER BY source_row"
    run_elt(sample_csv, warehouse, selection=[STAGING])
    first = query(warehouse, sql)
    run_elt(sample_csv, warehouse, selection=[STAGING])
    assert query(warehouse, sql) == first


def test_the_real_dataset_is_typed_as_its_readme_describes(real_csv, warehouse):
    assert run_elt(real_csv, warehouse).success
    assert query(warehouse, "SELECT count(*) FROM analytics.rejected_rows") == [(0,)]
    counts = dict(query(warehouse, "SELECT internet_service, count(*) FROM analytics.customer_churn GROUP BY 1"))
    assert counts["None"] == 297  # the word None is a category, kept
    contracts = dict(query(warehouse, "SELECT contract_type, count(*) FROM analytics.customer_churn GROUP BY 1"))
    assert contracts == {"Month-to-Month": 511, "One-Year": 289, "Two-Year": 200}
    assert query(warehouse, "SELECT DISTINCT tenure_category FROM analytics.customer_churn"
                            " WHERE tenure = 0") == [("New",)]
    assert query(warehouse, "SELECT count(*) FROM analytics.customer_churn WHERE tenure = 0") == [(51,)]
    [(churn_rate, total)] = query(warehouse, f"SELECT churn_rate_percent, total_records FROM {METRICS_TABLE}")
    assert (churn_rate, total) == (88.3, 1000)  # 883 Yes of 1000


def test_metrics_count_missing_cells_and_duplicates_as_the_source_has_them(sample_csv, warehouse):
    run_elt(sample_csv, warehouse)
    source = read_source(sample_csv)
    [row] = query(warehouse, f"SELECT * FROM {METRICS_TABLE}")
    names = [r[0] for r in query(warehouse, f"DESCRIBE {METRICS_TABLE}")]
    metrics = dict(zip(names, row))
    for field in FIELDS:
        expected = sum(1 for r in source if not r[field.source_column].strip())
        assert metrics[f"missing_{field.name}"] == expected, field.name
    ids = [r["CustomerID"] for r in source]
    assert metrics["duplicate_customer_ids"] == len(ids) - len(set(ids))
    assert all(metrics[f"missing_{f.name}"] > 0 for f in FIELDS[1:])  # the sample has gaps everywhere
    rejected = query(warehouse, "SELECT count(*) FROM analytics.rejected_rows")[0][0]
    assert metrics["rejected_rows"] == rejected
    assert metrics["total_records"] == metrics["analytics_records"] + rejected


def test_each_run_appends_one_snapshot_to_the_history(sample_csv, warehouse):
    first = run_elt(sample_csv, warehouse)
    second = run_elt(sample_csv, warehouse)
    snapshots = query(warehouse, f"SELECT snapshot_id FROM {METRICS_TABLE} ORDER BY snapshot_at")
    assert snapshots == [(first.run_id,), (second.run_id,)]
    per_run = query(warehouse, f"SELECT snapshot_id, count(*) FROM {SEGMENT_TABLE} GROUP BY 1 ORDER BY 1")
    assert sorted(per_run) == sorted([(first.run_id, 9), (second.run_id, 9)])


def test_materializations_carry_row_counts_schema_and_a_churn_preview(sample_csv, warehouse):
    result = run_elt(sample_csv, warehouse)
    by_key = {e.materialization.asset_key: e.materialization for e in
              result.get_asset_materialization_events()}
    assert set(by_key) == {STAGING, ANALYTICS, REJECTED, SEGMENTS, METRICS, PUBLISHED}
    staging_rows = query(warehouse, "SELECT count(*) FROM staging.customer_churn")[0][0]
    assert by_key[STAGING].metadata["dagster/row_count"].value == staging_rows
    schema = by_key[ANALYTICS].metadata["dagster/column_schema"].value
    assert "anonymized_customer_id" in [c.name for c in schema.columns]
    metrics = by_key[METRICS].metadata
    assert "Month-to-Month" in metrics["churn_by_contract"].value
    churn = query(warehouse, f"SELECT churn_rate_percent FROM {METRICS_TABLE}")[0][0]
    assert metrics["churn_rate_percent"].value == churn  # plotted by the UI across runs


def test_no_customer_id_leaves_staging(sample_csv, warehouse):
    result = run_elt(sample_csv, warehouse)
    ids = {r["CustomerID"] for r in read_source(sample_csv)}
    outside = []
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for (table,) in conn.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()"
                                     " WHERE schema_name <> 'staging'").fetchall():
            outside += [str(v) for row in conn.execute(f"SELECT * FROM {table}").fetchall() for v in row]
    outside += [repr(e) for e in result.all_events]
    assert not any(customer in text for text in outside for customer in ids if len(customer) > 3)


def test_a_failing_blocking_check_stops_the_downstream_assets(sample_csv, warehouse):
    run_elt(sample_csv, warehouse)
    with duckdb.connect(str(warehouse)) as conn:  # rows lost from analytics, none rejected
        lost = conn.execute("DELETE FROM analytics.customer_churn WHERE age > 60").fetchone()[0]
    assert lost > 0
    result = run_elt(sample_csv, warehouse, selection=[REJECTED, SEGMENTS, METRICS],
                     raise_on_error=False)
    parity = check_results(result)["row_count_parity"]
    assert not parity.passed
    assert parity.metadata["difference"].value == lost
    materialized = {e.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {REJECTED}
    assert query(warehouse, f"SELECT count(*) FROM {METRICS_TABLE}") == [(1,)]


@pytest.mark.parametrize("key", [None, "a-key-long-and-varied-enough-for-the-check"])
def test_pseudonym_mode_follows_the_environment(sample_csv, warehouse, monkeypatch, key):
    if key:
        monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", key)
    else:
        monkeypatch.delenv("CHURN_PSEUDONYMIZATION_KEY", raising=False)
    sql = "SELECT anonymized_customer_id FROM analytics.customer_churn ORDER BY source_row"
    run_elt(sample_csv, warehouse)
    first = query(warehouse, sql)
    run_elt(sample_csv, warehouse)
    assert (query(warehouse, sql) == first) is bool(key)
