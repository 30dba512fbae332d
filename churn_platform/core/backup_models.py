"""The churn model files in a backup: copied in beside the tables, copied back on restore.

A restored warehouse names its promoted model by version; without the file, scoring fails. The
versions a backup carries are those the warehouse records (`churn_model_evaluations`), read in the
backup's transaction; a version is the file's SHA-256, so a file is checked by its name alone and
copying never needs to trust its content (restore does not load it: scoring loads it, with its
SHA-256 check, as it loads any stored model).
"""

import os
from pathlib import Path

import duckdb

from churn_platform.core.backup_manifest import (
    SHA256,
    BackupRefused,
    Model,
    file_digest,
)
from churn_platform.core.churn_model import SUFFIX, file_name
from churn_platform.core.tables import EVALUATIONS_TABLE
from churn_platform.core.warehouse import table_exists


def recorded_versions(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every model version the warehouse records, whether promoted or not."""
    if not table_exists(conn, EVALUATIONS_TABLE):
        return []
    rows = conn.execute(f"SELECT DISTINCT model_version FROM {EVALUATIONS_TABLE}"
                        " WHERE model_version IS NOT NULL ORDER BY 1").fetchall()
    return [v for (v,) in rows if SHA256.fullmatch(v)]


def _copy(source: Path, target: Path) -> None:
    """Copy a regular file (no symbolic link followed) to a new owner-only file."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as reader:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "wb") as writer:
            while chunk := reader.read(1 << 20):
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())


def back_up_models(versions: list[str], model_dir: Path, folder: Path
                   ) -> tuple[list[Model], dict[str, str]]:
    """Copy each version's `<version>.zip` into `folder` as model-NNN.zip; returns what was
    copied and, by version, why a recorded model was not (missing, or changed since it was
    stored: its SHA-256 is no longer its name)."""
    models, skipped = [], {}
    for version in versions:
        source = model_dir / file_name(version)
        target = folder / f"model-{len(models) + 1:03d}{SUFFIX}"
        try:
            _copy(source, target)
        except FileNotFoundError:
            skipped[version] = f"{source} is missing"
            continue
        except OSError as error:
            skipped[version] = f"{source} cannot be read as a regular file ({error.strerror})"
            continue
        size, sha256 = file_digest(target)
        if sha256 != version:
            target.unlink()
            skipped[version] = f"{source} changed since it was stored (SHA-256 {sha256})"
            continue
        models.append(Model(target.name, version, size))
    return models, skipped


def _present(backup: Path, model: Model, model_dir: Path) -> bool:
    """Whether the model is in `model_dir` already; a different file under its name is refused."""
    target = model_dir / file_name(model.version)
    if not os.path.lexists(target):
        return False
    try:
        same = file_digest(target)[1] == model.version
    except (OSError, ValueError):
        same = False
    if not same:
        raise BackupRefused(backup, f"{target} exists with other content than model"
                                    f" {model.version}: move it away, then restore again")
    return True


def check_models(backup: Path, models: list[Model], model_dir: Path) -> None:
    """Refuse before anything is written when a model's name is taken by another file."""
    for model in models:
        _present(backup, model, model_dir)


def restore_models(backup: Path, models: list[Model], model_dir: Path) -> list[Path]:
    """Copy the verified model files into `model_dir` as `<version>.zip`, owner-only. A file
    already there with the right content stays; one with other content is refused, not replaced."""
    model_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for model in models:
        target = model_dir / file_name(model.version)
        if _present(backup, model, model_dir):
            continue
        partial = model_dir / f".{model.version}.restoring"
        if os.path.lexists(partial):
            partial.unlink()
        try:
            _copy(backup / model.file, partial)
            os.link(partial, target)  # never replaces a file that took the name meanwhile
        finally:
            if os.path.lexists(partial):
                partial.unlink()
        written.append(target)
    return written
