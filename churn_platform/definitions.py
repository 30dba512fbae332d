"""The code location: every asset, check, job, schedule and sensor, and the resources they use."""

import dagster as dg

from churn_platform.assets import ELT_ASSETS
from churn_platform.backup import backup_after_elt, warehouse_backup, warehouse_backup_job
from churn_platform.checks import ELT_CHECKS, freshness_checks, freshness_sensor
from churn_platform.export.asset import postgres_metrics
from churn_platform.export.job import metrics_export_job, metrics_export_sensor
from churn_platform.jobs import churn_elt_job, hourly_churn_schedule
from churn_platform.resources import build_resources

defs = dg.Definitions(
    assets=[*ELT_ASSETS, warehouse_backup, postgres_metrics],
    asset_checks=[*ELT_CHECKS, *freshness_checks],
    jobs=[churn_elt_job, warehouse_backup_job, metrics_export_job],
    schedules=[hourly_churn_schedule],
    sensors=[freshness_sensor, backup_after_elt, metrics_export_sensor],
    resources=build_resources(),
    # Ad-hoc materializations from the UI run in one process too: DuckDB takes one writer.
    executor=dg.in_process_executor,
)
