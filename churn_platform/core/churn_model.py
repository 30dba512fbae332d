"""The churn-risk model (issue 15) without Dagster: features, training, evaluation, the gate,
risk bands and safe storage.

Why a linear model: a logistic regression over standardized numerics and one-hot categories is
a sum, so each customer's reasons are exact (coefficient x standardized value, against the
average training customer) and the whole model is one SQL expression (churn_model_sql.py) that
DuckDB evaluates over millions of rows in bounded memory. The label is `churn_flag`: churn as
the export states it now, not a forecast of a date.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

# scikit-learn, skl2onnx, numpy and pandas are imported where a model is trained or stored: at
# module level they cost every Dagster process (each run of churn_elt_job included) 2.5 s and
# 200 MiB at start. Scoring needs none of them (load_linear_model).
if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

# The canonical analytics columns of analytics.customer_churn (fields.FIELDS, less the id and
# the label), named here so this module does not depend on where fields.py lives.
NUMERIC_FEATURES = ("age", "tenure", "monthly_charges", "total_charges")
CATEGORICAL_FEATURES = ("gender", "contract_type", "internet_service", "tech_support")
LABEL = "churn_flag"

SEED = 42
N_FOLDS = 5
MIN_ROC_AUC = 0.70
MAX_ROC_AUC_DROP = 0.02
NEAR_PERFECT_ROC_AUC = 0.99
HIGH_RISK_SHARE = 0.10
# ROC AUC is a ratio of counts: a decision at a bar is never closer to it than this, while
# float subtraction (0.80 - 0.78 = 0.02000000000000002) is.
_TOLERANCE = 1e-12
FORMAT = "churn_platform.churn_model/1"
# A stored model is a zip of two members, named `<version>.zip` (its SHA-256): the fitted
# pipeline as an ONNX graph, a format of data that runs no code when read (never a pickle), and
# the card: features, evaluation, bands and the linear form scoring reads, as JSON.
ONNX_MEMBER = "model.onnx"
CARD_MEMBER = "churn_platform_card.json"
MEMBERS = sorted((ONNX_MEMBER, CARD_MEMBER))
SUFFIX = ".zip"


class ModelIntegrityError(ValueError):
    """A stored model that is not the one recorded (changed bytes) or not in the stored form."""


@dataclass(frozen=True)
class FeatureSelection:
    """The features a model uses, and each canonical field left out with the reason why."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    left_out: dict[str, str]

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True)
class Evaluation:
    """Stratified k-fold scores over pooled out-of-fold predictions."""

    roc_auc: float
    pr_auc: float
    brier: float
    n_train: int
    positive_rate: float


@dataclass(frozen=True)
class RiskBands:
    """Probability cut-offs (inclusive lower bounds) chosen from out-of-fold predictions.

    Medium: at least the training churn rate, i.e. likelier to churn than the average customer.
    High: the top HIGH_RISK_SHARE (10 %) of out-of-fold scores, i.e. the 90th percentile, and
    never below Medium. `*_precision` is the churn rate the evaluation saw at or above each cut
    (precision at the top), `*_share` the share of training customers there.
    """

    medium: float
    high: float
    medium_precision: float
    high_precision: float
    medium_share: float
    high_share: float

    def band(self, probability: float) -> str:
        if probability >= self.high:
            return "High"
        return "Medium" if probability >= self.medium else "Low"


@dataclass(frozen=True)
class LinearForm:
    """The fitted pipeline as a sum: logit = baseline + sum of per-field contributions.

    Baseline: the logit of the average training customer (numerics at their training mean,
    each category at its training frequency). A numeric field contributes
    coef * (x - mean) / scale; a categorical one coef[category] - sum(coef * frequency), and a
    category unseen in training (or NULL) only the negative of that sum.
    """

    baseline: float
    numeric: dict[str, tuple[float, float, float]]  # field -> (coef, mean, scale)
    categorical: dict[str, dict[str, float]]  # field -> category -> contribution
    unseen: dict[str, float]  # field -> contribution of an unseen category


