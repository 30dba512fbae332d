"""Landing mode as its user meets it (issue 16, "done when"): `dagster dev`, as `make run` starts
it, pointed at a folder of three daily exports dropped at once and out of date order. The
landing sensor (on by default) registers each export as a partition of `churn_exports` and the
daemon loads them; the partitions fill, read through GraphQL as the UI's partition bar reads
them; then latest_export_sensor runs the ELT on the latest export. History, churn events and
cohorts are the hand-computed ones, and staging is the latest export's rows."""

import os
import shutil

import pytest

from churn_platform.core.settings import PROJECT_ROOT
from churn_platform_tests.conftest import LANDING_KEY, query
from churn_platform_tests.stack import (
    GraphQL,
    ProcessGroups,
    list_runs,
    venv_path,
    wait_until,
)
from churn_platform_tests.test_landing_load import (
    D1,
    D2,
    D3,
    DAYS,
    assert_hand_computed,
    drop,
)

PARTITIONS = """
query Partitions($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed } }
  }
}"""


def partition_stats(gql: GraphQL) -> dict:
    return gql(PARTITIONS, path=["landing", "export_rows"])["assetNodeOrError"]["partitionStats"]


def settled_elt(gql: GraphQL) -> dict | None:
    """The last churn_elt_job run, once it succeeded and nothing else is queued or running."""
    runs = list_runs(gql)
    if any(r["status"] not in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
        return None
    elt = [r for r in runs if r["jobName"] == "churn_elt_job"]
    return elt[0] if elt and elt[0]["status"] == "SUCCESS" else None


@pytest.mark.slow
def test_exports_dropped_in_the_folder_fill_their_partitions_and_build_history(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    for day in (D3, D1, D2):  # late files are placed by their export date
        drop(folder, day)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    warehouse = tmp_path / "warehouse.duckdb"
    env = {**os.environ, "DAGSTER_HOME": str(home), "CHURN_LANDING_DIR": str(folder),
           "CHURN_PSEUDONYMIZATION_KEY": LANDING_KEY, "CHURN_LANDING_SETTLE_SECONDS": "0",
           # As the hand computation counts: missing from one export is churned.
           "CHURN_MISSING_EXPORTS_FOR_CHURN": "1",
           "CHURN_DUCKDB_PATH": str(warehouse), "CHURN_RETRY_DELAY_SECONDS": "0",
           "PATH": venv_path()}
    env.pop("CHURN_METRICS_DSN", None)
    groups = ProcessGroups(tmp_path, env, PROJECT_ROOT)
    try:
        gql = groups.start_ui()
        loaded = wait_until(
            "three loaded export partitions",
            lambda: (s := partition_stats(gql)) and s["numMaterialized"] == 3 and s, 300,
            interval=2, on_timeout=lambda: groups.log("dev"))
        assert loaded == {"numMaterialized": 3, "numPartitions": 3, "numFailed": 0}
        wait_until("the ELT on the latest export", lambda: settled_elt(gql), 300, interval=2,
                   on_timeout=lambda: groups.log("dev"))
        failed = [r for r in list_runs(gql) if r["status"] != "SUCCESS"]
        assert failed == [], groups.log("dev")
    finally:
        groups.stop_all()
    assert_hand_computed(warehouse)
    assert sorted(query(warehouse, 'SELECT "CustomerID" FROM staging.customer_churn')) == sorted(
        (line.split(",")[0],) for line in DAYS[D3])
