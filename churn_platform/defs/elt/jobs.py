"""The ELT job and its hourly schedule."""

import dagster as dg

from churn_platform.defs.elt.assets import ELT_ASSETS
from churn_platform.defs.runs import RETRY_POLICY, WAREHOUSE_TAG

churn_elt_job = dg.define_asset_job(
    name="churn_elt_job",
    selection=dg.AssetSelection.assets(*ELT_ASSETS),
    op_retry_policy=RETRY_POLICY,
    tags=WAREHOUSE_TAG,
    description="Load the source CSV, clean and pseudonymize it, and snapshot its quality metrics.",
)

hourly_churn_schedule = dg.ScheduleDefinition(
    name="hourly_churn_elt",
    job=churn_elt_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs churn_elt_job at the top of every hour (UTC); no catch-up after downtime.",
)
