"""churn_model_job and its daily schedule."""

import dagster as dg

from churn_platform.defs.model.assets import EVALUATIONS, MODEL, SCORE_SUMMARY, SCORES
from churn_platform.defs.runs import RETRY_POLICY, WAREHOUSE_TAG

churn_model_job = dg.define_asset_job(
    name="churn_model_job",
    selection=dg.AssetSelection.assets(MODEL, EVALUATIONS, SCORES, SCORE_SUMMARY),
    op_retry_policy=RETRY_POLICY,
    tags=WAREHOUSE_TAG,
    description=(
        "Train the churn-risk model on the latest analytics table, evaluate it, gate it (a"
        " blocking check), and score every non-churned customer with the promoted model."
    ),
)

daily_churn_model_schedule = dg.ScheduleDefinition(
    name="daily_churn_model",
    job=churn_model_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Retrains the churn-risk model at 02:30 UTC every day, between two hourly ELT runs;"
        " the hourly ELT re-scores with the promoted model in between."
    ),
)
