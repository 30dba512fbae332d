"""Source mappings read and checked: the default is the original schema, and every problem in a
mapping or in the header it is checked against is reported at once, before anything is written."""

import dataclasses
import hashlib
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from churn_platform.core.fields import FIELDS, FIELDS_BY_NAME
from churn_platform.core.mapping import (
    DEFAULT_MAPPING,
    Dialect,
    MappingError,
    load_mapping,
    normalize,
    read_mapping,
)
from churn_platform.core.settings import PROJECT_ROOT
from churn_platform.core.source import (
    SourceFileError,
    check_header,
    read_header,
    staging_table,
)
from churn_platform.core.transform import cell, problem, typed_value
from churn_platform.defs.resources import ChurnSource
from churn_platform_tests.conftest import HEADER, write_csv


def write_mapping(tmp_path: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(error: pytest.ExceptionInfo) -> list[str]:
    return [line[2:] for line in error.value.description.splitlines() if line.startswith("- ")]


@pytest.fixture
def churn_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "export.csv", "cust,churned,plan\nA-1,Yes,Gold\n")


def test_default_mapping_is_the_original_schema():
    mapping = load_mapping(DEFAULT_MAPPING)
    assert mapping.fields == FIELDS  # same columns, no aliases, nothing absent
    assert mapping.dialect == Dialect(",", '"', "utf-8", 1)
    assert mapping.sha256 == hashlib.sha256(DEFAULT_MAPPING.read_bytes()).hexdigest()
    assert mapping.is_default and mapping.absent == ()


def test_crm_fixture_mapping_binds_columns_aliases_and_dialect():
    mapping = load_mapping(PROJECT_ROOT / "examples" / "crm_export_mapping.yaml")
    assert mapping.dialect == Dialect(";", '"', "latin-1", 2)
    assert mapping.absent == ("age",)
    assert mapping.field("customer_id").source_column == "Customer ID"
    assert dict(mapping.field("contract_type").aliases) == {
        "one year": "One-Year", "two year": "Two-Year"
    }
    # YAML 1.1 would read 1/0/True/False/No as numbers and booleans; a mapping keeps them text.
    assert dict(mapping.field("churn").aliases) == {
        "1": "Yes", "0": "No", "true": "Yes", "false": "No"
    }
    assert dict(mapping.field("internet_service").aliases) == {"no": "None"}


def test_normalize_ignores_case_and_blank_runs():
    assert normalize("  Fiber \t\u00a0 OPTIC ") == "fiber optic"
    assert normalize("Month-to-month") == normalize("MONTH-TO-MONTH")


