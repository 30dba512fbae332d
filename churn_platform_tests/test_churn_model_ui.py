"""Materializing `models/churn_risk` from the UI (issue 15, "runs from the UI"): `dagster dev`
as `make run` starts it, the asset graph's Materialize button sent as the UI sends it (GraphQL
`launchRun` of the implicit asset job with an asset selection), queued, dequeued by the daemon,
run in its own process. It trains, gates and records the model; the scores are not selected."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from churn_platform.core.settings import PROJECT_ROOT
from churn_platform.sample_data import write_sample
from churn_platform_tests.conftest import query
from churn_platform_tests.stack import (
    ProcessGroups,
    finished,
    launch_run,
    wait_until,
)
from churn_platform_tests.test_churn_model_runs import Platform

# What the UI selects for the Materialize button on models/churn_risk: the multi-asset's keys
# (it is not subsettable), and with them their checks.
SELECTED = [["models", "churn_risk"], ["analytics", "churn_model_evaluations"]]

RUN_CHECKS = """
query Checks($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events { ... on AssetCheckEvaluationEvent { evaluation { checkName success } } }
    }
  }
}"""



@pytest.mark.slow
def test_materializing_the_model_from_the_ui_trains_gates_and_records_it(tmp_path):
    csv = write_sample(tmp_path / "customers.csv", 3000, seed=11)
    assert Platform(tmp_path, csv).run("churn_elt_job").success  # the analytics it trains on
    assert query(tmp_path / "warehouse.duckdb", "SELECT count(*) FROM information_schema.tables"
                 " WHERE table_name = 'churn_model_evaluations'") == [(0,)]
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "CHURN_SOURCE_CSV": str(csv),
           "CHURN_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
           "CHURN_MODEL_DIR": str(tmp_path / "models"), "CHURN_RETRY_DELAY_SECONDS": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("CHURN_METRICS_DSN", None)
    groups = ProcessGroups(tmp_path, env, PROJECT_ROOT)
    try:
        gql = groups.start_ui()
        run_id = launch_run(gql, "__ASSET_JOB", assets=SELECTED)
        run = wait_until("the model's run", lambda: finished(gql, run_id), 300, interval=2,
                         on_timeout=lambda: groups.log("dev"))
        assert run["status"] == "SUCCESS", groups.log("dev")
        events = gql(RUN_CHECKS, runId=run_id)["logsForRun"]["events"]
        checks = {e["evaluation"]["checkName"]: e["evaluation"]["success"]
                  for e in events if e.get("evaluation")}
        assert checks == {"churn_risk_gate": True, "churn_risk_not_near_perfect": True}
    finally:
        groups.stop_all()
    [(version, promoted)] = query(tmp_path / "warehouse.duckdb",
                                  "SELECT model_version, promoted"
                                  " FROM analytics.churn_model_evaluations")
    assert promoted and (tmp_path / "models" / f"{version}.zip").is_file()
    # Only what was selected ran: no scores until a job (or a selection) includes them.
    assert query(tmp_path / "warehouse.duckdb", "SELECT count(*) FROM information_schema.tables"
                 " WHERE table_name = 'churn_scores'") == [(0,)]
