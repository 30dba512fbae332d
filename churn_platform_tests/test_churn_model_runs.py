"""The churn-risk model in real Dagster runs: churn_model_job on generated data (churn depends
on contract and tenure) promotes a model and scores exactly the non-churned customers; shuffled
labels are refused and the scores keep the promoted model; a changed model file fails the run."""

import shutil
import stat
import zipfile

import dagster as dg
import pytest

from churn_platform.core import churn_model as cm
from churn_platform.defs.model.assets import MODEL, SCORES
from churn_platform.sample_data import write_sample
from churn_platform_tests.conftest import query
from churn_platform_tests.export_support import run_job
from churn_platform_tests.location import platform_defs

ROWS = 4000
SCORES_SQL = ("SELECT model_version, count(*), min(scored_at) FROM analytics.churn_scores"
              " GROUP BY ALL")


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def model_metadata(result) -> dict:
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == MODEL]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def failure_text(result) -> str:
    return " ".join(str(e.step_failure_data.user_failure_data.description)
                    for e in result.all_events if e.event_type_value == "STEP_FAILURE")


class Platform:
    """A warehouse and model folder after one ELT run, with the real jobs pointed at them."""

    def __init__(self, folder, csv):
        self.database = folder / "warehouse.duckdb"
        self.models = folder / "models"
        self.csv = csv
        self.defs = platform_defs(self.database, csv, self.models)

    def run(self, job: str, instance=None, raise_on_error=False):
        with dg.instance_for_test() as own:
            return run_job(self.defs, job, instance or own, raise_on_error=raise_on_error)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    csv = write_sample(folder / "customers.csv", ROWS, seed=11)
    platform = Platform(folder, csv)
    assert platform.run("churn_elt_job").success
    first = platform.run("churn_model_job")
    return folder, csv, first


@pytest.fixture
def platform(generated, tmp_path) -> Platform:
    """A copy of the promoted state, for a test to change."""
    folder, csv, _ = generated
    shutil.copy(folder / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    shutil.copytree(folder / "models", tmp_path / "models")
    return Platform(tmp_path, csv)


def test_the_generated_signal_is_promoted_well_above_chance(generated):
    folder, _, result = generated
    assert result.success
    found = checks(result)
    assert found["churn_risk_gate"].passed
    assert "promoted" in found["churn_risk_gate"].description
    assert found["churn_risk_not_near_perfect"].passed  # generated churn is noisy: no warning
    metadata = model_metadata(result)
    assert 0.72 < metadata["roc_auc"] < 0.99
    assert metadata["pr_auc"] > metadata["positive_rate"] + 0.1
    assert 0 < metadata["brier"] < 0.25
    assert metadata["n_train"] > 0.95 * ROWS
    assert metadata["features"] == ", ".join(cm.NUMERIC_FEATURES + cm.CATEGORICAL_FEATURES)
    assert metadata["left_out"] == {}
    # Numbers, so the UI plots them across runs.
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == MODEL)
    assert isinstance(event.materialization.metadata["roc_auc"], dg.FloatMetadataValue)
    [(version, promoted, reason)] = query(
        folder / "warehouse.duckdb",
        "SELECT model_version, promoted, reason FROM analytics.churn_model_evaluations")
    assert version == metadata["model_version"] and promoted and reason.startswith("promoted")


def test_scores_cover_exactly_the_non_churned_customers(generated):
    folder, _, result = generated
    database = folder / "warehouse.duckdb"
    assert checks(result)["scores_cover_non_churned"].passed
    scored = query(database, "SELECT anonymized_customer_id FROM analytics.churn_scores"
                             " ORDER BY ALL")
    expected = query(database, "SELECT anonymized_customer_id FROM analytics.customer_churn"
                               " WHERE churn_flag = 0 ORDER BY ALL")
    churned = query(database, "SELECT count(*) FROM analytics.customer_churn WHERE churn_flag = 1")
    assert scored == expected and churned[0][0] > 0
    [(low, high, bands, versions, reasons)] = query(database, """
        SELECT min(churn_probability), max(churn_probability),
               list(DISTINCT risk_band ORDER BY risk_band),
               count(DISTINCT model_version), count(*) FILTER (WHERE reason_1 IS NULL)
        FROM analytics.churn_scores""")
    assert 0 <= low < high <= 1 and bands == ["High", "Low", "Medium"]
    assert versions == 1 and reasons == 0


def test_the_model_is_stored_owner_only_as_onnx_and_its_card_under_its_hash(generated):
    folder, _, result = generated
    version = model_metadata(result)["model_version"]
    [stored] = (folder / "models").iterdir()
    assert stored.name == f"{version}.zip"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "models").stat().st_mode) == 0o700
    with zipfile.ZipFile(stored) as archive:  # an ONNX graph and a JSON card: no pickle
        assert sorted(archive.namelist()) == sorted([cm.ONNX_MEMBER, cm.CARD_MEMBER])
    assert cm.load_linear_model(stored).version == version
    assert cm.load_onnx(stored, version)


