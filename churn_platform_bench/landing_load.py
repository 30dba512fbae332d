"""The cost of loading export N through the landing load, as exports accumulate.

python -m churn_platform_bench.landing_load --customers 1000000 --exports 30 --folder /tmp/lb

The first export is the sample generator's; each next one is derived from the previous inside
DuckDB: about 3 % of customers get a new contract and about 2 % more churn. Each is loaded by
`core/landing_load.load_export` (raw partition, typed rows, history, cohort tables), then a
CHECKPOINT (what closing the run's connection does: work deferred to it is part of the load),
timed together; the CSV is deleted once loaded (its rows stay in landing.export_rows). Prints, per
export, wall and CPU seconds (the checkpoint's share apart), history rows and the warehouse's size
on disk, and the load average before and after. Figures, not assertions.
"""

import argparse
import hashlib
import os
import shutil
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb

from churn_platform import sample_data
from churn_platform.core.landing import Export
from churn_platform.core.landing_load import load_export
from churn_platform.core.mapping import DEFAULT_MAPPING, load_mapping
from churn_platform.core.settings import duckdb_config
from churn_platform.core.warehouse import connect

KEY = b"landing-bench-key-0123456789abcdef"
NEXT_DAY_SQL = """
    COPY (SELECT CustomerID, Age, Gender, Tenure, MonthlyCharges,
                 CASE WHEN hash(CustomerID, {i}, 'contract') % 100 < 3
                      THEN ['Month-to-Month', 'One-Year', 'Two-Year'][
                          CAST(hash(CustomerID, {i}) % 3 AS BIGINT) + 1]
                      ELSE ContractType END AS ContractType,
                 InternetService, TotalCharges, TechSupport,
                 CASE WHEN hash(CustomerID, {i}, 'churn') % 100 < 2 THEN 'Yes' ELSE Churn END
                     AS Churn
          FROM read_csv('{previous}', all_varchar = true, header = true))
    TO '{path}' (HEADER, DELIMITER ',')
"""


def _export(path: Path, day: date) -> Export:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Export(path, digest, path.stat().st_size, day, "name",
                  datetime.combine(day, datetime.min.time(), timezone.utc))


def _disk(database: str) -> int:
    return sum(os.path.getsize(p) for p in (database, database + ".wal") if os.path.exists(p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--exports", type=int, default=30)
    parser.add_argument("--folder", default="/tmp/churn_landing_bench")
    args = parser.parse_args()
    folder = Path(args.folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    database = str(folder / "warehouse.duckdb")
    mapping = load_mapping(DEFAULT_MAPPING)
    con = connect(database, duckdb_config())
    start = date(2026, 1, 1)
    previous = sample_data.write_sample(folder / f"crm_{start}.csv", args.customers, seed=7)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("export  seconds  cpu_seconds  checkpoint_cpu  history_rows  export_rows  warehouse_MiB",
          flush=True)
    for i in range(1, args.exports + 1):
        day = start + timedelta(days=i - 1)
        path = folder / f"crm_{day}.csv"
        if i > 1:
            with duckdb.connect() as scratch:
                scratch.execute(NEXT_DAY_SQL.format(i=i, previous=previous, path=path))
            previous.unlink()
            previous = path
        export = _export(path, day)
        began, began_cpu = time.perf_counter(), time.process_time()
        load_export(con, export, mapping, KEY, missing_for_churn=3)
        loaded_cpu = time.process_time()
        con.execute("CHECKPOINT")
        seconds, cpu = time.perf_counter() - began, time.process_time() - began_cpu
        checkpoint_cpu = time.process_time() - loaded_cpu
        history, rows = con.execute(
            "SELECT (SELECT count(*) FROM analytics.customer_history),"
            " (SELECT count(*) FROM landing.export_rows)").fetchone()
        print(f"{i:6d}  {seconds:7.2f}  {cpu:11.2f}  {checkpoint_cpu:14.2f}  {history:12,d}"
              f"  {rows:11,d}  {_disk(database) / 2**20:13.1f}", flush=True)
    con.close()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"warehouse on disk after closing: {_disk(database) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
