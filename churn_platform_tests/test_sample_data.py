"""The sample generator: deterministic, believable, gappy, and the committed sample is its output."""

import csv
import hashlib
from collections import Counter

import pytest

from churn_platform import sample_data
from churn_platform.core.fields import SOURCE_COLUMNS
from churn_platform.core.settings import SAMPLE_CSV


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = sample_data.write_sample(tmp_path / "a.csv", 2_500, seed=7)
    b = sample_data.write_sample(tmp_path / "b.csv", 2_500, seed=7)
    c = sample_data.write_sample(tmp_path / "c.csv", 2_500, seed=8)
    assert digest(a) == digest(b) != digest(c)


def test_the_committed_sample_is_the_generators_output(tmp_path):
    assert sample_data.main(["--rows", "1000", "--out", str(tmp_path / "s.csv")]) == 0
    assert digest(tmp_path / "s.csv") == digest(SAMPLE_CSV)


@pytest.mark.slow
def test_rows_have_the_source_schema_gaps_and_churn_tied_to_contract(tmp_path):
    path = sample_data.write_sample(tmp_path / "s.csv", 250_000, seed=1)  # spans three chunks
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == SOURCE_COLUMNS
        rows = list(reader)
    assert len(rows) == 250_000
    missing = Counter(c for r in rows for c, v in r.items() if v == "")
    assert missing["CustomerID"] == 0
    assert all(missing[c] > 0 for c in SOURCE_COLUMNS[1:])
    churn = {k: [] for k in ("Month-to-Month", "One-Year", "Two-Year")}
    for r in rows:
        if r["ContractType"] in churn and r["Churn"]:
            churn[r["ContractType"]].append(r["Churn"] == "Yes")
    rate = {k: sum(v) / len(v) for k, v in churn.items()}
    assert rate["Month-to-Month"] > rate["One-Year"] > rate["Two-Year"]
    short = [r["Churn"] == "Yes" for r in rows if r["Tenure"].isdigit() and int(r["Tenure"]) <= 12 and r["Churn"]]
    long = [r["Churn"] == "Yes" for r in rows if r["Tenure"].isdigit() and int(r["Tenure"]) > 36 and r["Churn"]]
    assert sum(short) / len(short) > sum(long) / len(long)
