"""The transform SQL on small hand-made files, run in a real (in-memory) DuckDB, no Dagster."""

import hashlib
import hmac

import duckdb
import pytest

from churn_platform.core.pseudonymize import hmac_pads, pseudonym
from churn_platform.core.transform import band_sql
from churn_platform_tests.conftest import HEADER, load_and_transform, write_csv

GOOD = "C1,40,Female,10,70.5,One-Year,DSL,705.0,Yes,No"


def transform(tmp_path, rows: list[str], key: bytes | None = None):
    """Stage `rows` under the standard header and return (analytics dicts, rejected dicts)."""
    csv = write_csv(tmp_path / "in.csv", "\n".join([HEADER, *rows]) + "\n")
    conn = duckdb.connect()
    load_and_transform(conn, csv, key)

    def rows_of(table: str) -> list[dict]:
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY source_row")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    return rows_of("analytics.customer_churn"), rows_of("analytics.rejected_rows")


def test_a_clean_row_is_typed_and_keeps_its_values(tmp_path):
    [row], rejected = transform(tmp_path, [GOOD])
    assert rejected == []
    assert row["age"] == 40 and row["tenure"] == 10
    assert row["monthly_charges"] == 70.5 and row["total_charges"] == 705.0
    assert (row["gender"], row["contract_type"], row["internet_service"]) == (
        "Female", "One-Year", "DSL")
    assert (row["tech_support"], row["churn"], row["churn_flag"]) == ("Yes", "No", 0)
    assert row["source_row"] == 2
    assert "customer_id" not in row and "CustomerID" not in row


def test_each_missing_value_is_imputed_as_the_original_pipeline_did(tmp_path):
    rows = [
        "C1,30,Male,5,40.0,Two-Year,DSL,200.0,Yes,Yes",
        "C2,50,Female,7,60.0,One-Year,DSL,420.0,No,No",
        "C3,61,Female,9,110.0,One-Year,DSL,990.0,No,No",
        "C4,,,,,,,,,",
        "C5,  ,   , , ,\t, , , , ",
    ]
    accepted, rejected = transform(tmp_path, rows)
    assert rejected == []
    for imputed in accepted[3:]:
        assert imputed["age"] == 50  # median of 30, 50, 61
        assert imputed["gender"] == "Unknown"
        assert imputed["tenure"] == 0
        assert imputed["monthly_charges"] == pytest.approx((40 + 60 + 110) / 3)  # mean
        assert imputed["total_charges"] == 0.0
        assert imputed["contract_type"] == "Month-to-Month"
        assert imputed["internet_service"] == "None"
        assert imputed["tech_support"] == "No"
        assert (imputed["churn"], imputed["churn_flag"]) == ("No", 0)
        assert imputed["tenure_category"] == "New"


def test_statistics_take_every_typed_value_of_their_field_as_pandas_did(tmp_path):
    rows = [
        "C1,30,Male,5,40.0,Two-Year,DSL,200.0,Yes,Yes",
        "C2,100,Female,abc,100.0,One-Year,DSL,420.0,No,No",  # rejected, for its tenure only
        "C3,40,Female,9,70.0,One-Year,DSL,990.0,No,No",
        "C4,200,Female,9,-5,One-Year,DSL,990.0,No,No",  # rejected: age and charges out of range
        "C5,,Male,1,,One-Year,DSL,1.0,No,No",
    ]
    accepted, rejected = transform(tmp_path, rows)
    assert [r["source_row"] for r in rejected] == [3, 5]
    imputed = accepted[-1]
    assert imputed["age"] == 40  # median of 30, 100, 40: C2's age counts, C4's does not
    assert imputed["monthly_charges"] == pytest.approx((40 + 100 + 70) / 3)


def test_the_word_None_is_a_category_not_a_missing_cell(tmp_path):
    [row], _ = transform(tmp_path, ["C1,40,Female,10,70.5,One-Year,None,705.0,Yes,Yes"])
    assert row["internet_service"] == "None"


def test_categories_match_case_and_whitespace_insensitively(tmp_path):
    [row], rejected = transform(tmp_path, ["C1,40, female ,10,70.5,one-year,fiber optic,705,YES,yes"])
    assert rejected == []
    assert (row["gender"], row["contract_type"], row["internet_service"]) == (
        "Female", "One-Year", "Fiber Optic")
    assert (row["tech_support"], row["churn"], row["churn_flag"]) == ("Yes", "Yes", 1)


@pytest.mark.parametrize(
    "tenure, band", [(0, "New"), (12, "New"), (13, "Medium"), (36, "Medium"), (37, "Long")]
)
def test_tenure_bands_include_their_upper_edge_and_zero(tmp_path, tenure, band):
    [row], _ = transform(tmp_path, [f"C1,40,Female,{tenure},70,One-Year,DSL,0,Yes,No"])
    assert row["tenure_category"] == band


