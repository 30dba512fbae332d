"""The export job and the asset sensor that starts it after every new metrics snapshot.

The run_key is the run id of the materialization the sensor saw, taken from the event itself:
an asset sensor's cursor is updated only after the function returns (it is None on the first
tick), so a re-evaluated tick asks for the same run_key and Dagster starts no second export.
"""

import dagster as dg

from churn_platform.core import settings
from churn_platform.defs.elt.assets import METRICS
from churn_platform.defs.export.assets import EXPORT
from churn_platform.defs.runs import RETRY_POLICY, WAREHOUSE_TAG

SOURCE_RUN_TAG = "churn_platform/source_run_id"

# Queued with the ELT runs (same tag, limit 1): the export's brief DuckDB read never races a writer.
# An unreachable PostgreSQL raises a retryable failure: the retry policy tries again later.
metrics_export_job = dg.define_asset_job(
    name="metrics_export_job",
    selection=dg.AssetSelection.assets(EXPORT),
    executor_def=dg.in_process_executor,
    op_retry_policy=RETRY_POLICY,
    tags=WAREHOUSE_TAG,
    description="Sync the metrics history and the pipeline's state into PostgreSQL for Grafana.",
)


def export_after(asset_key: dg.AssetKey, name: str, what: str) -> dg.SensorDefinition:
    """A sensor that starts metrics_export_job after each materialization of `asset_key`."""

    @dg.asset_sensor(
        asset_key=asset_key,
        job=metrics_export_job,
        name=name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=(f"Exports {what} to PostgreSQL. Off while {settings.METRICS_DSN_ENV} is"
                     " unset: each tick is skipped, and says so."),
    )
    def _sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        if settings.metrics_dsn() is None:
            return dg.SkipReason(
                f"{settings.METRICS_DSN_ENV} is not set: no metrics database to export to. Set it"
                " to a libpq connection string; the next export then syncs everything not yet"
                " exported."
            )
        return dg.RunRequest(
            run_key=f"metrics-export-{asset_event.run_id}",
            tags={SOURCE_RUN_TAG: asset_event.run_id},
        )

    return _sensor


metrics_export_sensor = export_after(METRICS, "metrics_export_sensor",
                                     "each new data-quality snapshot")
