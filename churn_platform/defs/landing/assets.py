"""The exports as Dagster sees them: one dynamic partition per export, and the export's file.

The asset only vouches for the file (found by content, hash checked) and records what it is; the
partitioned staging load that reads it is wired on top of it (issue 16), not here.
"""

import dagster as dg

from churn_platform.core import landing, settings
from churn_platform.core.errors import InputError
from churn_platform.defs.elt.assets import OWNERS
from churn_platform.defs.failures import reported_as_failure

EXPORTS_PARTITIONS = dg.DynamicPartitionsDefinition(name="churn_exports")
EXPORT_FILE = dg.AssetKey(["landing", "export_file"])


@dg.asset(
    key=EXPORT_FILE,
    partitions_def=EXPORTS_PARTITIONS,
    group_name="landing",
    kinds={"csv"},
    owners=OWNERS,
    description=(
        "One export file of the landing folder (CHURN_LANDING_DIR) per partition: found by its"
        " content, its SHA-256 checked, its date and where the date came from recorded."
    ),
)
def landing_export_file(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    with reported_as_failure():
        folder = settings.landing_dir()
        if folder is None:
            raise InputError(f"{settings.LANDING_DIR_ENV} is not set: no landing folder to read")
        export = landing.locate(folder, context.partition_key)
    return dg.MaterializeResult(metadata={
        "file": export.name,
        "sha256": export.sha256,
        "size_bytes": export.size,
        "export_date": export.export_date.isoformat(),
        "date_from": export.date_source,
        "arrived_at": export.arrived_at.isoformat(),
    })


landing_export_job = dg.define_asset_job(
    name="landing_export_job",
    selection=[EXPORT_FILE],
    partitions_def=EXPORTS_PARTITIONS,
    executor_def=dg.in_process_executor,
    description="Take in one export of the landing folder; requested by landing_sensor.",
)
