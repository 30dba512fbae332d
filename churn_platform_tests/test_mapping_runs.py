"""The platform on a company's own export, through real `materialize()` runs on real DuckDB files:
a differently named and spelled Latin-1 export, a source lacking optional fields, a bad mapping
that touches no table, and lineage from staging to the mapping that loaded it."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from churn_platform.core import settings
from churn_platform.core.mapping import DEFAULT_MAPPING
from churn_platform.core.settings import PROJECT_ROOT
from churn_platform.defs.elt.assets import ANALYTICS, METRICS, REJECTED, SEGMENTS
from churn_platform_tests.conftest import HEADER, query, run_elt, write_csv
from churn_platform_tests.export_support import pg_rows, platform_defs, run_job
from churn_platform_tests.public_copy import public_copy

EXAMPLES = PROJECT_ROOT / "examples"
CRM_MAPPING = EXAMPLES / "crm_export_mapping.yaml"

# The example a user runs from docs/source-mapping.md, shipped in examples/: a CRM export with a
# line above the header, lower-case and spaced names, numeric and true/false booleans, other
# spellings, blanks (space, tab, no-break space) for numbers, Latin-1 text with CRLF, a quoted
# delimiter, columns the platform does not use, and one contract spelled `Monthly` (rejected).
CRM_ROWS = (EXAMPLES / "crm_export.csv").read_bytes().decode("latin-1").splitlines()
CRM_IDS = [row.split(";")[0] for row in CRM_ROWS[2:]]


@pytest.fixture
def crm_export(tmp_path, monkeypatch) -> Path:
    """The shipped export, copied, and CHURN_SOURCE_MAPPING pointing at its mapping."""
    path = tmp_path / "crm_export.csv"
    shutil.copyfile(EXAMPLES / "crm_export.csv", path)
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(CRM_MAPPING))
    return path


def metadata_of(result, node: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in materialization.metadata.items()}


def test_crm_export_is_typed_through_its_mapping(crm_export, warehouse):
    result = run_elt(crm_export, warehouse)
    assert result.success
    analytics = query(warehouse, """
        SELECT source_row, gender, age, tenure, monthly_charges, contract_type, internet_service,
               total_charges, tech_support, churn, churn_flag, tenure_category
        FROM analytics.customer_churn ORDER BY source_row""")
    assert analytics == [
        (3, "Female", None, 1, 29.85, "Month-to-Month", "DSL", 29.85, "No", "No", 0, "New"),
        (4, "Male", None, 34, 56.95, "One-Year", "DSL", 1889.5, "Yes", "No", 0, "Medium"),
        (5, "Male", None, 2, 53.85, "Month-to-Month", "DSL", 108.15, "No", "Yes", 1, "New"),
        (6, "Female", None, 45, 42.3, "One-Year", "DSL", 1840.75, "Yes", "Yes", 1, "Long"),
        (7, "Female", None, 2, 70.7, "Month-to-Month", "Fiber Optic", 151.65, "No", "Yes", 1,
         "New"),
        (8, "Female", None, 8, 99.65, "Month-to-Month", "Fiber Optic", 820.5, "No", "Yes", 1,
         "New"),
        (9, "Female", None, 0, 20.25, "Two-Year", "None", 0.0, "No", "No", 0, "New"),
        (10, "Female", None, 0, 52.55, "Two-Year", "DSL", 0.0, "No", "No", 0, "New"),
        (11, "Male", None, 16, 18.95, "Two-Year", "None", 326.8, "No", "No", 0, "Medium"),
        (13, "Male", None, 0, 103.7, "Month-to-Month", "Fiber Optic", 0.0, "No", "Yes", 1, "New"),
    ]
    # A spelling no alias covers is rejected with its reason, under the export's column name.
    assert query(warehouse, "SELECT source_row, column_name, reason, offending_value"
                            " FROM analytics.rejected_rows") == [
        (12, "Contract", "not an accepted value (Month-to-Month, One-Year, Two-Year)", "Monthly")
    ]
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_crm_export_staging_keeps_every_column_and_the_mapping_hash(crm_export, warehouse):
    result = run_elt(crm_export, warehouse)
    sha256 = hashlib.sha256(CRM_MAPPING.read_bytes()).hexdigest()
    staging_columns = [r[0] for r in query(
        warehouse, "SELECT column_name FROM information_schema.columns"
                   " WHERE table_schema = 'staging' ORDER BY ordinal_position")]
    assert staging_columns == [
        *CRM_ROWS[1].split(";"), "load_timestamp", "source_file", "source_row",
        "source_mapping_sha256",
    ]
    assert query(warehouse, """
        SELECT "Région", "Account Manager", "TotalCharges", source_mapping_sha256
        FROM staging.customer_churn WHERE source_row IN (3, 10) ORDER BY source_row""") == [
        ("Île-de-France", "Müller; José", "29.85", sha256),
        ("Köln", "Ana", "\u00a0", sha256),
    ]
    analytics_columns = {r[0] for r in query(
        warehouse, "SELECT column_name FROM information_schema.columns"
                   " WHERE table_schema = 'analytics' AND table_name = 'customer_churn'")}
    assert not analytics_columns & {"SeniorCitizen", "Région", "Account Manager", "Customer ID"}
    staging = metadata_of(result, "staging__customer_churn")
    assert staging["source_mapping"] == str(CRM_MAPPING.resolve())
    assert staging["source_mapping_sha256"] == sha256
    assert staging["absent_fields"] == "age"
    assert staging["columns_kept_in_staging_only"] == "SeniorCitizen, Région, Account Manager"


def test_crm_export_metrics_and_checks_report_the_absent_field(crm_export, warehouse):
    result = run_elt(crm_export, warehouse)
    assert query(warehouse, """
        SELECT total_records, analytics_records, rejected_rows, churn_rate_percent,
               missing_age, missing_tenure, missing_total_charges, missing_gender, absent_fields
        FROM analytics.data_quality_metrics""") == [(11, 10, 1, 50.0, None, 1, 3, 0, "age")]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    for name in ("no_nulls_in_cleaned_columns", "numeric_ranges", "categories_accepted"):
        assert checks[name].passed
        assert checks[name].metadata["absent fields (not checked)"].value == "age"
    assert "age: observed range" not in checks["numeric_ranges"].metadata


def test_no_customer_id_of_the_export_leaves_staging(crm_export, warehouse):
    result = run_elt(crm_export, warehouse)
    tables = [".".join(key.path) for key in (ANALYTICS, REJECTED, SEGMENTS, METRICS)]
    text = " ".join(str(query(warehouse, f"SELECT * FROM {table}")) for table in tables)
    for node in ("staging__customer_churn", "analytics__customer_churn",
                 "analytics__rejected_rows", "analytics__data_quality_metrics"):
        text += str(metadata_of(result, node))
    text += " ".join(str(c.metadata) for c in result.get_asset_check_evaluations())
    text += " ".join(str(event.message) for event in result.all_events)
    assert "Monthly" in text  # the haystack holds the rejected value, so it is the real one
    assert [i for i in CRM_IDS if i in text] == []


def test_a_source_with_only_the_required_fields(tmp_path, warehouse, monkeypatch):
    csv = write_csv(tmp_path / "minimal.csv", "cust_no,churned\nA-1,yes\nA-2,NO\nA-3, \n")
    mapping = tmp_path / "minimal.yaml"
    mapping.write_text("fields:\n  customer_id: cust_no\n  churn: churned\n")
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(mapping))
    result = run_elt(csv, warehouse)
    assert result.success
    # Constant defaults fill the absent fields; statistics of values nobody sent stay NULL.
    assert query(warehouse, """
        SELECT DISTINCT age, gender, tenure, monthly_charges, contract_type, internet_service,
               total_charges, tech_support, tenure_category, monthly_charges_category
        FROM analytics.customer_churn""") == [
        (None, "Unknown", 0, None, "Month-to-Month", "None", 0.0, "No", "New", None)
    ]
    assert query(warehouse, "SELECT churn FROM analytics.customer_churn ORDER BY source_row") == [
        ("Yes",), ("No",), ("No",)
    ]
    absent = "age, gender, tenure, monthly_charges, contract_type, internet_service," \
             " total_charges, tech_support"
    assert query(warehouse, """
        SELECT missing_customer_id, missing_churn, missing_age, missing_tech_support,
               avg_monthly_charges, absent_fields
        FROM analytics.data_quality_metrics""") == [(0, 1, None, None, None, absent)]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values()), {n: c.metadata for n, c in checks.items()}
    no_nulls = checks["no_nulls_in_cleaned_columns"]
    assert no_nulls.metadata["absent fields (not checked)"].value == absent


def test_a_bad_mapping_fails_the_run_and_leaves_the_last_good_tables(
    sample_csv, tmp_path, warehouse, monkeypatch
):
    assert run_elt(sample_csv, warehouse).success
    snapshot_sql = """
        SELECT (SELECT count(*) FROM staging.customer_churn),
               (SELECT max(load_timestamp) FROM staging.customer_churn),
               (SELECT count(*) FROM analytics.customer_churn),
               (SELECT count(*) FROM analytics.rejected_rows),
               (SELECT count(*) FROM analytics.data_quality_metrics)"""
    before = query(warehouse, snapshot_sql)
    mapping = tmp_path / "bad.yaml"
    mapping.write_text("fields:\n  customer_id: CustomerID\n  tenur: Tenure\n"
                       "  contract_type: {column: Contract, aliases: {Monthly: Month}}\n")
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(mapping))
    result = run_elt(sample_csv, warehouse, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    for problem in ("fields.tenur: unknown field", "'Monthly' -> 'Month' names no category",
                    "fields.churn: required", "missing required columns: Contract"):
        assert problem in message
    assert query(warehouse, snapshot_sql) == before


def test_analytics_refuses_staging_loaded_with_another_mapping(
    sample_csv, tmp_path, warehouse, monkeypatch
):
    assert run_elt(sample_csv, warehouse).success
    renamed = tmp_path / "renamed.yaml"  # the same columns, so only the hash tells them apart
    renamed.write_text("# a copy\n" + DEFAULT_MAPPING.read_text())
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(renamed))
    result = run_elt(sample_csv, warehouse, selection=[ANALYTICS], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "materialize staging/customer_churn again" in failure.event_specific_data.error.message
    assert run_elt(sample_csv, warehouse).success  # the whole job reloads staging first


def test_analytics_refuses_staging_loaded_before_mappings_existed(sample_csv, warehouse):
    assert run_elt(sample_csv, warehouse).success
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("ALTER TABLE staging.customer_churn DROP COLUMN source_mapping_sha256")
    result = run_elt(sample_csv, warehouse, selection=[REJECTED], raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "(sha256 unknown, now " in failure.event_specific_data.error.message


def test_a_bom_and_a_preamble_under_utf8(tmp_path, warehouse, monkeypatch):
    csv = tmp_path / "bom.csv"
    csv.write_bytes(b"\xef\xbb\xbf# exported\n" + HEADER.encode() + b"\nC-1,30,Female,5,20.5,"
                    b"One-Year,DSL,102.5,Yes,No\n")
    mapping = tmp_path / "preamble.yaml"
    mapping.write_text(DEFAULT_MAPPING.read_text().replace("header_row: 1", "header_row: 2"))
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(mapping))
    assert run_elt(csv, warehouse).success
    assert query(warehouse, "SELECT source_row, age, contract_type FROM analytics.customer_churn") \
        == [(3, 30, "One-Year")]


def test_a_bom_before_the_header_is_not_part_of_the_first_column_name(tmp_path, warehouse):
    csv = tmp_path / "bom.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"\r\nC-1,30,Female,5,20.5,One-Year,DSL,"
                    b"102.5,Yes,No\r\n")
    assert run_elt(csv, warehouse).success
    assert query(warehouse, 'SELECT "CustomerID" FROM staging.customer_churn') == [("C-1",)]


def test_metrics_history_from_before_mappings_gains_the_new_column(sample_csv, warehouse):
    assert run_elt(sample_csv, warehouse).success
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("ALTER TABLE analytics.data_quality_metrics DROP COLUMN absent_fields")
    assert run_elt(sample_csv, warehouse).success
    assert query(warehouse, "SELECT absent_fields FROM analytics.data_quality_metrics"
                            " ORDER BY snapshot_at") == [(None,), ("",)]


SOURCE_MAPPING_DOC = PROJECT_ROOT / "docs" / "source-mapping.md"


def _example_section() -> str:
    text = SOURCE_MAPPING_DOC.read_text()
    return text.split("## A complete example", 1)[1].split("\n## ", 1)[0]


def test_the_documented_example_is_the_shipped_export_and_mapping():
    section = _example_section()
    export = section.split("```\n", 2)[1]  # the first fenced block: the export's first lines
    assert export.splitlines() == CRM_ROWS[: len(export.splitlines())]
    assert f"```yaml\n{CRM_MAPPING.read_text()}```" in section


def test_the_documented_commands_run_as_written_on_a_fresh_copy(tmp_path):
    """Every ```sh block of the example, pasted into a shell in a fresh copy of the project."""
    section = _example_section()
    commands = "\n".join(block.split("\n", 1)[1].split("```", 1)[0]
                         for block in section.split("```sh")[1:])
    assert ".venv/bin/dagster job execute" in commands and "DAGSTER_HOME=" in commands
    copy = public_copy(tmp_path, with_venv=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHURN_", "DAGSTER_")) and k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # no venv on PATH: the doc says .venv/bin/ itself
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output
    assert "telemetry" not in output.lower()  # DAGSTER_HOME is the project's instance
    assert "not an accepted value" in done.stdout and "Monthly" in done.stdout
    warehouse = copy / "data" / "churn_warehouse.duckdb"
    assert query(warehouse, "SELECT count(*) FROM analytics.customer_churn") == [(10,)]
    with dg.DagsterInstance.from_config(str(copy / "dagster_home")) as instance:
        assert [r.job_name for r in instance.get_runs()] == ["churn_elt_job"]  # shows in the UI


def test_metrics_of_a_source_lacking_fields_export_to_postgres(tmp_path, pg_dsn, monkeypatch):
    csv = write_csv(tmp_path / "minimal.csv", "cust_no,churned,plan\nA-1,yes,x\nA-2,,y\n")
    mapping = tmp_path / "minimal.yaml"
    mapping.write_text("fields:\n  customer_id: cust_no\n  churn: churned\n")
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(mapping))
    monkeypatch.setenv(settings.METRICS_DSN_ENV, pg_dsn)
    defs = platform_defs(tmp_path / "warehouse.duckdb", csv)
    with dg.instance_for_test() as instance:
        assert run_job(defs, "churn_elt_job", instance).success
        assert run_job(defs, "metrics_export_job", instance).success
    # Absent fields count no missing cells and have no series of their own.
    assert pg_rows(pg_dsn, "SELECT missing_cells FROM churn_metrics.data_quality_snapshots") == [
        (1,)
    ]
    assert pg_rows(pg_dsn, "SELECT column_name, missing_count FROM churn_metrics.missing_values"
                           " ORDER BY 1") == [("churn", 1), ("customer_id", 0)]
