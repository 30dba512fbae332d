"""The export as an asset, downstream of the metrics, so lineage shows where the numbers go."""

import dagster as dg

from churn_platform.core import settings
from churn_platform.core.export.postgres import SCHEMA, describe_dsn
from churn_platform.defs.elt.assets import ELT_ASSETS, METRICS, OWNERS, SEGMENTS
from churn_platform.defs.elt.checks import ELT_CHECKS
from churn_platform.defs.export.sync import export_metrics
from churn_platform.defs.failures import reported_as_failure
from churn_platform.defs.resources import MetricsDatabase
from churn_platform.defs.warehouse_io import WarehouseResource

EXPORT = dg.AssetKey(["metrics_export", "postgres_metrics"])

# What the export reports on: the platform's assets and every check on them.
REPORTED_ASSETS = [*(a.key for a in ELT_ASSETS), EXPORT]
REPORTED_CHECKS = [key for c in ELT_CHECKS for key in c.check_keys]


@dg.asset(
    key=EXPORT,
    deps=[METRICS, SEGMENTS],
    group_name="metrics_export",
    kinds={"postgres", "grafana"},
    owners=OWNERS,
    output_required=False,
    description=(
        f"Snapshot history, churn by segment, latest check results, freshness and run history in"
        f" PostgreSQL (schema `{SCHEMA}`), for the Grafana dashboards. Off while"
        f" {settings.METRICS_DSN_ENV} is unset: the step then records `export: off` and writes"
        " nothing."
    ),
)
def postgres_metrics(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, metrics_db: dg.ResourceParam[MetricsDatabase]
):
    dsn = metrics_db.dsn()
    if dsn is None:
        # Off by configuration, not a fault: said plainly where the asset's events show it.
        context.log.info(f"Export off: {metrics_db.dsn_env} is unset.")
        context.log_event(dg.AssetObservation(
            asset_key=EXPORT, metadata={"export": f"off ({metrics_db.dsn_env} unset)"}))
        return
    with reported_as_failure():
        summary = export_metrics(
            context.instance,
            dsn,
            warehouse,
            check_keys=REPORTED_CHECKS,
            asset_keys=REPORTED_ASSETS,
            export_run_id=context.run_id,
            reader=settings.grafana_reader(),
            retention=settings.metrics_retention(),
        )
    context.log.info(
        f"Exported {summary.snapshots_added} new snapshots and {summary.runs_synced} runs to"
        f" {describe_dsn(dsn)}."
    )
    yield dg.MaterializeResult(
        metadata={
            "target": describe_dsn(dsn),
            "snapshots_added": summary.snapshots_added,
            **{f"rows_added: {name}": n for name, n in summary.rows_added.items()},
            "check_results": summary.check_results,
            "assets": summary.assets,
            "runs_synced": summary.runs_synced,
            "history_rows_expired": summary.rows_expired,
            **{f"rows_replaced: {name}": n for name, n in summary.tables_replaced.items()},
            "warehouse_file_bytes": dg.MetadataValue.int(summary.warehouse_file_bytes or 0),
        }
    )
