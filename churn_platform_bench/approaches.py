"""The three ways of doing the work, each as a child command, and how to check it was done;
and two measured extras of the platform: churn_model_job, and churn_elt_job re-scoring.

Each approach writes into its own fresh run folder, so no measurement reads another's output.
The pseudonymization key is removed from the children's environment: all three draw a random
identifier per row (the original's Faker UUID, the platform's uuid()), so they do the same work.
So is CHURN_SOURCE_MAPPING: the generated files have the standard columns, read by the default
mapping, which the floor uses too.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from churn_platform_bench import floor

APPROACHES = ("platform", "floor", "original", "model", "rescore")


@dataclass
class Prepared:
    command: list[str]
    env: dict[str, str]
    output_rows: Callable[[], int]  # rows the run accounted for, read back after it ends


def _count(database: Path, sql: str) -> int:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql).fetchone()[0]


def _accounted(database: Path) -> int:
    """Rows in analytics plus rows rejected: every source row must be in one of them."""
    return _count(database, "SELECT (SELECT count(*) FROM analytics.customer_churn)"
                            " + (SELECT count(*) FROM analytics.rejected_rows)")


def _scored(database: Path) -> int:
    """Every source row accounted for, provided exactly the non-churned customers were scored;
    0 otherwise (no promoted model, or a wrong count)."""
    scored, expected = (_count(database, "SELECT count(*) FROM analytics.churn_scores"),
                        _count(database, "SELECT count(*) FROM analytics.customer_churn"
                                         " WHERE churn_flag = 0"))
    return _accounted(database) if scored == expected else 0


def _dagster_job(job: str) -> list[str]:
    return [sys.executable, "-m", "dagster", "job", "execute",
            "-m", "churn_platform.definitions", "-j", job]


def _untimed(command: list[str], env: dict[str, str]) -> None:
    """What a measured extra starts from (the ELT's tables, a promoted model), made before timing."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"preparing with {' '.join(command[-2:])} failed:\n{done.stderr[-2000:]}")


def base_env(duckdb_settings: dict[str, str]) -> dict[str, str]:
    dropped = ("CHURN_PSEUDONYMIZATION_KEY", "CHURN_SOURCE_MAPPING")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(duckdb_settings)
    return env


def prepare(approach: str, csv: Path, run_dir: Path, dagster_home: Path,
            duckdb_settings: dict[str, str]) -> Prepared:
    env = base_env(duckdb_settings)
    warehouse = run_dir / "warehouse.duckdb"
    if approach == "platform":
        # The headless run, as cron or CI would start it: the CLI, its instance, the job.
        env.update(CHURN_SOURCE_CSV=str(csv), CHURN_DUCKDB_PATH=str(warehouse),
                   DAGSTER_HOME=str(dagster_home))
        command = [sys.executable, "-m", "dagster", "job", "execute",
                   "-m", "churn_platform.definitions", "-j", "churn_elt_job"]
        return Prepared(command, env, lambda: _accounted(warehouse))
    if approach in ("model", "rescore"):
        # model: churn_model_job (train on the sample, evaluate, gate, score everyone) after an
        # ELT run; rescore: churn_elt_job when a model is promoted, i.e. the ELT plus scoring.
        # Both compare with `platform`, the ELT before any model exists.
        env.update(CHURN_SOURCE_CSV=str(csv), CHURN_DUCKDB_PATH=str(warehouse),
                   DAGSTER_HOME=str(dagster_home), CHURN_MODEL_DIR=str(run_dir / "models"))
        _untimed(_dagster_job("churn_elt_job"), env)
        if approach == "rescore":
            _untimed(_dagster_job("churn_model_job"), env)
        job = "churn_model_job" if approach == "model" else "churn_elt_job"
        return Prepared(_dagster_job(job), env, lambda: _scored(warehouse))
    if approach == "floor":
        plan = floor.write_plan(str(csv), str(run_dir / "plan.json"))
        command = [sys.executable, "-m", "churn_platform_bench.floor", plan, str(warehouse)]
        return Prepared(command, env, lambda: _accounted(warehouse))
    if approach == "original":
        production = run_dir / "production.duckdb"
        command = [sys.executable, "-m", "churn_platform_bench.original", str(csv),
                   str(run_dir / "staging.duckdb"), str(production)]
        return Prepared(command, env,
                        lambda: _count(production, "SELECT count(*) FROM customer_churn"))
    raise ValueError(f"unknown approach {approach!r}; choose from {', '.join(APPROACHES)}")
