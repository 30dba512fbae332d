"""Each asset check fails on the damage it exists to catch, and says where (source_row, counts)."""

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from churn_platform.core.mapping import load_mapping
from churn_platform.core.settings import DEFAULT_SOURCE_MAPPING, SAMPLE_CSV
from churn_platform.core.tables import METRICS_TABLE
from churn_platform.defs.elt import checks
from churn_platform.defs.warehouse_io import WarehouseResource
from churn_platform_tests.conftest import run_elt
from churn_platform_tests.location import defs


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """One good run's warehouse, built once for the module; tests damage copies of it."""
    database = tmp_path_factory.mktemp("good_run") / "warehouse.duckdb"
    assert run_elt(SAMPLE_CSV, database).success
    return database


@pytest.fixture
def built(good_run, warehouse):
    """A copy of the good run's warehouse, and the resource the checks read it with."""
    shutil.copyfile(good_run, warehouse)
    assert not good_run.with_name(good_run.name + ".wal").exists()  # the copy is the whole database
    return warehouse, WarehouseResource(database=str(warehouse))


def damage(database, *statements):
    with duckdb.connect(str(database)) as conn:
        for statement in statements:
            conn.execute(statement)


def first_row(database):
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute("SELECT min(source_row) FROM analytics.customer_churn").fetchone()[0]


def evaluate(check, resource: WarehouseResource) -> dg.AssetCheckResult:
    """One check of the split, as the split_checks step runs it (with the default mapping)."""
    with resource.get_connection() as conn:
        return check(conn, load_mapping(DEFAULT_SOURCE_MAPPING))


def test_every_check_passes_on_a_good_run(built):
    _, resource = built
    for check in checks.SPLIT_CHECKS:
        assert evaluate(check, resource).passed, check.__name__
    assert checks.churn_rate_drift(warehouse=resource).passed


def test_the_split_checks_run_as_one_step_parity_blocking():
    specs = {spec.name: spec for spec in checks.split_checks.check_specs}
    assert list(specs) == [check.__name__ for check in checks.SPLIT_CHECKS]
    assert [name for name, spec in specs.items() if spec.blocking] == ["row_count_parity"]
    steps = {node.name for node in defs.resolve_job_def("churn_elt_job").graph.nodes}
    assert "split_checks" in steps and not steps & set(specs)


def test_no_nulls_names_the_column_and_the_rows(built):
    database, resource = built
    row = first_row(database)
    damage(database, f"UPDATE analytics.customer_churn SET age = NULL WHERE source_row = {row}")
    result = evaluate(checks.no_nulls_in_cleaned_columns, resource)
    assert not result.passed
    assert result.metadata["age: rows"].value == 1
    assert result.metadata["age: first source_rows"].value == str(row)


def test_categories_catch_an_unknown_value_a_wrong_band_and_a_wrong_flag(built):
    database, resource = built
    damage(
        database,
        "UPDATE analytics.customer_churn SET contract_type = 'Weekly' WHERE source_row IN"
        " (SELECT source_row FROM analytics.customer_churn ORDER BY source_row LIMIT 2)",
        "UPDATE analytics.customer_churn SET tenure_category = NULL WHERE tenure = 0",
        "UPDATE analytics.customer_churn SET churn_flag = 1 - churn_flag WHERE source_row ="
        " (SELECT max(source_row) FROM analytics.customer_churn)",
    )
    result = evaluate(checks.categories_accepted, resource)
    assert not result.passed
    assert result.metadata["contract_type: rows"].value == 2
    assert "tenure_category: rows" in result.metadata
    assert result.metadata["churn_flag: rows"].value == 1


def test_numeric_ranges_catch_a_negative_tenure(built):
    database, resource = built
    row = first_row(database)
    damage(database, f"UPDATE analytics.customer_churn SET tenure = -5 WHERE source_row = {row}")
    result = evaluate(checks.numeric_ranges, resource)
    assert not result.passed
    assert result.metadata["tenure: first source_rows"].value == str(row)
    assert result.metadata["tenure: observed range"].value.startswith("-5 ..")


def test_pseudonyms_catch_missing_and_shared_ones(built):
    database, resource = built
    damage(
        database,
        "UPDATE analytics.customer_churn SET anonymized_customer_id = NULL WHERE source_row ="
        " (SELECT min(source_row) FROM analytics.customer_churn)",
        "UPDATE analytics.customer_churn SET anonymized_customer_id ="
        " '00000000-0000-0000-0000-000000000001' WHERE source_row IN (SELECT source_row FROM"
        " analytics.customer_churn ORDER BY source_row LIMIT 3 OFFSET 1)",
    )
    result = evaluate(checks.pseudonyms_unique_and_present, resource)
    assert not result.passed
    assert result.metadata["missing pseudonyms"].value == 1
    assert result.metadata["pseudonyms shared by customers"].value == 1


def test_parity_names_the_unaccounted_rows(built):
    database, resource = built
    row = first_row(database)
    damage(database, f"DELETE FROM analytics.customer_churn WHERE source_row = {row}")
    result = evaluate(checks.row_count_parity, resource)
    assert not result.passed
    assert result.metadata["difference"].value == 1
    assert result.metadata["unaccounted source_rows"].value == str(row)


