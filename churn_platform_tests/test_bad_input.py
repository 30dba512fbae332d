"""Bad source files: each run fails naming the file and the problem, and the last good tables stay."""

import os
import shutil
import subprocess
import sys

import pytest

from churn_platform.core.source import staging_table
from churn_platform.core.tables import (
    ANALYTICS_TABLE,
    METRICS_TABLE,
    REJECTED_TABLE,
    STAGING_TABLE,
)
from churn_platform.defs.elt.assets import STAGING
from churn_platform_tests.conftest import HEADER, query, run_elt, write_csv, write_table

TABLES = (STAGING_TABLE, ANALYTICS_TABLE, REJECTED_TABLE, METRICS_TABLE)


@pytest.fixture
def good_run(tmp_path, sample_csv, warehouse):
    """A warehouse holding one good run, and a snapshot of its tables to compare against."""
    run_elt(sample_csv, warehouse)
    return {table: sorted(query(warehouse, f"SELECT * FROM {table}"), key=repr) for table in TABLES}


def assert_fails_and_keeps(bad_csv, warehouse, before, *expected, result=None):
    result = result or run_elt(bad_csv, warehouse, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message + (
        failure.step_failure_data.user_failure_data.description or ""
        if failure.step_failure_data.user_failure_data else "")
    assert str(bad_csv) in message
    for fragment in expected:
        assert fragment in message
    after = {table: sorted(query(warehouse, f"SELECT * FROM {table}"), key=repr) for table in TABLES}
    assert after == before
    return message


def test_missing_file(tmp_path, warehouse, good_run):
    assert_fails_and_keeps(tmp_path / "nowhere.csv", warehouse, good_run, "file not found")


def test_a_directory_instead_of_a_file(tmp_path, warehouse, good_run):
    assert_fails_and_keeps(tmp_path, warehouse, good_run, "is not a regular file")


def test_empty_file(tmp_path, warehouse, good_run):
    csv = write_csv(tmp_path / "empty.csv", "")
    assert_fails_and_keeps(csv, warehouse, good_run, "is empty")


def test_header_only_file(tmp_path, warehouse, good_run):
    csv = write_csv(tmp_path / "header.csv", HEADER + "\n")
    assert_fails_and_keeps(csv, warehouse, good_run, "has a header but no data rows")


def test_missing_required_columns_are_all_listed(tmp_path, warehouse, good_run):
    header = HEADER.replace("Age,", "").replace(",Churn", "").replace("Gender", "Sex")
    csv = write_csv(tmp_path / "cols.csv", header + "\nC1,Male,1,2,One-Year,DSL,2,Yes\n")
    assert_fails_and_keeps(csv, warehouse, good_run, "missing required columns: Age, Gender, Churn")


def test_wrong_delimiter(tmp_path, warehouse, good_run):
    csv = write_csv(tmp_path / "semi.csv", HEADER.replace(",", ";") + "\nC1;40;Male;1;2;One-Year;DSL;2;Yes;No\n")
    assert_fails_and_keeps(csv, warehouse, good_run, "looks delimited by ';'", "missing required columns")


def test_undecodable_bytes_in_the_header(tmp_path, warehouse, good_run):
    csv = tmp_path / "latin1-header.csv"
    csv.write_bytes(HEADER.encode() + b",Pr\xe9nom\nC1,40,Male,1,2,One-Year,DSL,2,Yes,No,x\n")
    assert_fails_and_keeps(csv, warehouse, good_run, "line 1 is not UTF-8", "0xe9")


def test_undecodable_bytes_in_a_data_row(tmp_path, warehouse, good_run):
    csv = tmp_path / "latin1.csv"
    csv.write_bytes(
        (HEADER + "\nC1,40,Male,1,2,One-Year,DSL,2,Yes,No\n").encode()
        + b"C2,40,F\xe9minin,1,2,One-Year,DSL,2,Yes,No\n"
    )
    message = assert_fails_and_keeps(csv, warehouse, good_run, "Line: 3", "not utf-8")
    assert "C2" not in message.replace(str(csv), "")  # the echoed source line is not repeated


def test_a_row_with_too_many_fields_names_its_line(tmp_path, warehouse, good_run):
    csv = write_csv(
        tmp_path / "ragged.csv",
        HEADER + "\nC1,40,Male,1,2,One-Year,DSL,2,Yes,No\nC2,40,Male,1,2,One-Year,DSL,2,Yes,No,extra\n",
    )
    assert_fails_and_keeps(csv, warehouse, good_run, "Line: 3", "Expected Number of Columns")


def test_unreadable_file(tmp_path, sample_csv):
    """Root reads any file; as root, the run goes in a child without the capabilities for that."""
    csv = tmp_path / "secret.csv"
    shutil.copy(sample_csv, csv)
    csv.chmod(0)
    code = ("import sys; from churn_platform.core.source import read_header\n"
            "try: read_header(sys.argv[1])\n"
            "except Exception as e: print(e.description); sys.exit(3)")
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    done = subprocess.run([*(drop if os.geteuid() == 0 else []), sys.executable, "-c", code, str(csv)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"{csv}: cannot be read (Permission denied)"


def test_bad_input_on_a_fresh_warehouse_creates_no_tables(tmp_path, warehouse):
    result = run_elt(tmp_path / "nowhere.csv", warehouse, raise_on_error=False)
    assert not result.success
    assert not warehouse.exists() or query(
        warehouse, "SELECT count(*) FROM information_schema.tables WHERE table_schema <> 'main'"
    ) == [(0,)]


def test_a_file_replaced_while_it_is_read(tmp_path, sample_csv, warehouse, good_run):
    csv = tmp_path / "source.csv"
    shutil.copy(sample_csv, csv)
    table = staging_table(csv)  # the header is read and checked here
    replacement = write_csv(tmp_path / "next.csv", HEADER + "\nC9,40,Male,1,2,One-Year,DSL,2,Yes,No\n")
    os.replace(replacement, csv)  # then the file is swapped before DuckDB reads the rows
    result = write_table(warehouse, STAGING, table, raise_on_error=False)
    assert_fails_and_keeps(csv, warehouse, good_run, "changed while it was being read", result=result)
