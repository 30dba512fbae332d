"""The churn-risk model in the asset graph: train and gate, record the evaluation, score.

`models/churn_risk` and `analytics/churn_model_evaluations` are one step: every training leaves
its evaluation row, promoted or refused, before the blocking gate check decides whether the
scores downstream run. Scores always use the model the warehouse records as promoted.
"""

import json
from typing import TYPE_CHECKING

import dagster as dg
import duckdb

from churn_platform.core import churn_model as cm
from churn_platform.core.churn_model_sql import (
    EVALUATION_ROW_SQL,
    PROMOTED_SQL,
    SUMMARY_SEGMENTS,
    score_summary_sql,
    scoring_sql,
)
from churn_platform.core.clock import utc_now
from churn_platform.core.tables import EVALUATIONS_TABLE
from churn_platform.core.warehouse import SqlTable, write_table
from churn_platform.defs.elt.assets import ANALYTICS, OWNERS
from churn_platform.defs.failures import reported_as_failure
from churn_platform.defs.resources import TRAINING_FRAMES, ChurnModelStore, ChurnSource
from churn_platform.defs.warehouse_io import PUBLISHED, WarehouseResource

if TYPE_CHECKING:
    import pandas as pd

MODEL = dg.AssetKey(["models", "churn_risk"])
EVALUATIONS = dg.AssetKey(["analytics", "churn_model_evaluations"])
SCORES = dg.AssetKey(["analytics", "churn_scores"])
SCORE_SUMMARY = dg.AssetKey(["analytics", "churn_score_summary"])

# Training reads a stratified sample of this many rows (dagster-duckdb-pandas, see
# SampledPandasTypeHandler): enough for a dozen coefficients, bounded however large the table.
# 100k cost a third more training time for the same model (on 5M generated rows: ROC AUC
# 0.7699 against 0.7687, the same High cut-off).
SAMPLE_ROWS = 50_000
TRAINING_COLUMNS = [*cm.NUMERIC_FEATURES, *cm.CATEGORICAL_FEATURES, cm.LABEL]


def promoted_model(conn: duckdb.DuckDBPyConnection) -> tuple[str, float] | None:
    """(version, cross-validated ROC AUC) of the promoted model; None before the first one."""
    try:
        return conn.execute(PROMOTED_SQL).fetchone()
    except duckdb.CatalogException:
        return None  # no training yet


def _compare(context, store: ChurnModelStore, promoted, frame: "pd.DataFrame"):
    """The promoted model's ROC AUC on this training's data (the gate's yardstick), or None."""
    if promoted is None:
        return None, None
    version = promoted[0]
    previous = store.load(version)  # a changed file fails here, naming it
    try:
        return version, cm.roc_auc_on(previous, frame)
    except ValueError as error:
        context.log.warning(f"The promoted model {version} cannot be scored on this data"
                            f" ({error}); the gate judges the new model on its own.")
        return version, None