def test_training_again_on_unchanged_data_promotes_the_same_model(tmp_path, sample_csv):
    """The repository's 1,000-row sample, trained twice: the same model (same version), compared
    with itself scored the same way on the same rows, is promoted again (it was refused while its
    cross-validated score met the promoted model's in-sample one: 0.7271 against 0.7535)."""
    platform = Platform(tmp_path, sample_csv)
    assert platform.run("churn_elt_job").success
    assert platform.run("churn_model_job").success
    again = platform.run("churn_model_job")
    assert again.success, failure_text(again)
    [(first, _, _), (second, compared, reason)] = query(platform.database, """
        SELECT model_version, compared_version, reason FROM analytics.churn_model_evaluations
        ORDER BY trained_at""")
    assert second == compared == first
    assert reason.startswith("promoted: cross-validated ROC AUC") and "on the same data" in reason


def test_a_wrong_score_count_fails_the_coverage_check(platform):
    """The coverage check's other side: a missing and a foreign row are both named."""
    import duckdb

    with duckdb.connect(str(platform.database)) as conn:
        conn.execute("DELETE FROM analytics.churn_scores WHERE anonymized_customer_id IN"
                     " (SELECT anonymized_customer_id FROM analytics.churn_scores LIMIT 1)")
        conn.execute("INSERT INTO analytics.churn_scores SELECT * REPLACE (uuid() AS"
                     " anonymized_customer_id) FROM analytics.churn_scores LIMIT 1")
    from churn_platform.defs.model.checks import scores_cover_non_churned

    result = scores_cover_non_churned(warehouse=platform.defs.resources["warehouse"])
    assert not result.passed
    assert (result.metadata["unscored"].value, result.metadata["foreign"].value) == (1, 1)


def test_a_repeated_score_in_place_of_a_missing_one_fails_the_coverage_check(platform):
    """The count is right, the ids are not: the check compares id fingerprints, not counts."""
    import duckdb

    with duckdb.connect(str(platform.database)) as conn:
        first, second = conn.execute("SELECT anonymized_customer_id FROM analytics.churn_scores"
                                     " ORDER BY ALL LIMIT 2").fetchall()
        conn.execute("DELETE FROM analytics.churn_scores WHERE anonymized_customer_id = ?",
                     [second[0]])
        conn.execute("INSERT INTO analytics.churn_scores SELECT * FROM analytics.churn_scores"
                     " WHERE anonymized_customer_id = ?", [first[0]])
    from churn_platform.defs.model.checks import scores_cover_non_churned

    result = scores_cover_non_churned(warehouse=platform.defs.resources["warehouse"])
    assert not result.passed and result.metadata["scored"].value == result.metadata[
        "expected"].value
    assert (result.metadata["unscored"].value, result.metadata["repeated"].value) == (1, 1)


def test_shuffled_labels_are_refused_and_the_scores_keep_the_promoted_model(platform):
    import duckdb

    before = query(platform.database, SCORES_SQL)
    with duckdb.connect(str(platform.database)) as conn:
        # The same rows and churn rate, labels dealt at random: no signal left.
        conn.execute("""
            UPDATE analytics.customer_churn AS a SET churn_flag = s.flag
            FROM (SELECT source_row,
                         lead(churn_flag, 1, churn_flag) OVER (ORDER BY hash(source_row, 3)) AS flag
                  FROM analytics.customer_churn) AS s
            WHERE a.source_row = s.source_row""")
    result = platform.run("churn_model_job")
    assert not result.success
    gate = checks(result)["churn_risk_gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.description.startswith("refused") and "below the minimum 0.70" in gate.description
    assert model_metadata(result)["roc_auc"] < 0.6
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key == SCORES]
    assert query(platform.database, SCORES_SQL) == before
    rows = query(platform.database, "SELECT promoted, reason FROM analytics.churn_model_evaluations"
                                    " ORDER BY trained_at")
    assert [r[0] for r in rows] == [True, False] and rows[1][1].startswith("refused")

    # The hourly ELT re-scores (fresh labels from the source) with the promoted model.
    [(promoted, _, scored_before)] = before
    result = platform.run("churn_elt_job")
    assert result.success and checks(result)["scores_cover_non_churned"].passed
    [(version, count, scored_at)] = query(platform.database, SCORES_SQL)
    assert version == promoted and scored_at > scored_before
    assert [(count,)] == query(platform.database, "SELECT count(*) FROM"
                                                  " analytics.customer_churn WHERE churn_flag = 0")


