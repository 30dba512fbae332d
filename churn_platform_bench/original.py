"""The original pipeline's approach, rebuilt as the baseline: pandas end to end.

    python -m churn_platform_bench.original SOURCE_CSV STAGING_DB PRODUCTION_DB

pandas `read_csv` into a staging DuckDB, read back into pandas, `fillna` per column, one
`Faker().uuid4()` per row, `pd.cut` bands, the frame written to a production DuckDB, and four
metrics. Values that cannot be typed become NaN and are imputed (the original had no rejected
rows), so this baseline does less checking than the platform, never more.
"""

import sys

import duckdb
import numpy as np
import pandas as pd
from faker import Faker

NUMERIC = ("Age", "Tenure", "MonthlyCharges", "TotalCharges")
TENURE_BINS = ([0, 12, 36, np.inf], ["New", "Medium", "Long"])
CHARGES_BINS = ([0, 50, 100, np.inf], ["Low", "Medium", "High"])


def _write(database: str, table: str, frame: pd.DataFrame) -> None:
    with duckdb.connect(database) as conn:
        conn.register("frame", frame)
        conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM frame")


def run(source_csv: str, staging_db: str, production_db: str) -> None:
    _write(staging_db, "customer_churn", pd.read_csv(source_csv))
    with duckdb.connect(staging_db, read_only=True) as conn:
        frame = conn.execute("SELECT * FROM customer_churn").df()

    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["Age"] = frame["Age"].fillna(frame["Age"].median())
    frame["Gender"] = frame["Gender"].fillna("Unknown")
    frame["Tenure"] = frame["Tenure"].fillna(0)
    frame["MonthlyCharges"] = frame["MonthlyCharges"].fillna(frame["MonthlyCharges"].mean())
    frame["TotalCharges"] = frame["TotalCharges"].fillna(0.0)
    frame["ContractType"] = frame["ContractType"].fillna("Month-to-Month")
    frame["InternetService"] = frame["InternetService"].fillna("None")
    frame["TechSupport"] = frame["TechSupport"].fillna("No")
    frame["Churn"] = frame["Churn"].fillna("No")

    fake = Faker()
    frame["CustomerID"] = [fake.uuid4() for _ in range(len(frame))]
    frame["ChurnFlag"] = (frame["Churn"] == "Yes").astype(int)
    # include_lowest: tenure 0 gets a band (the original's pd.cut left it without one).
    frame["TenureCategory"] = pd.cut(frame["Tenure"], *TENURE_BINS, include_lowest=True)
    frame["MonthlyChargesCategory"] = pd.cut(
        frame["MonthlyCharges"], *CHARGES_BINS, include_lowest=True
    )
    for column in ("TenureCategory", "MonthlyChargesCategory"):
        frame[column] = frame[column].astype(str)
    _write(production_db, "customer_churn", frame)

    metrics = pd.DataFrame([{
        "total_records": len(frame),
        "churn_rate_percent": round(100 * frame["ChurnFlag"].mean(), 2),
        "avg_monthly_charges": round(frame["MonthlyCharges"].mean(), 2),
        "avg_tenure_months": round(frame["Tenure"].mean(), 2),
    }])
    _write(production_db, "data_quality_metrics", metrics)


if __name__ == "__main__":
    run(*sys.argv[1:4])