@dg.multi_asset(
    outs={
        "model": dg.AssetOut(
            key=MODEL, group_name="models", kinds={"scikitlearn", "python"},
            owners=OWNERS,
            description=(
                "A logistic regression of churn_flag (churn as the export states it now, not a"
                " forecast of a date) on the canonical fields the source provides, trained on a"
                f" stratified sample of up to {SAMPLE_ROWS:,} rows of analytics.customer_churn,"
                f" evaluated by {cm.N_FOLDS}-fold stratified cross-validation. Stored as ONNX"
                " (no pickle) in CHURN_MODEL_DIR under its SHA-256; the gate check decides"
                " whether it is promoted."
            ),
        ),
        "evaluations": dg.AssetOut(
            key=EVALUATIONS, group_name="analytics", kinds={"duckdb"},
            owners=OWNERS,
            description=(
                "One row per training: model_version, trained_at, n_train, positive_rate,"
                " roc_auc, pr_auc, brier, promoted and the gate's reason in words. The latest"
                " promoted row is the promoted model."
            ),
        ),
    },
    # A pandas DataFrame (TrainingFrameIOManager): the only input that needs pandas, so only
    # this step's process imports it.
    ins={"analytics": dg.AssetIn(
        ANALYTICS, metadata={"sample_rows": SAMPLE_ROWS, "columns": TRAINING_COLUMNS},
        input_manager_key=TRAINING_FRAMES)},
)
def churn_risk_model(
    context: dg.AssetExecutionContext,
    analytics,
    churn_source: dg.ResourceParam[ChurnSource],
    churn_models: dg.ResourceParam[ChurnModelStore],
    warehouse: WarehouseResource,
):
    absent = churn_source.mapping().absent
    try:
        model = cm.train(analytics, absent=absent)
    except ValueError as error:  # no feature, too few rows of a class, NULLs
        raise dg.Failure(f"cannot train on {ANALYTICS.to_user_string()}: {error}",
                         allow_retries=False) from None
    with warehouse.get_connection() as conn:
        promoted = promoted_model(conn)
    compared_version, compared_roc_auc = _compare(context, churn_models, promoted, analytics)
    same_data = None if compared_roc_auc is None else cm.roc_auc_on(model, analytics)
    decision = cm.gate(model.evaluation.roc_auc, compared_roc_auc, same_data)
    path, version = churn_models.save(model)
    for warning in decision.warnings:
        context.log.warning(warning)
    context.log.info(f"Model {version}: {decision.reason}")

    evaluation = model.evaluation
    features = list(model.selection.features)
    left_out = model.selection.left_out
    row = SqlTable(EVALUATION_ROW_SQL, {
        "snapshot_id": context.run.root_run_id or context.run_id,
        "run_id": context.run_id,
        "model_version": version,
        "trained_at": utc_now(),
        "n_train": evaluation.n_train,
        "positive_rate": evaluation.positive_rate,
        "roc_auc": evaluation.roc_auc,
        "pr_auc": evaluation.pr_auc,
        "brier": evaluation.brier,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "warnings": "; ".join(decision.warnings) or None,
        "compared_version": compared_version,
        "compared_roc_auc": compared_roc_auc,
        "features": ", ".join(features),
        "left_out": json.dumps(left_out, sort_keys=True),
    }, history_key="snapshot_id")
    schema, table = EVALUATIONS_TABLE.split(".")
    with warehouse.get_connection() as conn, reported_as_failure():
        written = write_table(conn, schema, table, row)

    bands = model.bands
    yield dg.MaterializeResult(asset_key=MODEL, metadata={
        "roc_auc": evaluation.roc_auc,
        "pr_auc": evaluation.pr_auc,
        "brier": evaluation.brier,
        "n_train": evaluation.n_train,
        "positive_rate": evaluation.positive_rate,
        "model_version": version,
        "model_file": path.name,
        "features": ", ".join(features),
        "left_out": dg.MetadataValue.json(left_out),
        "promoted": decision.promoted,
        "gate_reason": decision.reason,
        "warnings": "; ".join(decision.warnings) or "none",
        "compared_with": compared_version or "none (no promoted model yet)",
        "band_cutoffs": dg.MetadataValue.json(
            {"Medium": bands.medium, "High": bands.high,
             "Medium precision": bands.medium_precision, "High precision": bands.high_precision}),
    })
    yield dg.MaterializeResult(asset_key=EVALUATIONS, metadata={
        "dagster/row_count": written.row_count,
        "model_version": version,
        "promoted": decision.promoted,
    })


@dg.asset(
    key=SCORES,
    ins={"analytics": dg.AssetIn(ANALYTICS)},
    # In churn_elt_job, after the run's tables are published: scores follow the published set.
    deps=[MODEL, EVALUATIONS, PUBLISHED],
    group_name="analytics",
    kinds={"duckdb", "sql"},
    owners=OWNERS,
    output_required=False,
    description=(
        "One row per customer of analytics.customer_churn who has not churned, scored by the"
        " promoted model inside DuckDB: churn_probability, risk_band (Low / Medium / High),"
        " model_version, the top three reasons (feature and direction), segments, scored_at."
        " Skipped while no model is promoted."
    ),
)
def churn_scores(
    context: dg.AssetExecutionContext,
    analytics: SqlTable,
    churn_models: dg.ResourceParam[ChurnModelStore],
    warehouse: WarehouseResource,
):
    with warehouse.get_connection() as conn:
        promoted = promoted_model(conn)
    if promoted is None:
        context.log.warning(
            "No churn model is promoted yet: churn_scores skipped. Materialize models/churn_risk"
            " (churn_model_job) to train one; scores then follow every ELT run.")
        return
    model = churn_models.load(promoted[0])
    sql = scoring_sql(model, f"({analytics.sql})", where="churn_flag = 0",
                      keep=SUMMARY_SEGMENTS)
    context.log.info(f"Scoring with the promoted model {model.version}.")
    yield dg.Output(SqlTable(
        f"SELECT *, CAST($scored_at AS TIMESTAMP) AS scored_at FROM ({sql})",
        {"scored_at": utc_now()},
        error_context=f"scoring with model {model.version}",
        metadata={"model_version": model.version},
    ))


@dg.asset(
    key=SCORE_SUMMARY,
    ins={"scores": dg.AssetIn(SCORES)},
    group_name="analytics",
    kinds={"duckdb", "sql"},
    owners=OWNERS,
    description=(
        "Counts of scored customers by risk band, contract/tenure/charges segment and top"
        " reason, one snapshot per scoring run, kept as history; what the export sends to"
        " PostgreSQL (never a customer's row)."
    ),
)
def churn_score_summary(context: dg.AssetExecutionContext, scores: SqlTable) -> SqlTable:
    return SqlTable(score_summary_sql(scores.sql), {
        "snapshot_id": context.run.root_run_id or context.run_id,
        "run_id": context.run_id,
        "snapshot_at": utc_now(),
    }, history_key="snapshot_id")


MODEL_ASSETS = [churn_risk_model, churn_scores, churn_score_summary]
