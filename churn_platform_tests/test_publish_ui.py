"""A held-back run as a user sees it in the UI: the webserver's GraphQL, runs launched from it
and run by the daemon in their own processes, against a real warehouse file.

The transform bug is planted in the run's process by a test-only sitecustomize
(support/lose_rejected_rows) and switched on by a flag file, so the same server first publishes a
good run and then holds one back.
"""

import os
import shutil

import duckdb

from churn_platform.core.settings import PROJECT_ROOT, SAMPLE_CSV
from churn_platform.core.tables import ANALYTICS_TABLE, REJECTED_TABLE, STAGING_TABLE
from churn_platform_tests.postgres import free_port
from churn_platform_tests.stack import (
    GraphQL,
    ProcessGroups,
    finished,
    latest_check_executions,
    launch_run,
    own_the_schedule,
    venv_path,
    wait_until,
)

TIMEOUT = 180
WORKSPACE = str(PROJECT_ROOT / "workspace.yaml")  # the location named churn_platform, as make run
PLANTED_BUG = PROJECT_ROOT / "churn_platform_tests" / "support" / "lose_rejected_rows"

LATEST = """
query Latest($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries { label ... on MarkdownMetadataEntry { mdStr } }
      }
    }
  }
}"""


def latest_materialization(gql: GraphQL, *path: str) -> dict:
    [event] = gql(LATEST, path=list(path))["assetNodeOrError"]["assetMaterializations"]
    return event


def test_the_ui_shows_which_blocking_check_held_a_run_back(tmp_path):
    home, warehouse, flag = tmp_path / "home", tmp_path / "warehouse.duckdb", tmp_path / "bug-on"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "PATH": venv_path(),
        "PYTHONPATH": os.pathsep.join([str(PLANTED_BUG), str(PROJECT_ROOT)]),
        "CHURN_TEST_LOSE_REJECTED_ROWS": str(flag),
        "DAGSTER_HOME": str(home),
        "CHURN_DUCKDB_PATH": str(warehouse),
        "CHURN_SOURCE_CSV": str(SAMPLE_CSV),
        "CHURN_RETRY_DELAY_SECONDS": "1",
    }
    for name in ("CHURN_METRICS_DSN", "CHURN_LANDING_DIR", "CHURN_PSEUDONYMIZATION_KEY"):
        env.pop(name, None)
    (tmp_path / "logs").mkdir()
    procs = ProcessGroups(tmp_path / "logs", env, PROJECT_ROOT)
    port = free_port()
    gql = GraphQL(f"http://127.0.0.1:{port}")

    def logs() -> str:
        return "\n".join(f"--- {name}\n{procs.log(name)}" for name in procs.started)

    def run_to_the_end(run_id: str) -> str:
        return wait_until(f"run {run_id}", lambda: finished(gql, run_id), TIMEOUT,
                          on_timeout=logs)["status"]

    try:
        procs.start("webserver", ["dagster-webserver", "-w", WORKSPACE,
                                  "-h", "127.0.0.1", "-p", str(port)])
        wait_until("the webserver", lambda: _answers(gql), TIMEOUT, on_timeout=logs)
        own_the_schedule(gql, "hourly_churn_elt")
        procs.start("daemon", ["dagster-daemon", "run", "-w", WORKSPACE])

        good = launch_run(gql, "churn_elt_job")
        assert run_to_the_end(good) == "SUCCESS", logs()
        flag.touch()  # the bug is on for the next run
        held = launch_run(gql, "churn_elt_job")
        assert run_to_the_end(held) == "FAILURE", logs()

        # The check's page: parity failed on the held-back run, saying what it held back.
        execution = latest_check_executions(gql)[(("analytics", "rejected_rows"),
                                                  "row_count_parity")]
        assert execution["runId"] == held
        assert execution["status"] == "FAILED" and not execution["evaluation"]["success"]
        entries = {e["label"]: e.get("text") for e in execution["evaluation"]["metadataEntries"]}
        assert "nothing of this run is published" in entries["held back"]

        # The asset pages: the published set is still the good run's; the held-back run's table
        # materializations describe candidates and say that publishing is a separate step.
        assert latest_materialization(gql, "analytics", "published")["runId"] == good
        candidate = latest_materialization(gql, "analytics", "customer_churn")
        assert candidate["runId"] == held
        notes = {e["label"]: e.get("mdStr") for e in candidate["metadataEntries"]}
        assert "held back" in notes["publication"]
    finally:
        procs.stop_all()

    # The file, once the processes are gone: the good run's set whole, the held-back candidates
    # beside it for inspection.
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in (STAGING_TABLE, ANALYTICS_TABLE, REJECTED_TABLE)}
        candidates = conn.execute("SELECT count(*) FROM duckdb_tables()"
                                  " WHERE starts_with(table_name, '_candidate_')").fetchone()[0]
    staging_rows = len(SAMPLE_CSV.read_text().splitlines()) - 1
    assert counts[STAGING_TABLE] == staging_rows
    assert counts[ANALYTICS_TABLE] + counts[REJECTED_TABLE] == staging_rows
    assert candidates == 3


def _answers(gql: GraphQL) -> bool:
    try:
        return bool(gql("{ version }"))
    except Exception:  # not up yet
        return False