@dataclass
class ChurnModel:
    """A trained pipeline with what it was trained on and how it scored.

    `pipeline` is None for a model loaded for scoring only (load_linear_model): its linear
    form, read from the file, is all that scoring needs.
    """

    pipeline: Pipeline | None
    selection: FeatureSelection
    evaluation: Evaluation
    bands: RiskBands
    category_frequencies: dict[str, dict[str, float]]
    version: str | None = None  # SHA-256 of the stored file, once stored
    form: LinearForm | None = None

    def linear_form(self) -> LinearForm:
        if self.form is None:
            self.form = _linear_form(self)
        return self.form


class GateDecision(NamedTuple):
    promoted: bool
    reason: str
    warnings: list[str]


def select_features(frame: pd.DataFrame, absent=()) -> FeatureSelection:
    """The canonical fields the source provides; the others are left out and named.

    Left out: a field the source mapping names absent, one missing from the frame, one NULL in
    every row (analytics leaves a statistic of no values NULL), or one with a single value
    everywhere (an absent category imputed to its constant carries no signal).
    A present field with some NULLs is an error: analytics imputes every present field.
    """
    left_out: dict[str, str] = {}
    kept: dict[str, list[str]] = {"numeric": [], "categorical": []}
    for kind, names in (("numeric", NUMERIC_FEATURES), ("categorical", CATEGORICAL_FEATURES)):
        for name in names:
            if name in absent:
                left_out[name] = "absent from the source"
            elif name not in frame.columns:
                left_out[name] = "not in the table"
            elif frame[name].isna().all():
                left_out[name] = "NULL in every row"
            elif frame[name].nunique() == 1:
                left_out[name] = "one value in every row (no signal)"
            else:
                nulls = int(frame[name].isna().sum())
                if nulls:
                    raise ValueError(f"{name}: {nulls} NULL values in a present field; "
                                     "analytics should have imputed them")
                kept[kind].append(name)
    return FeatureSelection(tuple(kept["numeric"]), tuple(kept["categorical"]), left_out)


def _pipeline(selection: FeatureSelection, seed: int) -> Pipeline:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    steps = []
    if selection.numeric:
        steps.append(("num", StandardScaler(), list(selection.numeric)))
    if selection.categorical:
        steps.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                      list(selection.categorical)))
    return Pipeline([
        ("prep", ColumnTransformer(steps)),
        ("clf", LogisticRegression(solver="newton-cholesky", max_iter=1000, random_state=seed)),
    ])


def _labels(frame: pd.DataFrame) -> np.ndarray:
    import numpy as np

    y = frame[LABEL].to_numpy()
    if frame[LABEL].isna().any() or not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"{LABEL} must be 0 or 1 in every row")
    if len(np.unique(y)) < 2 or min(np.bincount(y.astype(int))) < N_FOLDS:
        raise ValueError(f"{LABEL} needs at least {N_FOLDS} churned and {N_FOLDS} retained rows")
    return y.astype(int)


def choose_bands(y: np.ndarray, scores: np.ndarray) -> RiskBands:
    """The cut-offs of RiskBands from out-of-fold scores (rule in RiskBands' docstring)."""
    import numpy as np

    medium = float(y.mean())
    high = max(float(np.quantile(scores, 1 - HIGH_RISK_SHARE)), medium)

    def at_or_above(cut: float) -> tuple[float, float]:
        top = scores >= cut
        return (float(y[top].mean()) if top.any() else float("nan")), float(top.mean())

    (medium_precision, medium_share), (high_precision, high_share) = (
        at_or_above(medium), at_or_above(high))
    return RiskBands(medium, high, medium_precision, high_precision, medium_share, high_share)