def test_fields_left_out_are_absent_and_only_id_and_churn_are_required(tmp_path):
    mapping = load_mapping(write_mapping(tmp_path, "fields:\n  customer_id: cust\n  churn: c\n"))
    assert mapping.absent == tuple(f.name for f in FIELDS if f.name not in ("customer_id", "churn"))
    explicit = load_mapping(write_mapping(
        tmp_path, "fields:\n  customer_id: cust\n  churn: c\n  age: {absent: true}\n", "b.yaml"))
    assert "age" in explicit.absent


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fields:\n  customer_id: id\n  churn: c\n  tenur: t\n",
         "fields.tenur: unknown field (known: customer_id, age"),
        ("fields:\n  customer_id: id\n", "fields.churn: required, map it to a source column"),
        ("fields:\n  customer_id: id\n  churn: {absent: true}\n",
         "fields.churn: required, map it to a source column"),
        ("fields:\n  customer_id: id\n  churn:\n    column: c\n    aliases: {Y: Churned}\n",
         "fields.churn.aliases: 'Y' -> 'Churned' names no category of churn (accepted: Yes, No)"),
        ("fields:\n  customer_id: id\n  churn: c\n  tenure: {column: t, aliases: {new: '0'}}\n",
         "fields.tenure.aliases: tenure is a integer, only category fields take aliases"),
        ("fields:\n  customer_id: id\n  churn:\n    column: c\n    aliases: {'yes': 'No'}\n",
         "fields.churn.aliases: 'yes' is already the category 'Yes'"),
        ("fields:\n  customer_id: id\n  churn:\n    column: c\n    aliases: {y: Yes, ' Y ': No}\n",
         "fields.churn.aliases: ' Y ' maps to both 'Yes' and 'No'"),
        ("fields:\n  customer_id: id\n  churn: {colum: c}\n",
         "fields.churn.colum: unknown key (expected column, aliases or absent)"),
        ("fields:\n  customer_id: id\n  churn: {column: c, absent: true}\n",
         "fields.churn: has both `column` and `absent`; choose one"),
        ("fields:\n  customer_id: id\n  churn: c\n  age: {absent: maybe}\n",
         "fields.age.absent: expected `true`, got 'maybe'"),
        ("fields:\n  customer_id: id\n  churn: c\n  age: [a, b]\n",
         "fields.age: expected a column name or a mapping with `column` or `absent`"),
        ("fields:\n  customer_id: id\n  churn: c\n  age:\n", "fields.age: empty column name"),
        ("fields:\n  customer_id: id\n  churn: {aliases: {Y: 'Yes'}}\n",
         "fields.churn: expected `column: <source column>` or `absent: true`"),
        ("fields:\n  customer_id: id\n  churn: {column: c, aliases: {Y: [Yes]}}\n",
         "fields.churn.aliases: expected text on both sides, got 'Y': ['Yes']"),
        ("fields:\n  customer_id: id\n  churn: {column: c, aliases: [Y]}\n",
         "fields.churn.aliases: expected `source spelling: category` pairs"),
        ("fields:\n  customer_id: x\n  churn: x\n",
         "fields: column 'x' is mapped to more than one field"),
        ("source: crm\nfields:\n  customer_id: id\n  churn: c\n",
         "source: unknown section (expected csv and fields)"),
        ("csv:\n  encoding: cp1252\nfields:\n  customer_id: id\n  churn: c\n",
         "csv.encoding: 'cp1252' is not supported (utf-8, with or without BOM, or latin-1)"),
        ("csv:\n  delimiter: ';;'\nfields:\n  customer_id: id\n  churn: c\n",
         "csv.delimiter: expected one character, got ';;'"),
        ("csv:\n  delimiter: \"'\"\n  quote: \"'\"\nfields:\n  customer_id: id\n  churn: c\n",
         "csv: delimiter and quote must differ"),
        ("csv:\n  header_row: 0\nfields:\n  customer_id: id\n  churn: c\n",
         "csv.header_row: expected a line number from 1, got '0'"),
        ("csv:\n  sep: ';'\nfields:\n  customer_id: id\n  churn: c\n",
         "csv.sep: unknown key (expected delimiter, quote, encoding or header_row)"),
        ("csv: semicolons\nfields:\n  customer_id: id\n  churn: c\n",
         "csv: expected a mapping of delimiter, quote, encoding, header_row"),
    ],
)
def test_each_mapping_problem_is_named(tmp_path, text, problem):
    path = write_mapping(tmp_path, text)
    _, problems = read_mapping(path)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    assert str(path) in error.value.description and problem in error.value.description


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fields: [a]\n", "expected a YAML mapping with a `fields:` section"),
        ("csv: {}\n", "expected a YAML mapping with a `fields:` section"),
        ("fields: {customer_id: [\n", "cannot be read as YAML"),
    ],
)
def test_a_mapping_that_is_not_a_mapping_fails_at_once(tmp_path, text, problem):
    path = write_mapping(tmp_path, text)
    with pytest.raises(MappingError, match=problem):
        read_mapping(path)


def test_a_missing_mapping_file_names_the_variable(tmp_path):
    with pytest.raises(MappingError, match="file not found .*CHURN_SOURCE_MAPPING"):
        read_mapping(tmp_path / "nowhere.yaml")


def test_every_problem_of_mapping_and_header_is_reported_at_once(tmp_path, churn_csv):
    mapping = write_mapping(tmp_path, """
fields:
  customer_id: cust
  tenur: tenure
  contract_type: {column: Contract, aliases: {Annual: Yearly}}
""")
    with pytest.raises(MappingError) as error:
        staging_table(churn_csv, mapping)
    problems = problems_of(error)
    assert str(mapping) in error.value.description.splitlines()[0]
    assert [p.split(":")[0] for p in problems] == [
        "fields.tenur", "fields.contract_type.aliases", "fields.churn", str(churn_csv.resolve())
    ]
    assert problems[-1].endswith("missing required columns: Contract")


def test_header_problems_name_the_file_and_hint_at_near_names(tmp_path):
    csv = write_csv(tmp_path / "export.csv", "CUST ,Churned,churned,source_row,,x\n1,Yes,Yes,1,,\n")
    mapping = write_mapping(tmp_path, "fields:\n  customer_id: cust\n  churn: churn\n")
    with pytest.raises(SourceFileError) as error:
        staging_table(csv, mapping)
    message = error.value.description
    assert message.startswith(f"{csv.resolve()}: missing required columns:")
    assert "cust (the header has 'CUST ')" in message
    assert "churn (the header has" not in message  # a near name is one that folds equal
    assert "columns named more than once (DuckDB ignores case): Churned, churned" in message
    assert "columns named like those staging adds: source_row" in message
    assert "header columns without a name, by position: 5" in message
    assert f"(source mapping {mapping.resolve()})" in message


