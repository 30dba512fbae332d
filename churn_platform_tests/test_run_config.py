"""Whoever can launch a run (the Launchpad, the GraphQL API) cannot redirect the load: the source's
paths and the names of secret variables are deployment settings, and run config naming them is
refused before any step starts. What a run loaded is visible with its staging materialization."""

import hashlib

import dagster as dg
import pytest

from churn_platform.core.settings import DEFAULT_SOURCE_MAPPING
from churn_platform.defs.elt.assets import ELT_ASSETS, STAGING
from churn_platform.defs.elt.checks import ELT_CHECKS
from churn_platform.defs.resources import build_resources
from churn_platform_tests.conftest import HEADER, query, write_csv
from churn_platform_tests.export_support import run_job
from churn_platform_tests.location import defs as location_defs
from churn_platform_tests.location import platform_defs

ROW = "C-1,40,Female,10,70.5,One-Year,DSL,705.0,Yes,No"
OTHER_ROWS = [f"OTHER-{n},33,Male,2,20,Month-to-Month,DSL,40,No,Yes" for n in range(5)]


@pytest.fixture
def files(tmp_path):
    """The configured CSV (one row) and another one an attacker would like loaded (five rows)."""
    configured = write_csv(tmp_path / "configured.csv", f"{HEADER}\n{ROW}\n")
    other = write_csv(tmp_path / "other.csv", "\n".join([HEADER, *OTHER_ROWS]) + "\n")
    return configured, other


def _overrides(other) -> list[tuple[str, dict]]:
    return [
        ("churn_source", {"csv_path": str(other)}),
        ("churn_source", {"csv_path": "/etc/passwd"}),
        ("churn_source", {"mapping_path": "/dev/zero"}),
        ("churn_source", {"pseudonymization_key_env": "CHURN_METRICS_DSN"}),
        ("metrics_db", {"dsn_env": "SOME_OTHER_SECRET"}),
    ]


def test_run_config_cannot_point_the_source_elsewhere(files, warehouse, monkeypatch):
    configured, other = files
    monkeypatch.setenv("CHURN_METRICS_DSN", "host=db password=not-a-key")
    for resource, config in _overrides(other):
        with pytest.raises(dg.DagsterInvalidConfigError, match=f"resources:{resource}:config"):
            dg.materialize(
                [*ELT_ASSETS, *ELT_CHECKS],
                resources=build_resources(str(warehouse), str(configured)),
                run_config={"resources": {resource: {"config": config}}},
            )
        assert not warehouse.exists(), f"{config}: refused, yet something ran"
    # The other side of the boundary: without run config the configured file is what loads.
    assert dg.materialize([*ELT_ASSETS, *ELT_CHECKS],
                          resources=build_resources(str(warehouse), str(configured))).success
    assert query(warehouse, 'SELECT "CustomerID" FROM staging.customer_churn') == [("C-1",)]


def test_the_jobs_refuse_it_too(files, warehouse):
    configured, other = files
    defs = platform_defs(warehouse, configured)
    with dg.instance_for_test() as instance:
        for job in ("churn_elt_job", "metrics_export_job"):
            for resource, config in _overrides(other):
                with pytest.raises(dg.DagsterInvalidConfigError):
                    run_job(defs, job, instance,
                            run_config={"resources": {resource: {"config": config}}})
        assert not instance.get_runs(), "a refused run config starts no run"
        assert not warehouse.exists()
        assert run_job(defs, "churn_elt_job", instance).success


def test_the_launchpad_offers_nothing_to_set_for_the_source_or_the_dsn():
    """The deployed location's jobs, as the UI validates their config: no field to fill in."""
    for name in ("churn_elt_job", "metrics_export_job"):
        job = location_defs.resolve_job_def(name)
        for resource in ("churn_source", "metrics_db"):
            config = {"resources": {resource: {"config": {"csv_path": "/etc/passwd"}}}}
            with pytest.raises(dg.DagsterInvalidConfigError, match="unexpected config entry"):
                dg.validate_run_config(job, config)
        assert dg.validate_run_config(job, {}) is not None


def test_staging_shows_the_file_and_mapping_it_loaded(files, warehouse):
    configured, _ = files
    result = dg.materialize([*ELT_ASSETS, *ELT_CHECKS],
                            resources=build_resources(str(warehouse), str(configured)))
    [staged] = [m for m in result.get_asset_materialization_events()
                if m.asset_key == STAGING]
    metadata = {k: v.value for k, v in staged.materialization.metadata.items()}
    assert metadata["source_file"] == str(configured)
    assert metadata["source_sha256"] == hashlib.sha256(configured.read_bytes()).hexdigest()
    assert metadata["source_mapping"] == str(DEFAULT_SOURCE_MAPPING)
    assert metadata["source_mapping_sha256"] == hashlib.sha256(
        DEFAULT_SOURCE_MAPPING.read_bytes()).hexdigest()