def train(frame: pd.DataFrame, absent=(), seed: int = SEED) -> ChurnModel:
    """Cross-validate, choose bands, then fit on every row; only feature columns are read.

    Evaluation: StratifiedKFold(N_FOLDS, shuffled, `seed`); ROC AUC, average precision and
    Brier score over the pooled out-of-fold probabilities, which also set the risk bands.
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    selection = select_features(frame, absent)
    if not selection.features:
        raise ValueError("no feature left to train on: " + json.dumps(selection.left_out))
    y = _labels(frame)
    x = frame[list(selection.features)]
    folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(_pipeline(selection, seed), x, y, cv=folds,
                               method="predict_proba")[:, 1]
    evaluation = Evaluation(
        roc_auc=float(roc_auc_score(y, scores)),
        pr_auc=float(average_precision_score(y, scores)),
        brier=float(brier_score_loss(y, scores)),
        n_train=int(len(y)),
        positive_rate=float(y.mean()),
    )
    pipeline = _pipeline(selection, seed).fit(x, y)
    frequencies = {
        name: {str(k): float(v) for k, v in x[name].value_counts(normalize=True).items()}
        for name in selection.categorical
    }
    return ChurnModel(pipeline, selection, evaluation, choose_bands(y, scores), frequencies)


def roc_auc_on(model: ChurnModel, frame: pd.DataFrame) -> float:
    """A model's ROC AUC on `frame` from its linear form, as scoring uses it (the logit ranks
    rows as the probability does): the promoted model's and the new one's, for the gate.

    On unchanged data both scored models were fit on these rows; on changed data the promoted
    model meets rows it never saw, which favours the new one by at most that in-sample
    optimism: about 0.03 at 1,000 rows (above the gate's 0.02), far below it at 50k.
    """
    from sklearn.metrics import roc_auc_score

    missing = [f for f in model.selection.features if f not in frame.columns]
    if missing:
        raise ValueError(f"the model needs {', '.join(missing)}, which the data lacks")
    logits = model.linear_form().baseline + contributions(model, frame).sum(axis=1)
    return float(roc_auc_score(_labels(frame), logits))


def gate(roc_auc: float, promoted_roc_auc: float | None = None,
         same_data_roc_auc: float | None = None) -> GateDecision:
    """Promote only at cross-validated ROC AUC (`roc_auc`) >= 0.70 and, on this training's data,
    at most 0.02 below the promoted model's ROC AUC there (`promoted_roc_auc`; None when none is
    promoted). The new model is compared as the promoted one is measured: its final fit scored
    on the same rows (`same_data_roc_auc`; `roc_auc` when not given). Comparing its
    cross-validated score with the promoted model's in-sample one refused a retrained identical
    model on small data (1,000 rows: 0.7271 against 0.7535).

    Labels without signal (shuffled) score about 0.5 and fall below the 0.70 bar. ROC AUC
    >= 0.99 is promoted with a warning: on real churn data it means a leak or a rule.
    """
    warnings = []
    if roc_auc is None or math.isnan(roc_auc):
        return GateDecision(False, "refused: ROC AUC could not be computed", warnings)
    if roc_auc >= NEAR_PERFECT_ROC_AUC - _TOLERANCE:
        warnings.append(
            f"ROC AUC {roc_auc:.4f} is near-perfect (at least {NEAR_PERFECT_ROC_AUC}): on real "
            "churn data that points to a leaked feature or a deterministic rule, not a model")
    if roc_auc < MIN_ROC_AUC - _TOLERANCE:
        return GateDecision(False, (
            f"refused: cross-validated ROC AUC {roc_auc:.4f} is below the minimum "
            f"{MIN_ROC_AUC:.2f}; the labels carry too little signal in these features"), warnings)
    if promoted_roc_auc is None:
        return GateDecision(True, (
            f"promoted: cross-validated ROC AUC {roc_auc:.4f} reaches the minimum "
            f"{MIN_ROC_AUC:.2f} and no model was promoted before"), warnings)
    new = roc_auc if same_data_roc_auc is None else same_data_roc_auc
    drop = promoted_roc_auc - new
    if drop > MAX_ROC_AUC_DROP + _TOLERANCE:
        return GateDecision(False, (
            f"refused: on the same data its ROC AUC {new:.4f} is {drop:.4f} below the promoted"
            f" model's {promoted_roc_auc:.4f} (at most {MAX_ROC_AUC_DROP} allowed)"), warnings)
    return GateDecision(True, (
        f"promoted: cross-validated ROC AUC {roc_auc:.4f} reaches the minimum {MIN_ROC_AUC:.2f},"
        f" and on the same data its ROC AUC {new:.4f} is not more than {MAX_ROC_AUC_DROP} below"
        f" the promoted model's {promoted_roc_auc:.4f}"), warnings)


def _linear_form(model: ChurnModel) -> LinearForm:
    prep = model.pipeline.named_steps["prep"]
    clf = model.pipeline.named_steps["clf"]
    coef = clf.coef_[0]
    baseline = float(clf.intercept_[0])
    numeric, categorical, unseen = {}, {}, {}
    at = 0
    if model.selection.numeric:
        scaler = prep.named_transformers_["num"]
        for i, name in enumerate(model.selection.numeric):
            numeric[name] = (float(coef[at]), float(scaler.mean_[i]), float(scaler.scale_[i]))
            at += 1
    if model.selection.categorical:
        encoder = prep.named_transformers_["cat"]
        for name, categories in zip(model.selection.categorical, encoder.categories_):
            weights = {str(c): float(coef[at + j]) for j, c in enumerate(categories)}
            at += len(categories)
            frequencies = model.category_frequencies[name]
            average = sum(w * frequencies.get(c, 0.0) for c, w in weights.items())
            baseline += average
            categorical[name] = {c: w - average for c, w in weights.items()}
            unseen[name] = -average
    return LinearForm(baseline, numeric, categorical, unseen)


def contributions(model: ChurnModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Each field's exact contribution to each row's logit (columns: the features); the
    row's logit is model.linear_form().baseline plus the row's sum."""
    import pandas as pd

    form = model.linear_form()
    out = {}
    for name, (coef, mean, scale) in form.numeric.items():
        out[name] = coef * ((frame[name].astype(float) - mean) / scale)
    for name, weights in form.categorical.items():
        out[name] = frame[name].astype(object).map(weights).fillna(form.unseen[name])
    return pd.DataFrame(out, index=frame.index)[list(model.selection.features)]


