"""Hostile or broken input files (security review, findings 5 and 7): a FIFO, a device, a symlink
loop, an oversized or alias-bombed mapping, a header too long to read. Each fails promptly, once,
naming the file; none is retried as if it were transient, none blocks a run."""

import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

from churn_platform.core.mapping import (
    DEFAULT_MAPPING,
    MAPPING_MAX_BYTES,
    MAPPING_MAX_DEPTH,
    MappingError,
    read_mapping,
)
from churn_platform.core.source import HEADER_MAX_BYTES, SourceFileError, read_header
from churn_platform.defs.elt.assets import ANALYTICS
from churn_platform.defs.elt.jobs import churn_elt_job
from churn_platform.defs.model.jobs import churn_model_job
from churn_platform.defs.resources import build_resources
from churn_platform.defs.warehouse_io import PUBLISHED
from churn_platform.defs.runs import RETRY_POLICY
from churn_platform_tests.conftest import HEADER, query, write_csv
from churn_platform_tests.location import defs as location_defs

READ_IN_CHILD = """
import sys
from churn_platform.core.errors import InputError
from churn_platform.core.mapping import read_mapping
try:
    read_mapping(sys.argv[1])
except InputError as error:
    print(error.description)
    sys.exit(3)
"""


def _limit_memory():  # a child that tried to read /dev/zero whole dies instead of eating the host
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def read_mapping_in_child(path: Path | str) -> str:
    """read_mapping in a child with a deadline: a FIFO or a device must not block or exhaust it."""
    try:
        done = subprocess.run([sys.executable, "-c", READ_IN_CHILD, str(path)], capture_output=True,
                              text=True, timeout=60, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading the mapping {path} did not return within 60 s")
    assert done.returncode == 3, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "mapping.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def loop(tmp_path) -> Path:
    """A symlink loop: a.yaml -> b.yaml -> a.yaml."""
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    return tmp_path / "a.yaml"


def test_a_fifo_as_the_mapping_fails_at_once(fifo):
    message = read_mapping_in_child(fifo)
    assert str(fifo) in message and "is not a regular file" in message


@pytest.mark.parametrize("path", ["/dev/zero", "/"])
def test_a_device_or_a_directory_as_the_mapping_is_refused(path):
    message = read_mapping_in_child(path)
    assert f"source mapping {path}" in message and "is not a regular file" in message


def test_a_symlink_loop_as_the_mapping_names_it(loop):
    with pytest.raises(MappingError) as error:
        read_mapping(loop)
    assert str(loop) in error.value.description
    assert "Too many levels of symbolic links" in error.value.description


def test_a_file_whose_read_fails_is_a_mapping_error():
    """/proc/self/mem is a regular file by fstat, and reading it from offset 0 fails (EIO)."""
    with pytest.raises(MappingError, match="cannot be read"):
        read_mapping("/proc/self/mem")


def test_the_mapping_size_cap_on_both_sides(tmp_path):
    text = DEFAULT_MAPPING.read_bytes()
    at_cap = tmp_path / "at-cap.yaml"
    at_cap.write_bytes(text + b"#" * (MAPPING_MAX_BYTES - len(text) - 1) + b"\n")
    assert at_cap.stat().st_size == MAPPING_MAX_BYTES
    assert read_mapping(at_cap)[1] == []
    over = tmp_path / "over.yaml"
    over.write_bytes(text + b"#" * (MAPPING_MAX_BYTES - len(text)) + b"\n")
    with pytest.raises(MappingError, match="larger than 1 MiB") as error:
        read_mapping(over)
    assert str(over) in error.value.description


def test_yaml_aliases_are_refused_even_small_ones(tmp_path):
    """An alias bomb (a billion laughs) in csv.header_row reached 2.9 GB: no alias is accepted."""
    path = tmp_path / "alias.yaml"
    path.write_text("csv:\n  header_row: &h 1\nfields:\n  customer_id: CustomerID\n"
                    "  churn: Churn\n  age: *h\n")
    with pytest.raises(MappingError, match=r"YAML aliases \(\*h\) are not accepted") as error:
        read_mapping(path)
    assert str(path) in error.value.description


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\ncsv: {header_row: *a8}\nfields: {churn: c}\n")
    message = read_mapping_in_child(path)
    assert "YAML aliases (*a0) are not accepted" in message


def nested(depth: int) -> str:
    """A mapping `depth` nodes deep: the document, `fields:`, lists, and a scalar innermost."""
    lists = depth - 3
    return "fields:\n  churn: c\n  customer_id: " + "[" * lists + "x" + "]" * lists + "\n"


def test_nesting_depth_on_both_sides_of_the_limit(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text(nested(MAPPING_MAX_DEPTH))
    _, problems = read_mapping(deep)  # parsed: its problem is the entry, not the depth
    assert problems == ["fields.customer_id: expected a column name or a mapping with `column`"
                        " or `absent`"]
    deep.write_text(nested(MAPPING_MAX_DEPTH + 1))
    with pytest.raises(MappingError, match=f"nested deeper than {MAPPING_MAX_DEPTH} levels"):
        read_mapping(deep)


def test_20000_deep_nesting_is_a_mapping_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "abyss.yaml"
    path.write_text("fields: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(MappingError, match="nested deeper than"):
        read_mapping(path)


# The header: its read is bounded, and a field too long for Python's csv module is named.

def test_the_header_line_cap_on_both_sides(tmp_path):
    name = "c" * 100_000  # under the csv module's field limit (131,072)
    fits = ",".join([name + str(i) for i in range(10)])
    line = fits + "," + "x" * (HEADER_MAX_BYTES - len(fits) - 2) + "\n"
    assert len(line) == HEADER_MAX_BYTES
    at_cap = tmp_path / "at-cap.csv"
    at_cap.write_text(line)
    assert len(read_header(at_cap)) == 11
    over = tmp_path / "over.csv"
    over.write_text(line[:-1] + "x\n")
    with pytest.raises(SourceFileError, match="line 1 is longer than 1 MiB") as error:
        read_header(over)
    assert str(over) in error.value.description


def test_a_long_preamble_line_is_bounded_too(tmp_path):
    csv = tmp_path / "preamble.csv"
    csv.write_text("#" * (HEADER_MAX_BYTES + 1) + "\n" + HEADER + "\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(DEFAULT_MAPPING.read_text().replace("header_row: 1", "header_row: 2"))
    dialect = read_mapping(mapping)[0].dialect
    with pytest.raises(SourceFileError, match="line 1 is longer than 1 MiB"):
        read_header(csv, dialect)


def test_a_header_field_over_the_csv_field_limit_names_the_file(tmp_path):
    csv = write_csv(tmp_path / "wide.csv", HEADER + ',"' + "w" * 140_000 + '"\n')
    with pytest.raises(SourceFileError, match="line 1, the header, has a field longer") as error:
        read_header(csv)
    assert str(csv) in error.value.description


def test_a_fifo_as_the_csv_is_refused(tmp_path):
    path = tmp_path / "source.csv"
    os.mkfifo(path)
    with pytest.raises(SourceFileError, match="is not a regular file"):
        read_header(path)


# Real runs of the job with its retry policy: each input problem is one attempt, named.

def run_job_with_retries(database: Path, csv: Path | str, mapping: Path | str | None = None,
                         selection=churn_elt_job.selection):
    """churn_elt_job (or another `selection`) as deployed, with its retries, without the 5-minute
    delay between attempts."""
    job = dg.define_asset_job(
        "job", selection=selection,
        op_retry_policy=dg.RetryPolicy(max_retries=RETRY_POLICY.max_retries),
    )
    defs = dg.Definitions(
        assets=location_defs.assets, asset_checks=location_defs.asset_checks, jobs=[job],
        executor=location_defs.executor,
        resources=build_resources(str(database), str(csv), mapping and str(mapping),
                                  str(database.parent / "models")),
    )
    with dg.instance_for_test() as instance:
        return defs.resolve_job_def("job").execute_in_process(
            instance=instance, raise_on_error=False)


def one_attempt_failure(result) -> str:
    """The one failure's message, after checking nothing was retried."""
    assert not result.success
    assert "STEP_UP_FOR_RETRY" not in [e.event_type_value for e in result.all_events]
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    starts = [e for e in result.all_events if e.event_type_value == "STEP_START"]
    assert [e.step_key for e in starts].count(failure.step_key) == 1
    data = failure.step_failure_data
    return data.error.message + (data.user_failure_data.description or ""
                                 if data.user_failure_data else "")


def test_a_real_run_on_hostile_input_fails_once(tmp_path, sample_csv, loop, fifo):
    """Each case is a real run with a retry policy: one attempt, a message naming the file."""
    wide = write_csv(tmp_path / "wide.csv", HEADER + ',"' + "w" * 140_000 + '"\n')
    long_line = write_csv(tmp_path / "long.csv", "x" * (2 * HEADER_MAX_BYTES) + "\n")
    csv_loop = tmp_path / "loop.csv"
    csv_loop.symlink_to(csv_loop)
    alias = tmp_path / "alias.yaml"
    alias.write_text("csv: {header_row: &h 1}\nfields: {customer_id: CustomerID, churn: *h}\n")
    cases = [
        (wide, None, wide, "has a field longer"),
        (long_line, None, long_line, "longer than 1 MiB"),
        (csv_loop, None, csv_loop, "Too many levels of symbolic links"),
        (sample_csv, loop, loop, "Too many levels of symbolic links"),
        (sample_csv, fifo, fifo, "is not a regular file"),
        (sample_csv, alias, alias, "YAML aliases (*h) are not accepted"),
    ]
    # Should a run block on the FIFO, a writer opened after 60 s lets it end (and the test fail).
    guard = threading.Timer(60, lambda: os.close(os.open(fifo, os.O_WRONLY)))
    guard.start()
    try:
        for csv, mapping, named, problem in cases:
            result = run_job_with_retries(tmp_path / "w.duckdb", csv, mapping)
            message = one_attempt_failure(result)
            assert str(named) in message and problem in message, (named, message)
    finally:
        guard.cancel()


def test_a_weak_key_fails_the_run_once_and_keeps_the_last_good_tables(
    tmp_path, sample_csv, monkeypatch
):
    database = tmp_path / "w.duckdb"
    assert run_job_with_retries(database, sample_csv).success
    tables = ("staging.customer_churn", "analytics.customer_churn")
    before = [query(database, f"SELECT * FROM {t} ORDER BY source_row") for t in tables]
    monkeypatch.setenv("CHURN_PSEUDONYMIZATION_KEY", "hunter2")
    result = run_job_with_retries(database, sample_csv)
    message = one_attempt_failure(result)
    assert "CHURN_PSEUDONYMIZATION_KEY is too weak" in message and "token_urlsafe" in message
    assert "hunter2" not in message
    # Refused before staging is loaded: nothing of the run is written.
    assert not result.get_asset_materialization_events()
    assert [query(database, f"SELECT * FROM {t} ORDER BY source_row") for t in tables] == before


def test_out_of_memory_names_the_setting_that_limits_it(tmp_path, monkeypatch):
    """A 10,010-column file failed at 1GB with DuckDB's words alone: 3,000 columns at 16MB."""
    extra = 3000
    row = "C1,40,Male,1,2,One-Year,DSL,2,Yes,No" + ",v" * extra + "\n"
    csv = write_csv(tmp_path / "wide.csv", HEADER + "".join(f",x{i}" for i in range(extra))
                    + "\n" + row * 3)
    monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", "16MB")
    message = one_attempt_failure(run_job_with_retries(tmp_path / "w.duckdb", csv))
    assert "Out of Memory Error" in message and str(csv) in message
    assert "DuckDB's memory limit is CHURN_DUCKDB_MEMORY_LIMIT, now 16MB: raise it" in message
    monkeypatch.setenv("CHURN_DUCKDB_MEMORY_LIMIT", "1GB")  # as the message says: it loads
    assert run_job_with_retries(tmp_path / "w.duckdb", csv).success


@pytest.mark.parametrize("selection, missing, asset", [
    (churn_model_job.selection, "analytics.customer_churn", "analytics/customer_churn"),
    ([ANALYTICS, PUBLISHED], "staging.customer_churn", "staging/customer_churn"),
], ids=["model training", "analytics without staging"])
def test_an_input_never_written_fails_once_saying_what_to_materialize(
    tmp_path, sample_csv, selection, missing, asset
):
    """The model trained, or analytics refreshed without staging, on a new warehouse: one
    attempt naming the missing table (not three, five minutes apart); once the ELT has run, the
    same job runs."""
    database = tmp_path / "w.duckdb"
    message = one_attempt_failure(run_job_with_retries(database, sample_csv, selection=selection))
    assert message.endswith(f"{missing} does not exist yet in this warehouse: materialize {asset}"
                            " (and what it is built from) first"), message
    assert run_job_with_retries(database, sample_csv).success
    assert run_job_with_retries(database, sample_csv, selection=selection).success
