"""SQL for the churn-risk model: a reproducible stratified sample to train on, and scoring as
one DuckDB expression, so millions of customers are scored in bounded memory without pandas.
"""

from churn_platform.core.churn_model import LABEL, SEED, ChurnModel
from churn_platform.core.tables import EVALUATIONS_TABLE
from churn_platform.core.warehouse import quote_ident as _ident
from churn_platform.core.warehouse import quote_literal as _text

# Scoring reads these; training reads only the features and the label, never the id.
ID_COLUMN = "anonymized_customer_id"
KEY_COLUMN = "source_row"


def _number(value: float) -> str:
    # A DOUBLE parsed from its shortest exact spelling: a bare literal would be a DECIMAL.
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def stratified_sample_sql(relation: str, n: int, columns, seed: int = SEED,
                          key: str = KEY_COLUMN) -> str:
    """Up to `n` rows of `relation`, each churn_flag class in proportion to its size (so the
    churn rate, and the model's probabilities, stay those of the table), reproducibly.

    Each class keeps its rows with the smallest hash(key, seed). Rows first pass a streaming
    hash filter set a few standard deviations above the class's quota, so only a little more
    than `n` rows are ever ranked, however large the table. `columns` (features and label)
    are the only columns returned: the id stays in the warehouse.
    """
    selected = ", ".join(_ident(c) for c in columns)
    hashed = f"hash({_ident(key)}, {int(seed)})"
    return f"""
        WITH counts AS (
            SELECT {LABEL}, count(*) AS rows FROM {relation} GROUP BY {LABEL}
        ), quotas AS (
            SELECT {LABEL}, rows,
                   least(rows, CAST(round(rows * {int(n)} / sum(rows) OVER ()) AS BIGINT)) AS quota
            FROM counts
        ), candidates AS (
            SELECT {selected}, {hashed} AS sample_hash, {_ident(key)} AS sample_key, quota
            FROM {relation} JOIN quotas USING ({LABEL})
            WHERE {hashed} / 18446744073709551616.0
                  < (quota + 6 * sqrt(quota) + 100) / rows
        )
        SELECT {selected} FROM candidates
        QUALIFY row_number() OVER (PARTITION BY {LABEL} ORDER BY sample_hash, sample_key) <= quota
        ORDER BY {LABEL}, sample_hash, sample_key
    """


def contribution_sql(model: ChurnModel) -> dict[str, str]:
    """Each feature's exact contribution to the logit, as SQL over the analytics columns.

    A NULL numeric contributes 0 (the training mean); a NULL or unseen category its
    LinearForm.unseen value, as scikit-learn's one-hot encoder ignores unknown categories.
    """
    form = model.linear_form()
    terms = {}
    for name, (coef, mean, scale) in form.numeric.items():
        value = f"coalesce(CAST({_ident(name)} AS DOUBLE), {_number(mean)})"
        terms[name] = f"{_number(coef)} * (({value} - {_number(mean)}) / {_number(scale)})"
    for name, weights in form.categorical.items():
        whens = " ".join(f"WHEN {_text(c)} THEN {_number(w)}" for c, w in weights.items())
        terms[name] = (f"CASE CAST({_ident(name)} AS VARCHAR) {whens}"
                       f" ELSE {_number(form.unseen[name])} END")
    return {name: terms[name] for name in model.selection.features}


def _rank_sql(names: list[str]) -> str:
    """Each feature's rank by absolute contribution (0 = the largest): how many others outweigh
    it, ties going to the earlier feature. Numeric comparisons, computed once per row and then
    shared by the three reasons: several times faster in DuckDB than sorting a list of structs."""
    ranks = []
    for i, name in enumerate(names):
        mine = f"abs({_ident('c_' + name)})"
        beaten = [f"(abs({_ident('c_' + other)}) {'>=' if j < i else '>'} {mine})::INTEGER"
                  for j, other in enumerate(names) if j != i]
        ranks.append(f"{' + '.join(beaten) or '0'} AS {_ident('r_' + name)}")
    return ", ".join(ranks)


def _reason_sql(names: list[str], k: int) -> str:
    """The k-th reason (0-based): the feature of rank k, and its contribution's direction."""
    whens = []
    for name in names:
        column = _ident("c_" + name)
        direction = (f"CASE WHEN {column} > 0 THEN {_text(name + ' raises')}"
                     f" WHEN {column} < 0 THEN {_text(name + ' lowers')}"
                     f" ELSE {_text(name + ' does not change')} END")
        whens.append(f"WHEN {_ident('r_' + name)} = {k} THEN {direction}")
    return f"CASE {' '.join(whens)} END"