# -- storage: the pipeline as an ONNX graph (data, no code) and the card as JSON, in one zip --

def _card(model: ChurnModel) -> str:
    return json.dumps({
        "format": FORMAT,
        "selection": {"numeric": model.selection.numeric,
                      "categorical": model.selection.categorical,
                      "left_out": model.selection.left_out},
        "evaluation": asdict(model.evaluation),
        "bands": asdict(model.bands),
        "category_frequencies": model.category_frequencies,
        "linear_form": asdict(model.linear_form()),
    }, sort_keys=True)


def _onnx_graph(model: ChurnModel) -> bytes:
    """The fitted pipeline as an ONNX graph: one input per feature, named after it, shaped
    [rows, 1] (numerics as doubles, categories as strings); output `probabilities`, the
    columns retained and churned. Any ONNX runtime serves it."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    inputs = ([(name, DoubleTensorType([None, 1])) for name in model.selection.numeric]
              + [(name, StringTensorType([None, 1])) for name in model.selection.categorical])
    classifier = model.pipeline.named_steps["clf"]
    graph = to_onnx(model.pipeline, initial_types=inputs,
                    options={id(classifier): {"zipmap": False}})
    return graph.SerializeToString()


def dump_model(model: ChurnModel) -> bytes:
    """The file's bytes: a zip of the ONNX graph (ONNX_MEMBER) and the card (CARD_MEMBER),
    whose linear form is what scoring reads. Members carry ZipInfo's fixed date (1980-01-01),
    not the time of writing, so the same model gives the same bytes and version. Only feature
    columns were fitted: no customer id is in it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in ((ONNX_MEMBER, _onnx_graph(model)),
                              (CARD_MEMBER, _card(model).encode())):
            archive.writestr(zipfile.ZipInfo(name), content)
    return buffer.getvalue()


def model_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_name(version: str) -> str:
    return f"{version}{SUFFIX}"


