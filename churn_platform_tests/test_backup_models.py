"""The churn model files travel with a backup: a restored warehouse scores with its promoted
model in a fresh model folder. Real training, the real backup job, the restore command, a real
churn_elt_job run on the restored files."""

import json
import stat

import dagster as dg
import pytest

from churn_platform.core import backups as backup
from churn_platform.core.backup_manifest import MANIFEST, BackupRefused
from churn_platform.defs.backup import assets as backup_defs
from churn_platform.defs.resources import build_resources
from churn_platform_tests.conftest import query
from churn_platform_tests.test_churn_model_runs import (  # noqa: F401 (fixtures)
    SCORES_SQL,
    Platform,
    generated,
    platform,
)


@pytest.fixture
def taken(platform, tmp_path, monkeypatch):
    """A backup of the promoted state, as the backup job takes it."""
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(tmp_path / "backups"))
    result = dg.materialize([backup_defs.warehouse_backup], resources=build_resources(
        str(platform.database), model_dir=str(platform.models)))
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["models"].value == 1
    assert event.materialization.metadata["models_not_backed_up"].value == 0
    [folder] = backup.list_backups(tmp_path / "backups")
    return folder


def test_a_restored_warehouse_scores_with_its_model_from_the_backup(generated, platform, taken,
                                                                    tmp_path):
    [stored] = platform.models.iterdir()
    restored = tmp_path / "restored"
    restored.mkdir()
    assert backup.main(["restore", str(taken), str(restored / "warehouse.duckdb"),
                        "--models", str(restored / "models")]) == 0
    [copied] = (restored / "models").iterdir()
    assert copied.name == stored.name and copied.read_bytes() == stored.read_bytes()
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
    version = stored.stem
    again = Platform(restored, generated[1])  # its warehouse and models: the restored ones
    result = again.run("churn_elt_job")
    assert result.success
    assert {v for v, _, _ in query(again.database, SCORES_SQL)} == {version}


def test_a_changed_model_file_in_the_backup_is_refused(taken, tmp_path):
    [model] = [f for f in taken.iterdir() if f.suffix == ".zip"]
    model.write_bytes(model.read_bytes() + b"x")
    with pytest.raises(BackupRefused, match=f"{model.name} .model .* does not match"):
        backup.restore_backup(taken, tmp_path / "new.duckdb", tmp_path / "new_models")
    assert not (tmp_path / "new.duckdb").exists() and not (tmp_path / "new_models").exists()


def test_a_different_file_under_the_model_name_is_refused_not_replaced(taken, tmp_path):
    manifest = json.loads((taken / MANIFEST).read_text())
    [model] = manifest["models"]
    models = tmp_path / "new_models"
    models.mkdir()
    (models / f"{model['version']}.zip").write_bytes(b"someone else's file")
    with pytest.raises(BackupRefused, match="exists with other content"):
        backup.restore_backup(taken, tmp_path / "new.duckdb", models)
    assert (models / f"{model['version']}.zip").read_bytes() == b"someone else's file"
    assert not (tmp_path / "new.duckdb").exists()  # refused before the warehouse is written


def test_a_version_1_backup_without_models_still_restores(taken, tmp_path):
    document = json.loads((taken / MANIFEST).read_text())
    for model in document.pop("models"):
        (taken / model["file"]).unlink()
    document["version"] = 1
    (taken / MANIFEST).write_text(json.dumps(document))
    backup.restore_backup(taken, tmp_path / "new.duckdb", tmp_path / "new_models")
    assert query(tmp_path / "new.duckdb", "SELECT count(*) FROM analytics.churn_model_evaluations")
    assert not (tmp_path / "new_models").exists()


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_a_model_file_missing_or_changed_is_left_out_and_counted(platform, tmp_path, monkeypatch,
                                                                 damage):
    [stored] = platform.models.iterdir()
    if damage == "missing":
        stored.unlink()
    else:
        stored.write_bytes(stored.read_bytes() + b"x")
    monkeypatch.setenv("CHURN_BACKUP_DIR", str(tmp_path / "backups"))
    result = dg.materialize([backup_defs.warehouse_backup], resources=build_resources(
        str(platform.database), model_dir=str(platform.models)))
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["models"].value, metadata["models_not_backed_up"].value) == (0, 1)
    [folder] = backup.list_backups(tmp_path / "backups")
    assert json.loads((folder / MANIFEST).read_text())["models"] == []
    assert not [f for f in folder.iterdir() if f.suffix == ".zip"]
