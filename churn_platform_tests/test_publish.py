"""Write-audit-publish: a run's tables appear together, after their blocking checks, or not at all.

Readers (a connection opened between steps, the metrics export, the backups) see the last
published set whole; a run held back by a blocking check publishes nothing and says why.
"""

import dagster as dg
import duckdb
import pytest

from churn_platform import sample_data
from churn_platform.core import settings
from churn_platform.core.backups import list_backups, restore_backup
from churn_platform.defs.backup.assets import warehouse_backup
from churn_platform.defs.elt import assets
from churn_platform.defs.elt.assets import ANALYTICS, ELT_ASSETS, PUBLISHED, STAGING
from churn_platform.defs.elt.checks import ELT_CHECKS
from churn_platform.defs.resources import build_resources
from churn_platform_tests.conftest import (
    ELT_TABLES,
    published_set,
    published_set_of,
    query,
    run_elt,
)
from churn_platform_tests.export_support import pg_rows, run_job
from churn_platform_tests.location import platform_defs

STAGING_ROWS = "staging.customer_churn"


@pytest.fixture(scope="module")
def other_csv(tmp_path_factory):
    """Another file than the sample: 3,000 rows, some of them rejected."""
    return sample_data.write_sample(tmp_path_factory.mktemp("other") / "other.csv", 3000, seed=11)


def table_rows(database) -> dict[str, list[tuple]]:
    return {t: query(database, f"SELECT * FROM {t} ORDER BY ALL") for t in ELT_TABLES}


def candidates(database) -> list[str]:
    return [r[0] for r in query(database, "SELECT schema_name || '.' || table_name FROM"
                                          " duckdb_tables() WHERE starts_with(table_name, '_candidate_')")]


def lose_rejected_rows(monkeypatch):
    """A transform bug: the rejected-rows candidate comes out empty, and parity must catch it."""
    real = assets.rejected_sql
    monkeypatch.setattr(assets, "rejected_sql", lambda *args: f"SELECT * FROM ({real(*args)}) WHERE false")


