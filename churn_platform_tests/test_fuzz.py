"""Property-based: CSVs as a fuzzer writes them either load with every row accounted for, or fail
with the file named and the last good tables untouched.

The loads run through the warehouse IO manager's own handler on a real DuckDB file (a Dagster run
per example would make the search slow without testing anything more; the graph is covered by
test_pipeline and test_bad_input).
"""

import csv
import io

import dagster as dg
import duckdb
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from churn_platform.core.fields import SOURCE_COLUMNS
from churn_platform.core.warehouse import quote_ident
from churn_platform_tests.conftest import HEADER, load_and_transform

GOOD = HEADER + "\nK1,40,Male,3,50,One-Year,DSL,150,Yes,No\n"
TABLES = ("staging.customer_churn", "analytics.customer_churn", "analytics.rejected_rows")

odd_numbers = st.sampled_from(["1e3", "1,000", "-0", "NaN", "inf", "-inf", " 7 ", "0x1A", "1_000",
                               "+5", ".5", "5.", "1e400", "-1", "99999999999999999999"])
weird_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
) | st.sampled_from(["😀", "مرحبا", "\u202eevil", "a,b", 'say "hi"', "two\nlines", "\x00", "None",
                     "  ", "\t", "yes", "FIBER OPTIC"])
long_text = st.integers(1000, 20_000).map(lambda n: "x" * n)
plausible = {
    "Age": st.integers(-5, 140).map(str),
    "Gender": st.sampled_from(["Male", "Female", "Other", "male "]),
    "Tenure": st.integers(-3, 200).map(str),
    "MonthlyCharges": st.floats(-10, 200, allow_nan=False).map(lambda f: f"{f:.2f}"),
    "ContractType": st.sampled_from(["Month-to-Month", "One-Year", "Two-Year", "one-year"]),
    "InternetService": st.sampled_from(["DSL", "Fiber Optic", "None"]),
    "TotalCharges": st.floats(0, 9000, allow_nan=False).map(lambda f: f"{f:.1f}"),
    "TechSupport": st.sampled_from(["Yes", "No"]),
    "Churn": st.sampled_from(["Yes", "No", "YES"]),
}
customer_ids = st.integers(0, 30).map(lambda n: f"ID{n:04d}Z") | st.just("")


@st.composite
def rows(draw):
    """A plausible row, with a few of its cells (often none) emptied or garbled."""
    row = {"CustomerID": draw(customer_ids)}
    row.update({column: draw(good) for column, good in plausible.items()})
    for column in draw(st.lists(st.sampled_from(list(plausible)), max_size=3)):
        row[column] = draw(st.one_of(st.just(""), odd_numbers, weird_text, long_text))
    return row


@st.composite
def csv_files(draw):
    """(file text, the records written) in a random dialect of layout."""
    header = draw(st.permutations(SOURCE_COLUMNS))
    extra = draw(st.booleans())
    records = draw(st.lists(rows(), min_size=0, max_size=8))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(list(header) + (["Notes"] if extra else []))
    for record in records:
        if draw(st.booleans()) and draw(st.booleans()):
            out.write(newline)  # a blank line between records
        writer.writerow([record[c] for c in header] + (["n, b"] if extra else []))
    text = out.getvalue()
    if records and draw(st.booleans()):
        text = text[: -len(newline)]  # the last line without a newline
    return text, records


def snapshot(conn) -> dict:
    return {t: sorted(conn.execute(f"SELECT * EXCLUDE (load_timestamp) FROM {t}").fetchall(), key=repr)
            for t in TABLES}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(csv_files())
def test_every_row_is_accounted_for_or_the_run_fails_cleanly(tmp_path_factory, generated):
    text, records = generated
    folder = tmp_path_factory.mktemp("fuzz")
    good, fuzzed = folder / "good.csv", folder / "fuzzed.csv"
    good.write_text(GOOD, newline="")
    fuzzed.write_text(text, newline="", encoding="utf-8")
    with duckdb.connect(str(folder / "w.duckdb")) as conn:
        load_and_transform(conn, good)
        before = snapshot(conn)
        try:
            load_and_transform(conn, fuzzed)
        except dg.Failure as failure:
            event(f"failed: {failure.description.split(': ', 1)[1][:60]}")
            assert str(fuzzed) in failure.description
            assert not records or "Line" in failure.description or "changed" in failure.description \
                or "state" in failure.description, failure.description
            assert snapshot(conn) == before  # nothing half written
            return
        columns = ", ".join(quote_ident(c) for c in SOURCE_COLUMNS)
        staged = conn.execute(
            f"SELECT {columns} FROM staging.customer_churn ORDER BY source_row").fetchall()
        assert staged == [tuple(r[c] for c in SOURCE_COLUMNS) for r in records]  # lossless text
        analytics, rejected, unexplained = conn.execute(
            "SELECT (SELECT count(*) FROM analytics.customer_churn),"
            " (SELECT count(*) FROM analytics.rejected_rows),"
            " (SELECT count(*) FROM analytics.rejected_rows WHERE reason IS NULL)").fetchone()
        assert analytics + rejected == len(records) and unexplained == 0
        event(f"loaded: {'some' if analytics else 'no'} rows typed, {'some' if rejected else 'no'} rejected")
        outside = repr(conn.execute("SELECT * FROM analytics.customer_churn").fetchall()) + repr(
            conn.execute("SELECT * FROM analytics.rejected_rows").fetchall())
        assert not any(r["CustomerID"] and r["CustomerID"] in outside for r in records)
