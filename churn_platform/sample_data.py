"""Deterministic sample source CSVs in the original schema, of any size, in bounded memory.

    python -m churn_platform.sample_data --rows 1000 --out data/customer_churn_data.csv --seed 42

Rows are drawn in fixed-size chunks from one seeded generator, so the same seed and row count
give the same bytes, and memory stays flat however many rows are asked for. Churn depends on
contract type and tenure; a few cells are empty in every column but CustomerID, a few values
cannot be typed, and a few CustomerIDs repeat, as real exports do.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from churn_platform.core.fields import SOURCE_COLUMNS

CHUNK_ROWS = 100_000
MISSING_RATE = 0.015
BAD_VALUE_RATE = 0.005
DUPLICATE_ID_RATE = 0.001

CONTRACTS = np.array(["Month-to-Month", "One-Year", "Two-Year"])
CONTRACT_P = [0.52, 0.29, 0.19]
CONTRACT_BASE_CHURN = np.array([0.45, 0.15, 0.06])
CONTRACT_TENURE_MEAN = np.array([10.0, 28.0, 45.0])
INTERNET = np.array(["DSL", "Fiber Optic", "None"])
INTERNET_P = [0.33, 0.40, 0.27]
INTERNET_CHARGE_MEAN = np.array([60.0, 90.0, 32.0])
# Values a careless export produces: each cannot be typed in its column.
BAD_VALUES = {
    "Age": "unknown",
    "Tenure": "-3",
    "MonthlyCharges": "abc",
    "TotalCharges": "1,234.50",
    "ContractType": "Monthly",
    "Gender": "?",
}


def _chunk(rng: np.random.Generator, first_id: int, rows: int) -> pd.DataFrame:
    contract = rng.choice(3, size=rows, p=CONTRACT_P)
    internet = rng.choice(3, size=rows, p=INTERNET_P)
    tech_support = rng.random(rows) < 0.45
    tenure = np.minimum(rng.gamma(1.5, CONTRACT_TENURE_MEAN[contract] / 1.5), 120).astype(int)
    monthly = np.clip(
        rng.normal(INTERNET_CHARGE_MEAN[internet], 12.0) + 5.0 * tech_support, 18.0, 125.0
    ).round(2)
    total = (tenure * monthly * rng.uniform(0.95, 1.05, rows)).round(2)
    churn_p = CONTRACT_BASE_CHURN[contract] * (0.6 + np.exp(-tenure / 12.0))
    churn_p += 0.05 * (internet == 1) + 0.04 * ~tech_support
    churn = rng.random(rows) < np.clip(churn_p, 0.01, 0.95)

    ids = np.arange(first_id, first_id + rows)
    repeat = rng.random(rows) < DUPLICATE_ID_RATE
    ids[repeat] = np.maximum(1, ids[repeat] - rng.integers(1, 1000, repeat.sum()))
    frame = pd.DataFrame({
        "CustomerID": np.char.add("C", np.char.zfill(ids.astype(str), 7)),
        "Age": np.clip(rng.normal(45, 15, rows), 18, 85).astype(int).astype(str),
        "Gender": rng.choice(np.array(["Female", "Male", "Other"]), size=rows, p=[0.49, 0.49, 0.02]),
        "Tenure": tenure.astype(str),
        "MonthlyCharges": monthly.astype(str),
        "ContractType": CONTRACTS[contract],
        "InternetService": INTERNET[internet],
        "TotalCharges": total.astype(str),
        "TechSupport": np.where(tech_support, "Yes", "No"),
        "Churn": np.where(churn, "Yes", "No"),
    })
    for column in SOURCE_COLUMNS[1:]:
        frame.loc[rng.random(rows) < MISSING_RATE, column] = ""
    for column, bad in BAD_VALUES.items():
        frame.loc[rng.random(rows) < BAD_VALUE_RATE / len(BAD_VALUES), column] = bad
    return frame


def write_sample(out: str | Path, rows: int, seed: int = 42) -> Path:
    """Write `rows` customers to `out`, chunk by chunk; returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with out.open("w", newline="") as handle:
        handle.write(",".join(SOURCE_COLUMNS) + "\n")
        for start in range(0, rows, CHUNK_ROWS):
            chunk = _chunk(rng, start + 1, min(CHUNK_ROWS, rows - start))
            chunk.to_csv(handle, header=False, index=False, lineterminator="\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True, help="number of customers")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be zero or more")
    path = write_sample(args.out, args.rows, args.seed)
    print(f"wrote {args.rows} rows to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