def test_parity_catches_a_row_counted_twice(built):
    database, resource = built
    damage(database, "INSERT INTO analytics.rejected_rows SELECT * FROM analytics.rejected_rows LIMIT 1")
    assert not evaluate(checks.row_count_parity, resource).passed
    assert not evaluate(checks.rejections_explained, resource).passed


def test_rejections_must_give_a_reason(built):
    database, resource = built
    damage(database, "UPDATE analytics.rejected_rows SET reason = NULL")
    result = evaluate(checks.rejections_explained, resource)
    assert not result.passed and result.metadata["rows without reason"].value > 0


def history(database, rates, sources=None):
    """Replace the metrics history with snapshots of the given churn rates, oldest first, each
    from the given source file (all the same one by default)."""
    damage(database, f"DELETE FROM {METRICS_TABLE}")
    sources = sources or ["data/customer_churn_data.csv"] * len(rates)
    with duckdb.connect(str(database)) as conn:
        for hour, (rate, source) in enumerate(zip(rates, sources, strict=True)):
            conn.execute(
                f"INSERT INTO {METRICS_TABLE} (snapshot_id, snapshot_at, churn_rate_percent,"
                " source_file) VALUES (?, TIMESTAMP '2026-01-01' + to_hours(?), ?, ?)",
                [f"run-{hour}", hour, rate, source],
            )


def test_churn_drift_is_quiet_without_enough_history(built):
    database, resource = built
    history(database, [20.0, 80.0])
    result = checks.churn_rate_drift(warehouse=resource)
    assert result.passed and "nothing to compare" in result.metadata["note"].value


def test_churn_drift_passes_within_two_standard_deviations(built):
    database, resource = built
    history(database, [25.0, 26.0, 24.0, 25.5, 25.0])
    assert checks.churn_rate_drift(warehouse=resource).passed


def test_churn_drift_warns_beyond_two_standard_deviations(built):
    database, resource = built
    history(database, [25.0, 26.0, 24.0, 25.5, 40.0])
    result = checks.churn_rate_drift(warehouse=resource)
    assert not result.passed
    assert result.severity.value == "WARN"
    assert result.metadata["churn_rate_percent"].value == 40.0


def test_churn_drift_does_not_judge_a_new_source_by_another_sources_history(built):
    """Your own CSV loaded after the sample's flat history: not compared with it."""
    database, resource = built
    history(database, [25.0, 26.0, 24.0, 25.5, 40.0], ["sample.csv"] * 4 + ["crm_export.csv"])
    result = checks.churn_rate_drift(warehouse=resource)
    assert result.passed and "nothing to compare" in result.metadata["note"].value
    assert result.metadata["source_file"].value == "crm_export.csv"
    assert result.metadata["snapshots of other sources (not compared)"].value == 4


def test_churn_drift_compares_a_source_with_its_own_history_whatever_came_between(built):
    database, resource = built
    history(database, [25.0, 26.0, 90.0, 24.0, 25.5, 40.0],
            ["a.csv", "a.csv", "b.csv", "a.csv", "a.csv", "a.csv"])
    result = checks.churn_rate_drift(warehouse=resource)
    assert not result.passed  # 40 against a's 25 ± 0.8, b's 90 left out
    assert result.metadata["earlier snapshots"].value == 4
    assert result.metadata["historical mean"].value == 25.12


def test_in_landing_mode_drift_compares_an_export_with_the_earlier_exports_once_each(
        built, tmp_path, monkeypatch):
    """Every export is its own file: the source is the folder. Re-runs of an export (the hourly
    schedule) count once, the current export's own re-runs not at all."""
    database, resource = built
    folder = tmp_path / "landing"
    monkeypatch.setenv("CHURN_LANDING_DIR", str(folder))
    exports = [str(folder.resolve() / f"crm_2026-01-0{d}.csv") for d in range(1, 6)]
    rates = [25.0, 25.0, 26.0, 24.0, 24.0, 24.0, 25.5, 40.0]
    sources = [exports[0], exports[0], exports[1], exports[2], exports[2], exports[2], exports[3],
               exports[4]]
    history(database, rates, sources)
    result = checks.churn_rate_drift(warehouse=resource)
    assert not result.passed  # 40 against the four earlier exports' 25.12 ± 0.85
    assert result.metadata["earlier snapshots"].value == 4
    assert result.metadata["historical mean"].value == 25.12
    # Within the band: passes; and the current export's earlier re-runs are not its history.
    history(database, [25.0, 26.0, 24.0, 25.5, 25.5, 25.5],
            [exports[0], exports[1], exports[2], exports[4], exports[4], exports[4]])
    result = checks.churn_rate_drift(warehouse=resource)
    assert result.passed and result.metadata["earlier snapshots"].value == 3
    # A file outside the folder is another source, as in single-file mode.
    history(database, [25.0, 26.0, 24.0, 40.0], [exports[0], exports[1], exports[2], "own.csv"])
    result = checks.churn_rate_drift(warehouse=resource)
    assert result.passed and "nothing to compare" in result.metadata["note"].value