def test_the_elt_skips_scoring_until_a_model_is_promoted(generated, tmp_path, capfd):
    _, csv, _ = generated
    platform = Platform(tmp_path, csv)
    result = platform.run("churn_elt_job")
    assert result.success
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key == SCORES]
    assert "No churn model is promoted yet: churn_scores skipped" in "".join(capfd.readouterr())
    assert query(platform.database, "SELECT count(*) FROM information_schema.tables"
                                    " WHERE table_name = 'churn_scores'") == [(0,)]


def test_a_changed_model_file_is_refused_on_load_naming_the_file(platform):
    [stored] = platform.models.iterdir()
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    before = query(platform.database, SCORES_SQL)
    for job in ("churn_model_job", "churn_elt_job"):
        result = platform.run(job)
        assert not result.success, job
        text = failure_text(result)
        assert str(stored) in text and "changed after it was stored" in text, job
    assert query(platform.database, SCORES_SQL) == before
    assert query(platform.database,
                 "SELECT count(*) FROM analytics.churn_model_evaluations") == [(1,)]


def test_training_reads_a_stratified_sample_of_the_asked_columns_through_pandas(platform):
    """The pandas type handler (TrainingFrameIOManager, the training input's manager, beside the
    SqlTable one): `sample_rows` in the input's metadata gives that many rows, the table's churn
    rate, and only the columns asked for; a frame is never written."""
    import pandas as pd

    from churn_platform.defs.elt.assets import ANALYTICS
    from churn_platform.defs.warehouse_io import TrainingFrameIOManager

    seen = {}

    @dg.asset(ins={"analytics": dg.AssetIn(ANALYTICS, metadata={
        "sample_rows": 1000, "columns": ["tenure", "churn_flag", "not_a_column"]})})
    def sampled(analytics: pd.DataFrame) -> None:
        seen["sample"] = analytics

    @dg.asset(ins={"analytics": dg.AssetIn(ANALYTICS)})
    def whole(analytics: pd.DataFrame) -> None:
        seen["whole"] = analytics

    @dg.asset(key=["analytics", "a_frame"])
    def a_frame() -> pd.DataFrame:
        return pd.DataFrame({"x": [1]})

    io = TrainingFrameIOManager(database=str(platform.database))
    dg.materialize([sampled, whole, dg.AssetSpec(ANALYTICS)], resources={"io_manager": io},
                   selection=[sampled.key, whole.key])
    sample, table = seen["sample"], seen["whole"]
    assert list(sample.columns) == ["tenure", "churn_flag"]
    assert abs(len(sample) - 1000) <= 1 and len(table) > 3 * len(sample)
    assert abs(sample.churn_flag.mean() - table.churn_flag.mean()) < 0.002
    assert "anonymized_customer_id" in table.columns  # without the metadata: the stock read
    refused = dg.materialize([a_frame], resources={"io_manager": io}, raise_on_error=False)
    assert not refused.success and "return a SqlTable" in failure_text(refused)


def test_a_missing_model_file_fails_scoring_naming_the_file(platform):
    [stored] = platform.models.iterdir()
    stored.unlink()
    before = query(platform.database, SCORES_SQL)
    result = platform.run("churn_elt_job")
    assert not result.success
    assert f"model file {stored}" in failure_text(result) and "is missing" in failure_text(result)
    assert query(platform.database, SCORES_SQL) == before


def test_a_near_perfect_model_is_promoted_with_a_warning(platform):
    """Churn as a rule of one field (as in the shared real dataset): ROC AUC 1.0 is a leak or a
    rule, so the WARN check fails while the gate promotes."""
    import duckdb

    with duckdb.connect(str(platform.database)) as conn:
        conn.execute("UPDATE analytics.customer_churn"
                     " SET churn_flag = (contract_type = 'Month-to-Month')::INTEGER")
    result = platform.run("churn_model_job")
    found = checks(result)
    assert result.success and found["churn_risk_gate"].passed
    warning = found["churn_risk_not_near_perfect"]
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    assert "near-perfect" in warning.description and "leaked feature" in warning.description
    assert model_metadata(result)["roc_auc"] >= 0.99
    assert "near-perfect" in model_metadata(result)["warnings"]


