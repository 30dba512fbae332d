"""The checks' rules on hand-made rows in an in-memory DuckDB, no Dagster: each condition breaks
alone, on both sides of every bound, and each pass decision fails for each of its counts alone."""

import dataclasses

import duckdb
import pytest

from churn_platform.core import check_rules
from churn_platform.core.check_rules import (
    DRIFT_MIN_HISTORY,
    absent_columns,
    category_rules,
    drift_passed,
    null_rules,
    outside,
    parity_passed,
    pseudonyms_passed,
    range_rules,
    rejections_passed,
)
from churn_platform.core.fields import FIELDS, FIELDS_BY_NAME

GOOD = {
    "gender": "Female", "contract_type": "One-Year", "internet_service": "DSL",
    "tech_support": "Yes", "churn": "No", "churn_flag": 0, "tenure_category": "New",
    "monthly_charges_category": "Low", "age": 40, "tenure": 10, "monthly_charges": 30.0,
    "total_charges": 300.0,
}


def broken(rules: dict[str, str], **changes) -> set[str]:
    """The rules a GOOD row with `changes` breaks."""
    row = {**GOOD, **changes}
    select = ", ".join(f"{duckdb_literal(v)} AS {k}" for k, v in row.items())
    counts = duckdb.execute(
        "SELECT " + ", ".join(f"count(*) FILTER (WHERE {r})" for r in rules.values())
        + f" FROM (SELECT {select})"
    ).fetchone()
    return {name for name, count in zip(rules, counts) if count}


def duckdb_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return f"CAST({value!r} AS DOUBLE)" if isinstance(value, float) else str(value)


def without(*names):
    return tuple(dataclasses.replace(f, source_column=None) if f.name in names else f
                 for f in FIELDS)


def test_a_good_row_breaks_no_rule():
    assert broken(category_rules(FIELDS)) == set()
    assert broken(range_rules(FIELDS)) == set()
    assert broken(null_rules(GOOD)) == set()


@pytest.mark.parametrize("value, is_outside", [("a", False), ("b", False), ("c", True),
                                               ("A", True), (None, True)])
def test_outside_means_null_or_not_one_of_the_values(value, is_outside):
    sql = outside("x", ["a", "b"])
    row = duckdb.execute(f"SELECT {sql} FROM (SELECT {duckdb_literal(value)} AS x)").fetchone()
    assert row[0] is is_outside


@pytest.mark.parametrize("column, bad", [
    ("gender", "female"), ("gender", None), ("contract_type", "Monthly"),
    ("internet_service", "Cable"), ("tech_support", "Maybe"), ("churn", None),
    ("tenure_category", "Old"), ("tenure_category", None),
    ("monthly_charges_category", "Huge"), ("monthly_charges_category", None),
])
def test_each_category_rule_breaks_alone(column, bad):
    expected = {column, "churn_flag"} if column == "churn" else {column}
    assert broken(category_rules(FIELDS), **{column: bad}) == expected


@pytest.mark.parametrize("churn, flag, wrong", [
    ("Yes", 1, False), ("No", 0, False), ("Yes", 0, True), ("No", 1, True), ("No", None, True),
])
def test_churn_flag_must_agree_with_churn(churn, flag, wrong):
    assert ("churn_flag" in broken(category_rules(FIELDS), churn=churn, churn_flag=flag)) is wrong


def test_every_accepted_band_and_category_is_accepted():
    rules = category_rules(FIELDS)
    for band in ("New", "Medium", "Long"):
        assert broken(rules, tenure_category=band) == set()
    for band in ("Low", "Medium", "High"):
        assert broken(rules, monthly_charges_category=band) == set()
    for field in FIELDS:
        for category in field.categories:
            changes = {field.name: category}
            if field.name == "churn":
                changes["churn_flag"] = int(category == "Yes")
            assert broken(rules, **changes) == set(), (field.name, category)


def test_absent_fields_and_what_derives_from_them_are_not_checked():
    assert absent_columns(["churn", "gender"]) == {"churn", "churn_flag", "gender"}
    assert absent_columns(["tenure"]) == {"tenure", "tenure_category"}
    assert absent_columns(["monthly_charges"]) == {"monthly_charges", "monthly_charges_category"}
    assert absent_columns([]) == set()
    rules = category_rules(FIELDS, ["gender", "tenure"])
    assert "gender" not in rules and "tenure_category" not in rules
    assert "contract_type" in rules and "monthly_charges_category" in rules
    assert set(null_rules(["age", "tenure", "tenure_category"], ["tenure"])) == {"age"}


@pytest.mark.parametrize("column, inside, beyond", [
    ("age", 0, -1), ("age", 130, 131), ("tenure", 0, -1), ("tenure", 1200, 1201),
    ("monthly_charges", 0.0, -0.01), ("total_charges", 0.0, -0.01),
])
def test_each_range_rule_takes_its_bound_and_breaks_just_beyond_it(column, inside, beyond):
    rules = range_rules(FIELDS)
    assert broken(rules, **{column: inside}) == set()
    assert broken(rules, **{column: beyond}) == {column}


def test_charges_have_no_upper_bound_and_absent_fields_no_range():
    assert broken(range_rules(FIELDS), monthly_charges=1e9, total_charges=1e12) == set()
    assert set(range_rules(FIELDS)) == {"age", "tenure", "monthly_charges", "total_charges"}
    assert set(range_rules(without("age"))) == {"tenure", "monthly_charges", "total_charges"}


@pytest.mark.parametrize("column", list(GOOD))
def test_each_null_rule_breaks_alone(column):
    assert broken(null_rules(GOOD), **{column: None}) == {column}


def test_null_rules_quote_the_column():
    assert null_rules(['odd "name"']) == {'odd "name"': '"odd ""name""" IS NULL'}


def test_parity_fails_on_a_count_mismatch_or_an_unaccounted_row_alone():
    assert parity_passed(10, 7, 3, [])
    assert not parity_passed(10, 7, 2, [])
    assert not parity_passed(10, 8, 3, [])
    assert not parity_passed(10, 7, 3, [4])


def test_pseudonyms_fail_on_a_missing_or_a_shared_one_alone():
    assert pseudonyms_passed(0, 0)
    assert not pseudonyms_passed(1, 0)
    assert not pseudonyms_passed(0, 1)


def test_rejections_fail_without_reason_or_when_repeated_alone():
    assert rejections_passed(0, 0)
    assert not rejections_passed(1, 0)
    assert not rejections_passed(0, 1)


def test_drift_needs_three_earlier_snapshots_and_a_current_rate():
    assert DRIFT_MIN_HISTORY == 3
    assert drift_passed(90.0, 20.0, 1.0, 2) is None
    assert drift_passed(90.0, 20.0, 1.0, 3) is False
    assert drift_passed(None, 20.0, 1.0, 5) is None


@pytest.mark.parametrize("current, passed", [
    (24.0, True), (16.0, True),  # exactly two standard deviations either side: within
    (24.01, False), (15.99, False),  # just beyond them
    (27.0, False),  # three: a drift (a 3-sigma rule would let it pass)
    (20.0, True),
])
def test_drift_is_two_standard_deviations_from_the_mean_either_way(current, passed):
    assert check_rules.DRIFT_STDDEVS == 2.0
    assert drift_passed(current, 20.0, 2.0, 4) is passed


def test_categories_of_a_field_come_from_the_field():
    rules = category_rules(FIELDS)
    assert rules["gender"] == outside("gender", FIELDS_BY_NAME["gender"].categories)
