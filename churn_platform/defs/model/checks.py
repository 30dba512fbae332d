"""The model's governance: the blocking gate, the near-perfect warning, and score coverage.

The gate's decision is made once, by the training step, and recorded in the evaluations table;
these checks read that row (SQL, not frames), so the UI, the table and the scores agree.
"""

import dagster as dg

from churn_platform.core.churn_model import NEAR_PERFECT_ROC_AUC
from churn_platform.core.tables import ANALYTICS_TABLE, EVALUATIONS_TABLE, SCORES_TABLE
from churn_platform.defs.model.assets import MODEL, SCORES
from churn_platform.defs.warehouse_io import WarehouseResource

_COLUMNS = ("model_version", "roc_auc", "promoted", "reason", "warnings", "compared_version",
            "compared_roc_auc")


def _this_training(context, warehouse: WarehouseResource) -> dict | None:
    """This run's evaluation row (a re-executed run's own), else the latest one."""
    snapshot_id = context.run.root_run_id or context.run.run_id
    with warehouse.get_connection() as conn:
        row = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM {EVALUATIONS_TABLE}"
            " ORDER BY snapshot_id = $id DESC, trained_at DESC LIMIT 1", {"id": snapshot_id}
        ).fetchone()
    return dict(zip(_COLUMNS, row)) if row else None


def _metadata(row: dict) -> dict:
    return {
        "model_version": row["model_version"],
        "roc_auc": row["roc_auc"],
        "reason": row["reason"],
        "compared_with": row["compared_version"] or "none",
        "compared_roc_auc_on_same_data": dg.MetadataValue.float(
            row["compared_roc_auc"] if row["compared_roc_auc"] is not None else float("nan")),
    }


@dg.asset_check(
    asset=MODEL,
    blocking=True,
    description=(
        "The gate: promoted only at cross-validated ROC AUC >= 0.70 and at most 0.02 below the"
        " promoted model's ROC AUC on the same data. Fails (and the scores keep the promoted"
        " model) otherwise, saying why."
    ),
)
def churn_risk_gate(context: dg.AssetCheckExecutionContext,
                    warehouse: WarehouseResource) -> dg.AssetCheckResult:
    row = _this_training(context, warehouse)
    if row is None:
        return dg.AssetCheckResult(passed=False, description="no training recorded yet")
    return dg.AssetCheckResult(passed=bool(row["promoted"]), description=row["reason"],
                               metadata=_metadata(row))


@dg.asset_check(
    asset=MODEL,
    description=(
        f"Warns at ROC AUC >= {NEAR_PERFECT_ROC_AUC}: on real churn data a near-perfect score"
        " means a leaked feature or a deterministic rule, not a model."
    ),
)
def churn_risk_not_near_perfect(context: dg.AssetCheckExecutionContext,
                                warehouse: WarehouseResource) -> dg.AssetCheckResult:
    row = _this_training(context, warehouse)
    if row is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description="no training recorded yet")
    near_perfect = bool(row["warnings"])
    return dg.AssetCheckResult(
        passed=not near_perfect,
        severity=dg.AssetCheckSeverity.WARN,
        description=row["warnings"] or f"ROC AUC {row['roc_auc']:.4f} is below "
                                       f"{NEAR_PERFECT_ROC_AUC}: no sign of a leak",
        metadata=_metadata(row),
    )


# Each side's count and sum of 64-bit id hashes: equal only when the scored ids are the
# expected ones, each once (a missing, foreign or repeated id changes the sum, short of a
# crafted 64-bit collision). One cheap column scan each, where a join by id read and hashed
# both tables' ids into a 3M-row hash table; the join runs only to name what went wrong.
_FINGERPRINTS_SQL = f"""
    SELECT (SELECT count(*) FROM {ANALYTICS_TABLE} WHERE churn_flag = 0),
           (SELECT coalesce(sum(hash(anonymized_customer_id)::HUGEINT), 0)
            FROM {ANALYTICS_TABLE} WHERE churn_flag = 0),
           count(*), coalesce(sum(hash(anonymized_customer_id)::HUGEINT), 0),
           count(*) FILTER (WHERE NOT churn_probability BETWEEN 0 AND 1
                            OR churn_probability IS NULL)
    FROM {SCORES_TABLE}
"""

_DIFFERENCES_SQL = f"""
    WITH expected AS (SELECT anonymized_customer_id AS id, count(*) AS n
                      FROM {ANALYTICS_TABLE} WHERE churn_flag = 0 GROUP BY ALL),
         scored AS (SELECT anonymized_customer_id AS id, count(*) AS n FROM {SCORES_TABLE}
                    GROUP BY ALL)
    SELECT coalesce(sum(e.n - coalesce(s.n, 0)) FILTER (WHERE e.n > coalesce(s.n, 0)), 0),
           count(*) FILTER (WHERE e.id IS NULL),
           count(*) FILTER (WHERE s.n > coalesce(e.n, 0) AND e.id IS NOT NULL)
    FROM expected e FULL JOIN scored s ON e.id = s.id
"""


@dg.asset_check(
    asset=SCORES,
    description=("Exactly the customers of the analytics table who have not churned are scored,"
                 " each once, with a probability in [0, 1]."),
)
def scores_cover_non_churned(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        expected, expected_sum, scored, scored_sum, out_of_range = conn.execute(
            _FINGERPRINTS_SQL).fetchone()
        same_ids = expected == scored and expected_sum == scored_sum
        unscored, foreign, repeated = (0, 0, 0) if same_ids else conn.execute(
            _DIFFERENCES_SQL).fetchone()
    passed = same_ids and out_of_range == 0
    return dg.AssetCheckResult(
        passed=passed,
        description=("every non-churned customer scored once" if passed else
                     f"{unscored} non-churned customers unscored, {foreign} scored ids not among"
                     f" them (churned or gone), {repeated} scored too often, {out_of_range}"
                     " probabilities outside [0, 1]"),
        metadata={"unscored": unscored, "foreign": foreign, "repeated": repeated,
                  "out_of_range": out_of_range, "expected": expected, "scored": scored},
    )


MODEL_CHECKS = [churn_risk_gate, churn_risk_not_near_perfect, scores_cover_non_churned]