def test_a_field_the_mapping_leaves_out_is_named_and_not_used(generated, tmp_path, monkeypatch):
    _, csv, _ = generated
    mapping = tmp_path / "no_gender.yaml"
    columns = {"customer_id": "CustomerID", "age": "Age", "tenure": "Tenure",
               "monthly_charges": "MonthlyCharges", "contract_type": "ContractType",
               "internet_service": "InternetService", "total_charges": "TotalCharges",
               "tech_support": "TechSupport", "churn": "Churn"}
    mapping.write_text("fields:\n  gender:\n    absent: true\n"
                       + "".join(f"  {field}: {column}\n" for field, column in columns.items()))
    monkeypatch.setenv("CHURN_SOURCE_MAPPING", str(mapping))
    platform = Platform(tmp_path, csv)
    assert platform.run("churn_elt_job").success
    result = platform.run("churn_model_job")
    assert result.success
    metadata = model_metadata(result)
    assert metadata["left_out"] == {"gender": "absent from the source"}
    assert "gender" not in metadata["features"].split(", ")
    assert query(platform.database, "SELECT count(*) FROM analytics.churn_scores"
                                    " WHERE 'gender raises' IN (reason_1, reason_2, reason_3)"
                                    " OR 'gender lowers' IN (reason_1, reason_2, reason_3)") == [(0,)]


# Runs one job of the real location in a fresh process, then names the heavy libraries loaded.
_IMPORTS_AFTER_A_RUN = """
import json, sys
import dagster as dg
from churn_platform_tests.location import platform_defs
database, csv, models, job = sys.argv[1:]
with dg.instance_for_test() as instance:
    ok = platform_defs(database, csv, models).resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False).success
print(json.dumps([ok, sorted(m for m in ("pandas", "numpy", "sklearn", "onnx")
                             if m in sys.modules)]))
"""


def _imports_after(platform: Platform, job: str) -> tuple[bool, list[str]]:
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER_A_RUN, str(platform.database), str(platform.csv),
         str(platform.models), job],
        env={**os.environ, "CHURN_RETRY_DELAY_SECONDS": "0"},
        capture_output=True, text=True, check=True)
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def test_re_scoring_in_the_elt_imports_no_ml_library_nor_pandas(platform):
    """The ELT re-scores from the stored model's linear form (JSON checked against the version
    hash) and reads no frame: its process loads neither scikit-learn, ONNX, numpy nor pandas
    (about 2.5 s and 200 MiB at every hourly start). Training does load them (the other side)."""
    assert _imports_after(platform, "churn_elt_job") == (True, [])
    rescored = query(platform.database, SCORES_SQL)
    assert len(rescored) == 1 and rescored[0][1] > 0
    ok, loaded = _imports_after(platform, "churn_model_job")
    assert ok and {"pandas", "sklearn", "onnx"} <= set(loaded)


# Published for the same 1,000-row file (Kaggle "telecom-customer-churn-insights-for-analysis",
# the copy the team keeps aside; its source repository publishes SQL analyses, no model):
# logistic regression, ROC AUC 0.985 on one stratified 80/20 split (200 test rows, 23 of one
# class). One split that small moves by about 0.02, and ours is the pooled 5-fold score, so the
# bar is the published figure less 0.03. docs/churn-model.md has the comparison.
PUBLISHED_LOGISTIC_ROC_AUC = 0.985
MARGIN = 0.03


def test_the_public_dataset_reaches_the_published_roc_auc_without_the_near_perfect_flag(
        real_csv, tmp_path):
    """ELT then churn_model_job on the real file: our cross-validated ROC AUC is at least the
    published one less the margin; the same rows with shuffled labels stay far below that bar.

    The data is rule-like (design pitfall 18), yet the linear model's 0.98 stays under the
    issue's 0.99 near-perfect bar, so that warning does NOT fire here: a known limit of the
    flag (docs/churn-model.md), pinned so that changing the bar means revisiting the docs."""
    platform = Platform(tmp_path, real_csv)
    assert platform.run("churn_elt_job").success
    result = platform.run("churn_model_job")
    assert result.success
    metadata = model_metadata(result)
    assert metadata["n_train"] == 1000 and abs(metadata["positive_rate"] - 0.883) < 1e-9
    assert metadata["roc_auc"] >= PUBLISHED_LOGISTIC_ROC_AUC - MARGIN, metadata["roc_auc"]
    found = checks(result)
    assert found["churn_risk_gate"].passed  # promoted: the bar is 0.70
    warning = found["churn_risk_not_near_perfect"]
    assert metadata["roc_auc"] < cm.NEAR_PERFECT_ROC_AUC
    assert warning.passed and "no sign of a leak" in warning.description

    import duckdb

    with duckdb.connect(str(platform.database), read_only=True) as conn:
        frame = conn.execute("SELECT * FROM analytics.customer_churn").fetchdf()
    frame[cm.LABEL] = frame[cm.LABEL].sample(frac=1, random_state=3).to_numpy()
    assert cm.train(frame).evaluation.roc_auc < PUBLISHED_LOGISTIC_ROC_AUC - MARGIN - 0.2
