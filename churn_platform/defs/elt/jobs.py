"""The ELT job and its hourly schedule."""

import dagster as dg

from churn_platform.core import settings
from churn_platform.defs.elt.assets import ELT_ASSETS
from churn_platform.defs.landing.assets import EXPORT_ROWS
from churn_platform.defs.model.assets import SCORE_SUMMARY, SCORES
from churn_platform.defs.runs import RETRY_POLICY, WAREHOUSE_TAG

churn_elt_job = dg.define_asset_job(
    name="churn_elt_job",
    # Scores follow the hourly data with the promoted model (skipped while none is promoted);
    # training stays daily, in churn_model_job.
    selection=dg.AssetSelection.assets(*ELT_ASSETS, SCORES, SCORE_SUMMARY),
    op_retry_policy=RETRY_POLICY,
    tags=WAREHOUSE_TAG,
    description=(
        "Load the source CSV, clean and pseudonymize it, snapshot its quality metrics, and"
        " re-score the non-churned customers with the promoted churn model, if there is one."
    ),
)

@dg.schedule(
    name="hourly_churn_elt",
    job=churn_elt_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Runs churn_elt_job at the top of every hour (UTC); no catch-up after downtime. In"
        " landing mode it skips until the first export is loaded (the ELT follows the latest)."
    ),
)
def hourly_churn_schedule(context: dg.ScheduleEvaluationContext):
    # Landing mode before any load: a run could only fail saying so, once an hour.
    if settings.landing_dir() is not None and (
            context.instance.get_latest_materialization_event(EXPORT_ROWS) is None):
        return dg.SkipReason(f"landing mode: no export of {settings.landing_dir()} is loaded yet")
    return dg.RunRequest()