@pytest.mark.parametrize(
    "charges, band",
    [(0, "Low"), (50, "Low"), (50.01, "Medium"), (100, "Medium"), (100.01, "High")],
)
def test_monthly_charge_bands_include_their_upper_edge_and_zero(tmp_path, charges, band):
    [row], _ = transform(tmp_path, [f"C1,40,Female,3,{charges},One-Year,DSL,0,Yes,No"])
    assert row["monthly_charges_category"] == band


def test_band_sql_puts_everything_above_the_last_bound_in_the_last_band():
    sql = band_sql("x", (("Low", 1), ("High", None)))
    assert duckdb.execute(f"SELECT {sql} FROM (SELECT 2 AS x)").fetchone() == ("High",)


@pytest.mark.parametrize(
    "row, column, reason, value",
    [
        ("C1,40,Female,10,abc,One-Year,DSL,705,Yes,No", "MonthlyCharges", "not a number", "abc"),
        ("C1,40,Female,-3,70,One-Year,DSL,705,Yes,No", "Tenure", "below the minimum 0", "-3"),
        ("C1,40.5,Female,3,70,One-Year,DSL,705,Yes,No", "Age", "not a whole number", "40.5"),
        ("C1,400,Female,3,70,One-Year,DSL,705,Yes,No", "Age", "above the maximum 130", "400"),
        ("C1,40,Female,3,NaN,One-Year,DSL,705,Yes,No", "MonthlyCharges", "not a finite number", "NaN"),
        ('C1,40,Female,3,70,One-Year,DSL,"1,000",Yes,No', "TotalCharges", "not a number", "1,000"),
        ("C1,40,Female,3,70,Monthly,DSL,705,Yes,No", "ContractType", "not an accepted value", "Monthly"),
        ("C1,40,Female,3,70,One-Year,DSL,705,Yes,Maybe", "Churn", "not an accepted value", "Maybe"),
        (",40,Female,3,70,One-Year,DSL,705,Yes,No", "CustomerID", "missing customer id", None),
    ],
)
def test_untypable_values_are_rejected_with_column_reason_and_value(
    tmp_path, row, column, reason, value
):
    accepted, [rejected] = transform(tmp_path, [GOOD, row])
    assert len(accepted) == 1  # the good row; the bad one is not nulled and imputed
    assert rejected["source_row"] == 3
    assert rejected["column_name"] == column
    assert rejected["reason"].startswith(reason)
    assert rejected["offending_value"] == value
    assert rejected["problem_count"] == 1


def test_a_row_with_several_problems_is_rejected_once_with_its_first(tmp_path):
    _, [rejected] = transform(tmp_path, ["C1,x,Female,-1,abc,One-Year,DSL,705,Yes,No"])
    assert (rejected["column_name"], rejected["problem_count"]) == ("Age", 3)


def test_rejected_rows_never_carry_the_customer_id(tmp_path):
    _, rejected = transform(tmp_path, ["CUST-SECRET-1,x,?,-1,abc,Monthly,Cable,?,Maybe,Maybe"])
    assert "CUST-SECRET-1" not in repr(rejected)


def test_offending_values_are_cut_to_a_readable_length(tmp_path):
    _, [rejected] = transform(tmp_path, [f"C1,{'9' * 5000}x,Female,3,70,One-Year,DSL,7,Yes,No"])
    assert len(rejected["offending_value"]) == 200


def test_without_a_key_pseudonyms_are_random_per_row_and_run(tmp_path):
    rows = [GOOD, GOOD.replace("C1", "C2")]
    first, _ = transform(tmp_path, rows)
    again, _ = transform(tmp_path, rows)
    ids = [r["anonymized_customer_id"] for r in first + again]
    assert len(set(ids)) == 4


def test_with_a_key_pseudonyms_are_hmac_sha256_stable_across_runs(tmp_path):
    key = b"s3cret-key"
    rows = [GOOD, GOOD.replace("C1", " C-00417-XK ")]
    first, _ = transform(tmp_path, rows, key)
    again, _ = transform(tmp_path, rows, key)
    other_key, _ = transform(tmp_path, rows, b"another-key")
    assert [str(r["anonymized_customer_id"]) for r in first] == [
        pseudonym("C1", key), pseudonym("C-00417-XK", key)]
    assert [r["anonymized_customer_id"] for r in first] == [
        r["anonymized_customer_id"] for r in again]
    assert {r["anonymized_customer_id"] for r in first}.isdisjoint(
        {r["anonymized_customer_id"] for r in other_key})


def test_the_sql_hmac_matches_the_standard_library_for_long_keys_too():
    key = b"k" * 100  # longer than a SHA-256 block: HMAC hashes it first
    inner, outer = hmac_pads(key)
    digest = duckdb.execute(
        "SELECT sha256($o::BLOB || unhex(sha256($i::BLOB || encode('C1'))))",
        {"i": inner, "o": outer},
    ).fetchone()[0]
    assert digest == hmac.new(key, b"C1", hashlib.sha256).hexdigest()