def scoring_sql(model: ChurnModel, relation: str, where: str | None = None,
                id_column: str = ID_COLUMN, keep=()) -> str:
    """One row per row of `relation` (filtered by `where`, e.g. "churn_flag = 0"): the id,
    churn_probability, risk_band, model_version and reason_1..reason_3, then the `keep` columns
    as they are (e.g. segments, so summaries need no join back).

    churn_probability = 1 / (1 + exp(-(baseline + sum of contributions))), the pipeline's
    predict_proba. A reason is '<feature> raises' or '<feature> lowers' (its contribution's
    sign against the average training customer); reasons rank by absolute contribution,
    ties by feature order, and a model with fewer than three features leaves the rest NULL.
    """
    terms = contribution_sql(model)
    names = list(terms)
    contributions = ", ".join(f"{sql} AS {_ident('c_' + n)}" for n, sql in terms.items())
    logit = " + ".join([_number(model.linear_form().baseline)]
                       + [_ident("c_" + n) for n in names])
    reasons = ", ".join(f"{_reason_sql(names, k)} AS reason_{k + 1}" for k in range(3))
    bands = model.bands
    version = _text(model.version) if model.version else "CAST(NULL AS VARCHAR)"
    filtered = f"WHERE {where}" if where else ""
    kept = "".join(f", {_ident(c)}" for c in keep)
    return f"""
        SELECT {_ident(id_column)},
               churn_probability,
               CASE WHEN churn_probability >= {_number(bands.high)} THEN 'High'
                    WHEN churn_probability >= {_number(bands.medium)} THEN 'Medium'
                    ELSE 'Low' END AS risk_band,
               {version} AS model_version,
               {reasons}{kept}
        FROM (
            SELECT *, 1.0 / (1.0 + exp(-({logit}))) AS churn_probability, {_rank_sql(names)}
            FROM (SELECT {_ident(id_column)}, {contributions}{kept} FROM {relation} {filtered})
        )
    """


# The segments a score summary counts by, besides the band and the top reason: the ones
# analytics.churn_by_segment uses, so the dashboards line up.
SUMMARY_SEGMENTS = ("contract_type", "tenure_category", "monthly_charges_category")


def score_summary_sql(scores: str) -> str:
    """Counts of scored customers by risk band, by each segment and by top reason (reason_1):
    customers, how many are High / Medium, mean probability. Never a customer's row: this is
    what leaves the warehouse. Parameters: $snapshot_id, $run_id, $snapshot_at.

    One GROUPING SETS pass over the scores' few columns (an UNPIVOT first made five rows of
    each score and took twice as long); NULL segments are left out, as the UNPIVOT did."""
    dimensions = [("risk_band", "risk_band"), *((c, c) for c in SUMMARY_SEGMENTS),
                  ("reason", "reason_1")]
    sets = ", ".join(f"(model_version, {_ident(column)})" for _, column in dimensions)
    which = " ".join(f"WHEN NOT grouping({_ident(column)}) THEN {_text(name)}"
                     for name, column in dimensions)
    segment = " ".join(f"WHEN NOT grouping({_ident(column)}) THEN CAST({_ident(column)} AS VARCHAR)"
                       for _, column in dimensions)
    return f"""
        SELECT * FROM (
            SELECT $snapshot_id AS snapshot_id, $run_id AS run_id,
                   CAST($snapshot_at AS TIMESTAMP) AS snapshot_at, model_version,
                   CASE {which} END AS dimension, CASE {segment} END AS segment,
                   count(*) AS customers,
                   count(*) FILTER (WHERE risk_band = 'High') AS high_risk,
                   count(*) FILTER (WHERE risk_band = 'Medium') AS medium_risk,
                   avg(churn_probability) AS avg_churn_probability
            FROM ({scores})
            GROUP BY GROUPING SETS ({sets})
        )
        WHERE segment IS NOT NULL  -- a reason a one-feature model leaves empty, as UNPIVOT did
    """


# One row per training, as named parameters; snapshot_id / run_id / trained_at make it a
# history like the metrics (a re-executed run replaces its row) and let the export find it.
EVALUATION_ROW_SQL = """
    SELECT $snapshot_id AS snapshot_id, $run_id AS run_id, $model_version AS model_version,
           CAST($trained_at AS TIMESTAMP) AS trained_at, CAST($n_train AS BIGINT) AS n_train,
           CAST($positive_rate AS DOUBLE) AS positive_rate, CAST($roc_auc AS DOUBLE) AS roc_auc,
           CAST($pr_auc AS DOUBLE) AS pr_auc, CAST($brier AS DOUBLE) AS brier,
           CAST($promoted AS BOOLEAN) AS promoted, $reason AS reason,
           CAST($warnings AS VARCHAR) AS warnings,
           CAST($compared_version AS VARCHAR) AS compared_version,
           CAST($compared_roc_auc AS DOUBLE) AS compared_roc_auc,
           $features AS features, $left_out AS left_out
"""

# The promoted model's identity: the latest training the gate promoted.
PROMOTED_SQL = f"""
    SELECT model_version, roc_auc FROM {EVALUATIONS_TABLE}
    WHERE promoted ORDER BY trained_at DESC, snapshot_id DESC LIMIT 1
"""