def test_header_row_past_the_end_and_blank_header_line(tmp_path):
    mapping = write_mapping(
        tmp_path, "csv: {header_row: 3}\nfields:\n  customer_id: a\n  churn: b\n"
    )
    short = write_csv(tmp_path / "short.csv", "preamble\na,b\n")
    past_the_end = r"short.csv: has no line 3 \(the mapping's csv.header_row\)"
    with pytest.raises(SourceFileError, match=past_the_end):
        staging_table(short, mapping)
    blank = write_csv(tmp_path / "blank.csv", "preamble\nmore\n\na,b\n")
    with pytest.raises(SourceFileError, match="blank.csv: line 3, the header, is empty"):
        staging_table(blank, mapping)


def test_a_single_column_header_suggests_the_delimiter_it_seems_to_use(tmp_path):
    mapping = write_mapping(
        tmp_path, "csv: {delimiter: ';'}\nfields:\n  customer_id: a\n  churn: b\n"
    )
    csv = write_csv(tmp_path / "tabs.csv", "a\tb\n1\tYes\n")
    hint = r"it looks delimited by '\\t'\); columns must be separated by ';'"
    with pytest.raises(SourceFileError, match=hint):
        staging_table(csv, mapping)


def test_a_latin1_header_under_a_utf8_mapping_points_at_the_encoding(tmp_path):
    csv = tmp_path / "latin.csv"
    csv.write_bytes("Région,CustomerID\n".encode("latin-1"))
    with pytest.raises(SourceFileError, match="set csv.encoding: latin-1"):
        read_header(csv)


def test_a_utf8_bom_under_a_latin1_mapping_says_so(tmp_path):
    """Read as Latin-1, the BOM became part of the first column's name ("missing CustomerID")."""
    mapping = write_mapping(tmp_path, DEFAULT_MAPPING.read_text().replace(
        "encoding: utf-8 ", "encoding: latin-1"))
    csv = tmp_path / "bom.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"\nC1,40,Male,1,2,One-Year,DSL,2,Yes,No\n")
    with pytest.raises(SourceFileError) as error:
        staging_table(csv, mapping)
    assert error.value.description == (
        f"{csv.resolve()}: starts with a UTF-8 byte-order mark: the file is UTF-8, but the source"
        f" mapping says csv.encoding: latin-1 (set utf-8) (source mapping {mapping.resolve()})")
    csv.write_bytes(HEADER.encode("latin-1") + b"\nC1,40,Male,1,2,One-Year,DSL,2,Yes,No\n")
    assert staging_table(csv, mapping).metadata["source_columns"] == 10  # no BOM: read as Latin-1


def test_a_mapping_problem_and_a_missing_file_are_reported_together(tmp_path):
    mapping = write_mapping(tmp_path, "fields:\n  customer_id: a\n")
    with pytest.raises(MappingError) as error:
        staging_table(tmp_path / "gone.csv", mapping)
    assert problems_of(error)[1] == (
        f"{tmp_path / 'gone.csv'}: file not found (set CHURN_SOURCE_CSV to the source CSV)"
    )


def test_a_bad_dialect_skips_the_header_check_it_would_misread(tmp_path, churn_csv):
    mapping = write_mapping(
        tmp_path, "csv: {encoding: ebcdic}\nfields:\n  customer_id: nope\n  churn: c\n"
    )
    with pytest.raises(MappingError) as error:
        staging_table(churn_csv, mapping)
    assert [p.split(":")[0] for p in problems_of(error)] == ["csv.encoding"]


def test_mapping_errors_are_dagster_failures_that_do_not_retry(tmp_path):
    path = write_mapping(tmp_path, "fields:\n  churn: c\n")
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    assert error.value.retryable is False
    with pytest.raises(dg.Failure) as error:
        ChurnSource(csv_path="x.csv", mapping_path=str(path)).mapping()
    assert error.value.allow_retries is False


def test_default_header_check_keeps_its_message(tmp_path):
    csv = write_csv(tmp_path / "x.csv", HEADER.replace("Churn", "Churned") + "\n")
    with pytest.raises(SourceFileError) as error:
        staging_table(csv)
    assert error.value.description == f"{csv.resolve()}: missing required columns: Churn"


def test_check_header_alone_uses_the_default_mapping_or_the_one_given(tmp_path):
    check_header("x.csv", HEADER.split(","))
    with pytest.raises(SourceFileError, match="x.csv: missing required columns: Age, Churn"):
        check_header("x.csv", [c for c in HEADER.split(",") if c not in ("Age", "Churn")])
    mapping = load_mapping(write_mapping(tmp_path, "fields:\n  customer_id: id\n  churn: c\n"))
    check_header("x.csv", ["id", "c", "extra"], mapping)


def test_an_absent_field_is_a_typed_null_in_sql():
    age = dataclasses.replace(FIELDS_BY_NAME["age"], source_column=None)
    value, why = typed_value(age, "parsed", "problem"), problem(age, "parsed", "raw")
    with duckdb.connect() as conn:
        row = conn.execute(f"SELECT {cell(age)}, {value}, typeof({value}), {why}").fetchone()
    assert row == (None, None, "INTEGER", None)