def save_model(model: ChurnModel, directory: str | Path) -> tuple[Path, str]:
    """Write `<version>.zip` under `directory`; returns its path and version (SHA-256)."""
    data = dump_model(model)
    version = model_version(data)
    path = Path(directory) / file_name(version)
    # Owner-only: a model is the company's learned view of its customers.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.chmod(0o600)
    temporary.write_bytes(data)
    temporary.replace(path)
    model.version = version
    return path, version


def _verified_bytes(path: Path, version: str | None) -> tuple[bytes, str]:
    expected = version or path.stem
    data = path.read_bytes()
    actual = model_version(data)
    if actual != expected:
        raise ModelIntegrityError(
            f"model file {path} has SHA-256 {actual}, not the recorded version {expected}: "
            "it was changed after it was stored; refusing to load it")
    return data, actual


def _members(path: Path, data: bytes, *names: str) -> list[bytes]:
    """The named members of a model file, which must hold exactly ONNX_MEMBER and CARD_MEMBER."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            found = sorted(archive.namelist())
            members = [archive.read(name) for name in names] if found == MEMBERS else None
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelIntegrityError(f"model file {path} cannot be read: {error}") from None
    if members is None:
        raise ModelIntegrityError(f"model file {path} holds {found}, not exactly {MEMBERS}")
    return members


def _from_card(data: bytes, path: Path, version: str) -> ChurnModel:
    try:
        card = json.loads(data)
    except ValueError as error:
        raise ModelIntegrityError(f"model file {path}: its card is not JSON ({error})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelIntegrityError(f"model file {path} is not in format {FORMAT}")
    try:
        selection = FeatureSelection(tuple(card["selection"]["numeric"]),
                                     tuple(card["selection"]["categorical"]),
                                     card["selection"]["left_out"])
        form = card["linear_form"]
        form = LinearForm(form["baseline"], {k: tuple(v) for k, v in form["numeric"].items()},
                          form["categorical"], form["unseen"])
        return ChurnModel(None, selection, Evaluation(**card["evaluation"]),
                          RiskBands(**card["bands"]), card["category_frequencies"], version, form)
    except (KeyError, TypeError, AttributeError) as error:
        raise ModelIntegrityError(f"model file {path}: its card lacks {error}") from None


def load_linear_model(path: str | Path, version: str | None = None) -> ChurnModel:
    """The stored model as scoring and the gate use it: its card and linear form, read as JSON
    after the file's SHA-256 is checked against `version` (default: the file name's stem).
    Neither scikit-learn nor ONNX is imported, so an ELT run that re-scores loads neither.
    `pipeline` is None; raises ModelIntegrityError for a changed or malformed file."""
    path = Path(path)
    data, actual = _verified_bytes(path, version)
    [card] = _members(path, data, CARD_MEMBER)
    return _from_card(card, path, actual)


def load_onnx(path: str | Path, version: str | None = None) -> bytes:
    """The stored model's ONNX graph, to serve it elsewhere (e.g. onnxruntime.InferenceSession),
    after the SHA-256 check: a valid ONNX model whose inputs are the card's features, with no
    external data (a graph naming a file to read is refused)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    data, actual = _verified_bytes(path, version)
    graph, card = _members(path, data, ONNX_MEMBER, CARD_MEMBER)
    features = list(_from_card(card, path, actual).selection.features)
    try:
        parsed = onnx.load_model_from_string(graph)
        if any(uses_external_data(t) for t in parsed.graph.initializer):
            raise ModelIntegrityError(f"model file {path}: {ONNX_MEMBER} refers to external data")
        onnx.checker.check_model(parsed)
    except ModelIntegrityError:
        raise
    except Exception as error:  # protobuf's and the checker's errors have no common base
        raise ModelIntegrityError(f"model file {path}: {ONNX_MEMBER} is not a valid ONNX"
                                  f" model ({type(error).__name__})") from None
    inputs = [i.name for i in parsed.graph.input]
    if inputs != features:
        raise ModelIntegrityError(f"model file {path}: the graph's inputs {inputs} are not the"
                                  f" card's features {features}")
    return graph