def test_a_reader_between_every_pair_of_steps_sees_one_published_set(
    sample_csv, other_csv, warehouse, monkeypatch
):
    """Paused at every step boundary (and inside the publish transaction), a connection of its
    own reads the previous run's whole set until the publish commits, then the whole new one.
    (Another process cannot open the file while a run holds it: DuckDB takes one writer.)"""
    assert run_elt(sample_csv, warehouse).success
    before = published_set_of(warehouse)
    seen = []

    def look(where: str):
        with duckdb.connect(str(warehouse), config=settings.duckdb_config()) as reader:
            try:
                seen.append((where, published_set(reader)))
            except AssertionError as broken:
                seen.append((where, f"inconsistent: {broken}"))

    merge = assets.publish.merge_history

    def merge_then_look(*args, **kwargs):
        result = merge(*args, **kwargs)
        look("inside the publish transaction")
        return result

    monkeypatch.setattr(assets.publish, "merge_history", merge_then_look)
    with dg.instance_for_test() as instance:
        handle = instance.handle_new_event

        def handle_then_look(event, **kwargs):
            handle(event, **kwargs)
            if event.dagster_event and event.dagster_event.event_type_value in (
                    "STEP_START", "STEP_SUCCESS"):
                look(f"{event.step_key} {event.dagster_event.event_type_value}")

        instance.handle_new_event = handle_then_look
        result = dg.materialize([*ELT_ASSETS, *ELT_CHECKS], instance=instance,
                                resources=build_resources(str(warehouse), str(other_csv)))
    assert result.success
    after = published_set_of(warehouse)
    assert [(w, counts) for w, counts in seen if counts not in (before, after)] == []
    assert after[STAGING_ROWS] == 3000 and before[STAGING_ROWS] == 1000
    assert len(seen) > 15 and "inside the publish transaction" in dict(seen)
    publish_done = [w for w, _ in seen].index("analytics__published STEP_SUCCESS")
    assert all(counts == before for _, counts in seen[:publish_done]), seen
    assert all(counts == after for _, counts in seen[publish_done:]), seen
    # The UI: each table's materialization describes its candidate; the publish, what it published.
    by_key = {e.materialization.asset_key: e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    assert "this run's candidate" in by_key[STAGING]["publication"].value
    assert by_key[STAGING]["dagster/row_count"].value == 3000
    published = by_key[PUBLISHED]
    assert {t: published[f"{t}: rows"].value for t in ELT_TABLES} == after
    assert "anonymized_customer_id UUID" in published["schemas"].value
    # The drift check ran before the publish, on the history as it would read with this run's
    # candidate snapshot in it.
    [drift] = [e for e in result.get_asset_check_evaluations() if e.check_name == "churn_rate_drift"]
    [(rate,)] = query(warehouse, "SELECT churn_rate_percent FROM analytics.data_quality_metrics"
                                 " ORDER BY snapshot_at DESC LIMIT 1")
    assert drift.metadata["churn_rate_percent"].value == rate
    # The earlier snapshot is another file's: read, and not compared (history per source).
    assert drift.metadata["earlier snapshots"].value == 0
    assert drift.metadata["snapshots of other sources (not compared)"].value == 1


def test_a_failing_blocking_check_holds_the_whole_run_back(
    sample_csv, other_csv, warehouse, monkeypatch, tmp_path
):
    """A transform that loses the rejected rows: parity fails on the candidates, nothing of the
    run is published, the run says which check stopped it, and a backup carries the last set."""
    assert run_elt(sample_csv, warehouse).success
    before = table_rows(warehouse)
    lose_rejected_rows(monkeypatch)
    result = run_elt(other_csv, warehouse, raise_on_error=False)
    assert not result.success
    [parity] = [e for e in result.get_asset_check_evaluations()
                if e.check_name == "row_count_parity"]
    assert not parity.passed and parity.metadata["difference"].value > 0
    assert table_rows(warehouse) == before  # every published table exactly as it was
    assert "nothing of this run is published" in parity.metadata["held back"].value
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "split_checks" in steps and "analytics__published" not in steps
    materialized = {e.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert PUBLISHED not in materialized
    assert len(candidates(warehouse)) == 3  # held back, for whoever looks into why

    monkeypatch.setenv("CHURN_BACKUP_DIR", str(tmp_path / "backups"))
    assert dg.materialize([warehouse_backup], resources=build_resources(str(warehouse))).success
    [backup] = list_backups(tmp_path / "backups")
    restore_backup(backup, tmp_path / "restored.duckdb")
    assert table_rows(tmp_path / "restored.duckdb") == before
    assert candidates(tmp_path / "restored.duckdb") == []
    assert len(candidates(warehouse)) == 3  # the backup left the file as it was

    monkeypatch.undo()
    assert run_elt(other_csv, warehouse).success  # the next run drops them and publishes
    assert candidates(warehouse) == []
    assert published_set_of(warehouse)[STAGING_ROWS] == 3000


def test_the_export_after_a_held_back_run_ships_the_published_snapshot_only(
    sample_csv, other_csv, tmp_path, pg_dsn, monkeypatch
):
    database = tmp_path / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        good = run_job(platform_defs(database, sample_csv), "churn_elt_job", instance)
        assert good.success
        lose_rejected_rows(monkeypatch)
        held = run_job(platform_defs(database, other_csv), "churn_elt_job", instance,
                       raise_on_error=False)
        assert not held.success
        monkeypatch.setenv(settings.METRICS_DSN_ENV, pg_dsn)
        assert run_job(platform_defs(database, other_csv), "metrics_export_job", instance).success
    exported = pg_rows(pg_dsn, "SELECT source_run_id, total_records FROM churn_metrics.kpi_snapshots")
    assert exported == [(good.run_id, 1000)]
    checks = pg_rows(pg_dsn, "SELECT check_name, passed FROM churn_metrics.asset_check_results"
                             " WHERE check_name = 'row_count_parity'")
    assert checks == [("row_count_parity", False)]  # the held-back run's check, for Grafana


def test_a_table_materialized_without_the_publish_step_is_refused(sample_csv, other_csv,
                                                                  warehouse):
    """From the UI, analytics alone: the step fails at once, saying what to select."""
    assert run_elt(sample_csv, warehouse).success
    before = table_rows(warehouse)
    result = dg.materialize([*ELT_ASSETS, *ELT_CHECKS], selection=[ANALYTICS],
                            resources=build_resources(str(warehouse), str(other_csv)),
                            raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert "analytics.customer_churn" in message and "select analytics/published" in message
    assert table_rows(warehouse) == before and candidates(warehouse) == []


def test_analytics_with_the_publish_step_is_published_beside_the_same_staging(
    sample_csv, warehouse
):
    """What a user gets for analytics/customer_churn + analytics/published: a new analytics
    table from the published staging, published because parity still holds."""
    assert run_elt(sample_csv, warehouse).success
    first = query(warehouse, "SELECT max(processed_timestamp) FROM analytics.customer_churn")
    result = run_elt(sample_csv, warehouse, selection=[ANALYTICS])
    assert result.success
    assert query(warehouse, "SELECT max(processed_timestamp) FROM analytics.customer_churn") > first
    [event] = [e for e in result.get_asset_materialization_events()
               if e.materialization.asset_key == PUBLISHED]
    assert event.materialization.metadata["tables published"].value == "analytics.customer_churn"
    published_set_of(warehouse)


def test_staging_alone_from_another_file_is_not_published(sample_csv, other_csv, warehouse):
    """A new staging beside the old analytics would break parity: refused at the publish."""
    assert run_elt(sample_csv, warehouse).success
    before = table_rows(warehouse)
    result = run_elt(other_csv, warehouse, selection=[STAGING], raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "analytics__published"
    message = failure.step_failure_data.user_failure_data.description
    assert "would break row_count_parity" in message and "staging 3000 rows" in message
    assert table_rows(warehouse) == before
