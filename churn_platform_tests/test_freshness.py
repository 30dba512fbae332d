"""Freshness as Dagster 1.13 expresses it: a policy on the assets the hourly schedule refreshes,
judged by the daemon's real freshness loop, and exported for Grafana as the UI shows it."""

import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import dagster as dg
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from churn_platform.core.settings import PROJECT_ROOT
from churn_platform.defs.elt.assets import ANALYTICS, METRICS, STAGING
from churn_platform.defs.export.assets import EXPORT, REPORTED_ASSETS, REPORTED_CHECKS
from churn_platform_tests.export_support import pg_rows, run_job
from churn_platform_tests.location import defs, platform_defs

POLICY_WINDOW = timedelta(hours=1, minutes=15)


def test_the_hourly_assets_carry_a_time_window_policy_and_no_freshness_check():
    graph = defs.resolve_asset_graph()
    with_policy = {key for key in graph.get_all_asset_keys() if graph.get(key).freshness_policy}
    assert with_policy == {ANALYTICS, METRICS}
    for key in with_policy:
        assert graph.get(key).freshness_policy == dg.FreshnessPolicy.time_window(
            fail_window=POLICY_WINDOW)
    assert not [k for k in graph.asset_check_keys if "fresh" in k.name]
    assert not [s.name for s in defs.sensors if "fresh" in s.name]
    assert not [k for k in REPORTED_CHECKS if "fresh" in k.name]


IMPORT_EVERY_MODULE = """
import pkgutil, churn_platform
from churn_platform import definitions
for module in pkgutil.walk_packages(churn_platform.__path__, "churn_platform."):
    __import__(module.name)
definitions.defs()
"""


def test_no_module_of_the_product_raises_a_warning():
    """Superseded APIs (the old freshness checks among them) warn when their module is imported;
    `load_from_defs_folder` hides Dagster's warnings, so every module is imported directly, in a
    fresh interpreter (one already imported here would not warn again)."""
    loaded = subprocess.run(
        [sys.executable, "-W", "always", "-c", IMPORT_EVERY_MODULE],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "Warning" not in loaded.stderr, loaded.stderr


@contextmanager
def _workspace(instance: dg.DagsterInstance):
    """The real code location, as the daemon sees it (loaded in this process)."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="churn_platform.definitions"),
        location_name="churn_platform",
    )
    with create_test_daemon_workspace_context(
        InProcessWorkspaceLoadTarget(origin), instance
    ) as context:
        yield context


def _judge(context, instance) -> dict[dg.AssetKey, str]:
    """One iteration of the daemon's freshness loop, then the states it recorded."""
    list(FreshnessDaemon().run_iteration(context))
    records = instance.get_freshness_state_records([ANALYTICS, METRICS, STAGING])
    return {key: record.freshness_state.value for key, record in records.items()}


def test_never_loaded_is_unknown_then_pass_then_fail_and_exported_so(
    tmp_path, pg_dsn, monkeypatch, sample_csv
):
    database = tmp_path / "warehouse.duckdb"
    location = platform_defs(database, sample_csv)
    with dg.instance_for_test() as instance, _workspace(instance) as context:
        # Before anyone loaded anything: waiting for the first load, not a failure.
        assert _judge(context, instance) == {
            ANALYTICS: "UNKNOWN", METRICS: "UNKNOWN", STAGING: "NOT_APPLICABLE"}

        assert run_job(location, "churn_elt_job", instance).success
        assert _judge(context, instance)[ANALYTICS] == "PASS"
        loaded = datetime.now(timezone.utc)

        # Just inside the window it still passes; just past it, it fails.
        with freeze_time(loaded + POLICY_WINDOW - timedelta(minutes=1)):
            assert _judge(context, instance)[METRICS] == "PASS"
        with freeze_time(loaded + POLICY_WINDOW + timedelta(minutes=1)):
            assert _judge(context, instance) == {
                ANALYTICS: "FAIL", METRICS: "FAIL", STAGING: "NOT_APPLICABLE"}

        monkeypatch.setenv("CHURN_METRICS_DSN", pg_dsn)
        assert run_job(location, "metrics_export_job", instance).success

    exported = dict(pg_rows(pg_dsn, "SELECT asset_key, freshness_state"
                                    " FROM churn_metrics.asset_freshness"))
    assert len(exported) == len(REPORTED_ASSETS)
    assert exported["analytics/customer_churn"] == "FAIL"
    assert exported["analytics/data_quality_metrics"] == "FAIL"
    assert exported["staging/customer_churn"] == "NOT_APPLICABLE"
    # The export asset itself was never judged (the daemon ran before it existed in storage).
    assert exported[EXPORT.to_user_string()] in ("UNKNOWN", "NOT_APPLICABLE")
