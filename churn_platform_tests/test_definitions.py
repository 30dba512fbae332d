"""The code location loads as `dagster dev` and the CLI load it, with the promised shape."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from churn_platform.core.settings import PROJECT_ROOT, SAMPLE_CSV
from churn_platform.defs.elt.assets import (
    ANALYTICS,
    ELT_ASSETS,
    METRICS,
    REJECTED,
    SEGMENTS,
    STAGING,
)
from churn_platform.defs.warehouse_io import PUBLISHED
from churn_platform_tests.conftest import query, run_elt
from churn_platform_tests.location import defs


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)


def test_every_elt_asset_has_an_owner_group_kind_and_description():
    graph = defs.resolve_asset_graph()
    for key in (STAGING, ANALYTICS, REJECTED, SEGMENTS, METRICS):
        node = graph.get(key)
        assert node.owners == ["team:churn-data"]
        assert node.group_name == key.path[0]
        assert node.kinds and node.description, key


def test_the_job_runs_every_asset_in_one_process_with_retries():
    job = defs.resolve_job_def("churn_elt_job")
    assert job.executor_def is dg.in_process_executor
    assert job.tags["churn_platform/warehouse"] == "duckdb"
    selected = {key for assets in ELT_ASSETS for key in assets.keys}
    assert selected <= set(job.asset_layer.asset_graph.get_all_asset_keys())
    assert (job.op_retry_policy.max_retries, job.op_retry_policy.delay) == (2, 300)


def test_the_hourly_schedule_runs_the_job_from_the_start():
    schedule = defs.resolve_schedule_def("hourly_churn_elt")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.job_name == "churn_elt_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_the_project_declares_its_code_location():
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert "[tool.dg]" in text
    assert 'code_location_target_module = "churn_platform.definitions"' in text
    assert 'code_location_name = "churn_platform"' in text
    assert "churn_platform.definitions" in (PROJECT_ROOT / "workspace.yaml").read_text()


@pytest.mark.slow
def test_the_headless_cli_run_from_the_readme(tmp_path):
    """`dagster job execute -m churn_platform.definitions -j churn_elt_job`, as a user types it:
    on the shipped sample (the default source), so it runs on any clone."""
    database = tmp_path / "cli.duckdb"
    env = {**os.environ, "CHURN_DUCKDB_PATH": str(database), "DAGSTER_HOME": str(tmp_path)}
    env.pop("CHURN_SOURCE_CSV", None)
    (Path(tmp_path) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute",
         "-m", "churn_platform.definitions", "-j", "churn_elt_job"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr + done.stdout
    sample_rows = len(SAMPLE_CSV.read_text().splitlines()) - 1
    assert query(database, "SELECT (SELECT count(*) FROM analytics.customer_churn)"
                           " + (SELECT count(*) FROM analytics.rejected_rows)") == [(sample_rows,)]


def test_the_local_instance_queues_warehouse_runs_one_at_a_time(tmp_path):
    """`make run`'s dagster_home/dagster.yaml, loaded as a real instance."""
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "dagster_home" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        queue = coordinator.get_run_queue_config()
        assert queue.max_concurrent_runs == 1  # asset-graph materializations carry no job tags
        limits = {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits}
        assert instance.scheduler.max_catchup_runs == 1
    job_tags = defs.resolve_job_def("churn_elt_job").tags
    [(tag, value)] = [(k, v) for k, v in job_tags.items() if k in limits]
    assert limits[tag] == 1


def test_every_column_of_every_table_has_a_description_and_every_description_a_column(tmp_path):
    """The UI's Columns table, as the materializations carry it: no empty description."""
    from churn_platform.core.columns import DESCRIPTIONS, STAGING_SOURCE_COLUMN

    result = run_elt(SAMPLE_CSV, tmp_path / "warehouse.duckdb")
    written = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == PUBLISHED:  # a step, not a table: it lists the tables
            continue
        schema = materialization.metadata["dagster/column_schema"].value
        table = ".".join(materialization.asset_key.path)
        written[table] = {c.name: c.description for c in schema.columns}
    assert set(written) == set(DESCRIPTIONS)
    for table, columns in written.items():
        undescribed = [name for name, text in columns.items() if not text]
        assert undescribed == [], table
        stale = set(DESCRIPTIONS[table]) - set(columns)
        assert stale == set(), table
    assert written["staging.customer_churn"]["Churn"] == STAGING_SOURCE_COLUMN
    assert "pseudonym" in written["analytics.customer_churn"]["anonymized_customer_id"].lower()


def test_group_names_match_key_prefixes():
    graph = defs.resolve_asset_graph()
    groups = {key: graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {key: group for key, group in groups.items() if group != key.path[0]} == {}


def test_every_schedule_and_sensor_says_what_it_does():
    undescribed = [s.name for s in [*defs.schedules, *defs.sensors] if not s.description]
    assert undescribed == []


def test_the_model_job_trains_gates_and_scores_daily_and_the_elt_rescores():
    from churn_platform.defs.model.assets import (
        EVALUATIONS,
        MODEL,
        SCORE_SUMMARY,
        SCORES,
    )

    graph = defs.resolve_asset_graph()
    assert graph.get(MODEL).group_name == "models" and graph.get(MODEL).owners
    job = defs.resolve_job_def("churn_model_job")
    assert job.executor_def is dg.in_process_executor
    assert job.tags["churn_platform/warehouse"] == "duckdb"
    keys = set(job.asset_layer.asset_graph.get_all_asset_keys())
    assert {MODEL, EVALUATIONS, SCORES, SCORE_SUMMARY} <= keys
    from churn_platform.defs.model.checks import (
        churn_risk_gate,
        churn_risk_not_near_perfect,
    )

    assert all(spec.blocking for spec in churn_risk_gate.check_specs)
    assert not any(spec.blocking for spec in churn_risk_not_near_perfect.check_specs)
    schedule = defs.resolve_schedule_def("daily_churn_model")
    assert schedule.job_name == "churn_model_job" and schedule.description
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    elt = defs.resolve_job_def("churn_elt_job").asset_layer.asset_graph.get_all_asset_keys()
    assert {SCORES, SCORE_SUMMARY} <= set(elt)
