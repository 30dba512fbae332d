"""How the cost of applying an export to customer history grows with the history behind it.

python -m churn_platform_bench.history_apply --customers 1000000 --exports 8 --database /tmp/h.db

Synthetic exports built inside DuckDB (no CSV, no transform: only history is measured): each
export changes the contract of about 3 % of customers, churns about 2 % more, and leaves out
about 1 %. Prints, per export, the seconds `apply_export` took, the history's rows and the file's
size; CPU seconds (all DuckDB threads) tell more than wall time on a shared machine.
Figures, not assertions.
"""

import argparse
import os
import time
from datetime import date, datetime, timedelta, timezone

from churn_platform.core.history import ExportRef, apply_export
from churn_platform.core.settings import duckdb_config
from churn_platform.core.warehouse import connect

EXPORT_SQL = """
    SELECT uuid_from_number AS anonymized_customer_id, n AS source_row,
           CAST(n % 72 + {i} AS INTEGER) AS tenure,
           CASE WHEN hash(n, {i}) % 100 < 3 THEN 'Two-Year'
                ELSE ['Month-to-Month', 'One-Year', 'Two-Year'][n % 3 + 1] END AS contract_type,
           ['DSL', 'Fiber Optic', 'None'][n % 3 + 1] AS internet_service,
           CASE WHEN n % 2 = 0 THEN 'Yes' ELSE 'No' END AS tech_support,
           ['Low', 'Medium', 'High'][n % 3 + 1] AS monthly_charges_category,
           CASE WHEN n % 72 + {i} <= 12 THEN 'New' WHEN n % 72 + {i} <= 36 THEN 'Medium'
                ELSE 'Long' END AS tenure_category,
           CASE WHEN hash(n) % 100 < 2 * {i} THEN 'Yes' ELSE 'No' END AS churn
    FROM (SELECT n, ('00000000-0000-0000-0000-' || lpad(CAST(n AS VARCHAR), 12, '0'))::UUID
                 AS uuid_from_number
          FROM range({customers}) AS t(n))
    WHERE hash(n, {i}, 'absent') % 100 <> 0
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--exports", type=int, default=5)
    parser.add_argument("--database", default="/tmp/churn_history_bench.duckdb")
    args = parser.parse_args()
    if os.path.exists(args.database):
        os.remove(args.database)
    con = connect(args.database, duckdb_config())
    start = date(2026, 1, 1)
    print("export  seconds  cpu_seconds  history_rows  events  file_MiB")
    for i in range(1, args.exports + 1):
        day = start + timedelta(days=i)
        ref = ExportRef(f"{day}__{i:012x}", day, datetime(2026, 1, 1, tzinfo=timezone.utc))
        rows = EXPORT_SQL.format(i=i, customers=args.customers)
        began, began_cpu = time.perf_counter(), time.process_time()
        apply_export(con, ref, lambda _: rows, missing_for_churn=3)
        seconds, cpu = time.perf_counter() - began, time.process_time() - began_cpu
        con.execute("CHECKPOINT")
        history, events = con.execute(
            "SELECT (SELECT count(*) FROM analytics.customer_history),"
            " (SELECT count(*) FROM analytics.churn_events)").fetchone()
        size = os.path.getsize(args.database) / 2**20
        print(f"{i:6d}  {seconds:7.2f}  {cpu:11.2f}  {history:12d}  {events:6d}  {size:8.1f}")


if __name__ == "__main__":
    main()
