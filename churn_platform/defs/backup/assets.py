"""The backup asset, its job, and the sensor that starts it after every successful ELT run."""

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from churn_platform.core import settings
from churn_platform.core.backup_manifest import verify_backup
from churn_platform.core.backup_models import recorded_versions
from churn_platform.core.backups import prune_backups, take_backup
from churn_platform.defs.elt.assets import METRICS, OWNERS
from churn_platform.defs.elt.jobs import churn_elt_job
from churn_platform.defs.failures import reported_as_failure
from churn_platform.defs.resources import ChurnModelStore
from churn_platform.defs.runs import WAREHOUSE_TAG
from churn_platform.defs.warehouse_io import WarehouseResource

BACKUP = dg.AssetKey(["backups", "warehouse"])


@dg.asset(
    key=BACKUP,
    deps=[METRICS],
    group_name="backups",
    kinds={"duckdb", "parquet"},
    owners=OWNERS,
    description=(
        "A consistent Parquet copy of the whole warehouse with a verified manifest (staging"
        " included: owner-only, keep it as private as the warehouse), plus the churn model files"
        " it records, kept by CHURN_BACKUP_KEEP and CHURN_BACKUP_MAX_AGE_HOURS."
    ),
)
def warehouse_backup(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource,
    churn_models: dg.ResourceParam[ChurnModelStore],
) -> dg.MaterializeResult:
    root = settings.backup_dir()
    now = datetime.now(timezone.utc)
    with warehouse.get_connection(read_only=True) as conn, reported_as_failure():
        backup = take_backup(conn, root, now, Path(churn_models.directory))
        recorded = recorded_versions(conn)
    with reported_as_failure():
        models = [m.version for m in verify_backup(backup).models]
    # A model the warehouse names but whose file is gone or changed cannot be carried: say so.
    for version in sorted(set(recorded) - set(models)):
        context.log.warning(f"model {version} is recorded in the warehouse but not backed up: its"
                            f" file in {churn_models.directory} is missing or changed")
    # Only verified warehouse-<stamp> folders count and may go; anything else stays, reported.
    pruned = prune_backups(root, settings.backup_keep(), settings.backup_max_age(), now,
                           taken=backup)
    for name, why in pruned.ignored.items():
        context.log.warning(f"{root / name} left alone, not a verified backup: {why}")
    return dg.MaterializeResult(
        metadata={
            "backup": str(backup),
            "size_bytes": sum(f.stat().st_size for f in backup.iterdir()),
            "backups_kept": len(pruned.kept),
            "backups_removed": len(pruned.removed),
            "models": len(models),
            "models_not_backed_up": len(set(recorded) - set(models)),
            "ignored_folders": dg.MetadataValue.json(pruned.ignored),
        }
    )


warehouse_backup_job = dg.define_asset_job(
    name="warehouse_backup_job",
    selection=[BACKUP],
    tags=WAREHOUSE_TAG,
    description="Back up the warehouse; started after every successful churn_elt_job run.",
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[churn_elt_job],
    request_job=warehouse_backup_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Backs up the warehouse after every successful churn_elt_job run (one backup per run:"
        " keyed on its run id); an idle tick says the sensor found no new successful run."
    ),
)
def backup_after_elt(context: dg.RunStatusSensorContext):
    return dg.RunRequest(run_key=context.dagster_run.run_id)
