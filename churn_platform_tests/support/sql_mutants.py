"""Planted bugs in the SQL text of the core, which mutmut cannot make (it leaves f-strings alone):
each is applied to a copy of the project, and the fast tests that guard it must fail.

    python -m churn_platform_tests.support.sql_mutants [NAME ...]

Exit status 1 when a planted bug survives. Each plant is one realistic edit (a boundary, a
condition half deleted, an aggregate, a trim rule), named by what it breaks.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("churn_platform", "churn_platform_tests", "data", "pyproject.toml", "setup.cfg")
RULES = "churn_platform_tests/test_core_rules.py"
CHECKS = "churn_platform_tests/test_check_rules.py"
TRANSFORM = "churn_platform_tests/test_transform.py"


@dataclass(frozen=True)
class Plant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


PLANTS = (
    Plant("band upper bound exclusive", "churn_platform/core/transform.py",
          "WHEN {value} <= {upper} THEN", "WHEN {value} < {upper} THEN", (TRANSFORM,)),
    Plant("minimum itself rejected", "churn_platform/core/transform.py",
          '(f"{number} < {field.min_value}"', '(f"{number} <= {field.min_value}"', (RULES,)),
    Plant("maximum itself rejected", "churn_platform/core/transform.py",
          '(f"{number} > {field.max_value}"', '(f"{number} >= {field.max_value}"', (RULES,)),
    Plant("whole-number check deleted", "churn_platform/core/transform.py",
          'checks.append((f"{number} <> trunc({number})"', 'checks.append((f"false"', (RULES,)),
    Plant("blank trimming weakened to spaces", "churn_platform/core/transform.py",
          " THEN nullif(trim({column}, {quote_literal(BLANKS)}), '')",
          " THEN nullif(trim({column}), '')", (RULES,)),
    Plant("blank cell test weakened to spaces", "churn_platform/core/transform.py",
          " THEN trim({column}, {quote_literal(BLANKS)}) = '' ELSE false END",
          " THEN trim({column}) = '' ELSE false END", (RULES,)),
    Plant("median truncated, not rounded", "churn_platform/core/transform.py",
          "CAST(round(median({value})) AS INTEGER)", "CAST(floor(median({value})) AS INTEGER)",
          (RULES,)),
    Plant("range check takes the minimum as a violation", "churn_platform/core/check_rules.py",
          '[f"{f.name} < {f.min_value}"]', '[f"{f.name} <= {f.min_value}"]', (CHECKS,)),
    Plant("range check half deleted (no maximum)", "churn_platform/core/check_rules.py",
          'bounds += [f"{f.name} > {f.max_value}"] if', 'bounds += [] if', (CHECKS,)),
    Plant("accepted-values check lets NULL pass", "churn_platform/core/check_rules.py",
          'f"({column} IS NULL OR {column} NOT IN', 'f"({column} NOT IN', (CHECKS,)),
    Plant("churn flag check lets a NULL flag pass", "churn_platform/core/check_rules.py",
          "churn_flag IS DISTINCT FROM (churn = 'Yes')", "churn_flag <> (churn = 'Yes')",
          (CHECKS,)),
    Plant("segment churned counts customers", "churn_platform/core/quality.py",
          "sum(churn_flag) AS churned", "count(churn_flag) AS churned", (RULES,)),
    Plant("segment rate rounded to 1 decimal", "churn_platform/core/quality.py",
          "round(100 * avg(churn_flag), 2) AS churn_rate_percent\n        FROM (UNPIVOT",
          "round(100 * avg(churn_flag), 1) AS churn_rate_percent\n        FROM (UNPIVOT",
          (RULES,)),
    Plant("duplicate ids count the empty id", "churn_platform/core/quality.py",
          "count(customer_id) - count(DISTINCT customer_id)",
          "count(*) - count(DISTINCT customer_id)", (RULES,)),
    Plant("export retention boundary exclusive", "churn_platform/core/export/snapshots.py",
          "snapshot_at >= $since", "snapshot_at > $since", (RULES,)),
    Plant("missing cells of an absent field poison the sum",
          "churn_platform/core/export/snapshots.py",
          'f"coalesce(missing_{f.name}, 0)"', 'f"missing_{f.name}"', (RULES,)),
    Plant("re-export does not replace the snapshot", "churn_platform/core/export/postgres.py",
          'sql.SQL("DELETE FROM {} WHERE snapshot_id = ANY(%s)").format(table(name))',
          'sql.SQL("SELECT %s::text[]")', (RULES,)),
    Plant("pseudonym keeps 120 bits", "churn_platform/core/pseudonymize.py",
          "({digest}[1:32])::UUID", "(rpad({digest}[1:30], 32, '0'))::UUID", (RULES,)),
)


def run(plant: Plant) -> bool:
    """True when the tests catch the planted bug (they fail), on a copy of the project."""
    with tempfile.TemporaryDirectory(prefix="sql-mutant-") as tmp:
        copy = Path(tmp)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, copy / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, copy / name)
        target = copy / plant.path
        text = target.read_text()
        if text.count(plant.old) != 1:
            raise SystemExit(f"{plant.name}: the text to change is not in {plant.path} once")
        target.write_text(text.replace(plant.old, plant.new))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "--no-cov", "-p", "no:cacheprovider",
             *plant.tests],
            cwd=copy, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(copy)},
        )
        return result.returncode == 1


def main(argv: list[str]) -> int:
    plants = [p for p in PLANTS if not argv or p.name in argv]
    missed = []
    print("| planted SQL bug | file | caught |\n|---|---|---|")
    for plant in plants:
        caught = run(plant)
        print(f"| {plant.name} | {plant.path.removeprefix('churn_platform/')} |"
              f" {'yes' if caught else 'NO'} |", flush=True)
        if not caught:
            missed.append(plant.name)
    print(f"\n{len(plants) - len(missed)} of {len(plants)} planted SQL bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
