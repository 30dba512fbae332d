"""An export's raw rows keep their file line in `source_row` however the insert is parallelized
(the insert itself need not keep the file's order, so that DuckDB writes it once, not again at
checkpoint)."""

import hashlib
from datetime import date, datetime, timezone

import duckdb

from churn_platform.core.landing import Export
from churn_platform.core.landing_load import load_rows
from churn_platform.core.mapping import DEFAULT_MAPPING
from churn_platform_tests.conftest import HEADER

ROWS = 300_000  # several of DuckDB's row groups and CSV chunks, read by two threads


def test_every_row_of_a_large_export_keeps_its_line_as_source_row(tmp_path):
    path = tmp_path / "crm_2026-01-05.csv"
    lines = (f"C{n},40,Female,{n % 72},70.5,Month-to-Month,DSL,705.0,No,No"
             for n in range(1, ROWS + 1))
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    day = date(2026, 1, 5)
    export = Export(path, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size,
                    day, "name", datetime(2026, 1, 5, tzinfo=timezone.utc))
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"threads": "2"}) as con:
        assert load_rows(con, export, DEFAULT_MAPPING) == ROWS
        con.execute("CHECKPOINT")
        # Row identity, both ways: each customer at its own line (the header is line 1), each
        # line once.
        assert con.execute(
            "SELECT count(*), count(DISTINCT source_row), min(source_row), max(source_row),"
            " count(*) FILTER (WHERE \"CustomerID\" <> 'C' || (source_row - 1))"
            " FROM landing.export_rows").fetchone() == (ROWS, ROWS, 2, ROWS + 1, 0)
