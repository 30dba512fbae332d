"""A backup's manifest: what the platform wrote, and the checks that a folder is exactly that.

Restore and pruning trust a folder only through its manifest: a JSON file written last, naming
every table (schema, name, columns and types, row count) and the Parquet file that holds it, with
the file's size and SHA-256, and (version 2) every churn model file with its version, which is its
SHA-256. Names and types are checked against a whitelist before any of them
reaches a statement, and nothing else in the folder is ever read or executed.
"""

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churn_platform.core.churn_model import SUFFIX as MODEL_SUFFIX
from churn_platform.core.errors import InputError

FORMAT = "churn_platform-backup"
VERSION = 2  # 2 adds "models"; a version 1 manifest (no models) still verifies
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20

# Schema and table names are the platform's own; file names are numbered, never derived from data.
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# DuckDB's own catalogs and schemas: a table there would not land in the restored file.
RESERVED = frozenset({"temp", "system", "information_schema", "pg_catalog"})
FILE = re.compile(r"table-[0-9]{3}\.parquet")
MODEL_FILE = re.compile(r"model-[0-9]{3}" + re.escape(MODEL_SUFFIX))
SHA256 = re.compile(r"[0-9a-f]{64}")
DECIMAL = re.compile(r"DECIMAL\(([0-9]{1,2}),([0-9]{1,2})\)")
TYPES = frozenset({
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "VARCHAR", "BLOB", "DATE", "TIME",
    "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "INTERVAL", "UUID",
})
# Parquet has no 128-bit integer (DuckDB would write a DOUBLE): these travel as text, losslessly.
AS_TEXT = frozenset({"HUGEINT", "UHUGEINT"})
# Column names come from the source file's header (staging keeps them as written): any text but
# NUL, always quoted with quote_ident.
MAX_COLUMN_NAME = 1024

TABLE_KEYS = {"schema", "name", "columns", "row_count", "file", "size_bytes", "sha256"}
MODEL_KEYS = {"file", "version", "size_bytes"}
MANIFEST_KEYS = {1: {"format", "version", "created_at", "tables"},
                 2: {"format", "version", "created_at", "tables", "models"}}


class BackupRefused(InputError):
    """A folder that is not a backup the platform wrote, or a restore that cannot go ahead."""

    def __init__(self, folder: Path | str, why: str):
        super().__init__(f"{folder}: refused: {why}")
        self.why = why


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[tuple[str, str], ...]
    row_count: int
    file: str
    size_bytes: int
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema, "name": self.name,
            "columns": [{"name": n, "type": t} for n, t in self.columns],
            "row_count": self.row_count, "file": self.file,
            "size_bytes": self.size_bytes, "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Model:
    """A churn model file: its version is its SHA-256 (core/churn_model.py names it so)."""

    file: str
    version: str
    size_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "version": self.version, "size_bytes": self.size_bytes}


@dataclass(frozen=True)
class Contents:
    tables: list[Table]
    models: list[Model]


def check_type(data_type: str) -> str | None:
    """None if `data_type` may be pasted into CREATE TABLE, else why not."""
    if data_type in TYPES:
        return None
    decimal = DECIMAL.fullmatch(data_type)
    if decimal and 1 <= int(decimal[1]) <= 38 and int(decimal[2]) <= int(decimal[1]):
        return None
    return f"type {data_type!r} is not one a backup may hold"


def check_column_name(name: Any) -> str | None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_COLUMN_NAME or "\x00" in name:
        return f"column name {name!r} is not 1 to {MAX_COLUMN_NAME} characters without NUL"
    return None


def check_table_name(name: Any) -> str | None:
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED:
        return f"name {name!r} is not lower-case letters, digits and underscores, nor reserved"
    return None


def _table(entry: Any, index: int) -> Table:
    where = f"table {index + 1} of the manifest"
    if not isinstance(entry, dict) or set(entry) != TABLE_KEYS:
        raise ValueError(f"{where} does not have exactly the fields {sorted(TABLE_KEYS)}")
    for key in ("schema", "name"):
        if why := check_table_name(entry[key]):
            raise ValueError(f"{where}: {key} {why}")
    label = f"{entry['schema']}.{entry['name']}"
    columns = entry["columns"]
    if not isinstance(columns, list) or not columns:
        raise ValueError(f"{label}: no column list")
    pairs = []
    for column in columns:
        if not isinstance(column, dict) or set(column) != {"name", "type"}:
            raise ValueError(f"{label}: a column is not {{name, type}}")
        if why := check_column_name(column["name"]) or (
                check_type(column["type"]) if isinstance(column["type"], str)
                else f"type {column['type']!r} is not text"):
            raise ValueError(f"{label}: {why}")
        pairs.append((column["name"], column["type"]))
    if len({n.casefold() for n, _ in pairs}) != len(pairs):
        raise ValueError(f"{label}: two columns share a name")
    for key in ("row_count", "size_bytes"):
        if type(entry[key]) is not int or entry[key] < 0:
            raise ValueError(f"{label}: {key} is not a count")
    if not isinstance(entry["file"], str) or not FILE.fullmatch(entry["file"]):
        raise ValueError(f"{label}: file name {entry['file']!r} is not table-NNN.parquet")
    if not isinstance(entry["sha256"], str) or not SHA256.fullmatch(entry["sha256"]):
        raise ValueError(f"{label}: sha256 is not 64 lower-case hex digits")
    return Table(entry["schema"], entry["name"], tuple(pairs), entry["row_count"],
                 entry["file"], entry["size_bytes"], entry["sha256"])


def _model(entry: Any, index: int) -> Model:
    where = f"model {index + 1} of the manifest"
    if not isinstance(entry, dict) or set(entry) != MODEL_KEYS:
        raise ValueError(f"{where} does not have exactly the fields {sorted(MODEL_KEYS)}")
    if not isinstance(entry["file"], str) or not MODEL_FILE.fullmatch(entry["file"]):
        raise ValueError(f"{where}: file name {entry['file']!r} is not model-NNN{MODEL_SUFFIX}")
    if not isinstance(entry["version"], str) or not SHA256.fullmatch(entry["version"]):
        raise ValueError(f"{where}: version is not 64 lower-case hex digits")
    if type(entry["size_bytes"]) is not int or entry["size_bytes"] < 0:
        raise ValueError(f"{where}: size_bytes is not a count")
    return Model(entry["file"], entry["version"], entry["size_bytes"])


def parse_manifest(document: Any) -> Contents:
    """The tables and models a manifest lists, or ValueError saying what is wrong with it."""
    version = document.get("version") if isinstance(document, dict) else None
    if not isinstance(document, dict) or document.get("format") != FORMAT or (
            type(version) is not int or version not in MANIFEST_KEYS):
        raise ValueError(f"the manifest is not {FORMAT} version 1 or {VERSION}")
    if set(document) != MANIFEST_KEYS[version]:
        raise ValueError("the manifest does not have exactly the fields"
                         f" {sorted(MANIFEST_KEYS[version])}")
    models = document.get("models", [])
    if not isinstance(document["created_at"], str) or not isinstance(document["tables"], list) \
            or not isinstance(models, list):
        raise ValueError("the manifest's created_at, tables or models is malformed")
    tables = [_table(entry, i) for i, entry in enumerate(document["tables"])]
    if len({t.label for t in tables}) != len(tables):
        raise ValueError("two tables share a name")
    parsed = [_model(entry, i) for i, entry in enumerate(models)]
    files = [t.file for t in tables] + [m.file for m in parsed]
    if len(set(files)) != len(files):
        raise ValueError("two tables or models share a file")
    if len({m.version for m in parsed}) != len(parsed):
        raise ValueError("two models share a version")
    return Contents(tables, parsed)


def _open_regular(path: Path) -> int:
    """A descriptor on `path` itself: a symbolic link or anything but a regular file is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path.name} is not a regular file")
    return fd


def file_digest(path: Path) -> tuple[int, str]:
    """The size and SHA-256 of a regular file."""
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as file:
        digest = hashlib.file_digest(file, "sha256")
        return file.tell(), digest.hexdigest()


def _read_manifest(folder: Path) -> Any:
    try:
        fd = _open_regular(folder / MANIFEST)
    except FileNotFoundError:
        raise ValueError(f"no {MANIFEST}: not a backup the platform wrote (or not a complete one)")
    except OSError as error:  # ELOOP: a symbolic link
        raise ValueError(f"{MANIFEST} cannot be opened as a regular file ({error.strerror})")
    with os.fdopen(fd, "rb") as file:
        raw = file.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{MANIFEST} is not valid JSON ({type(error).__name__})")


def verify_backup(folder: Path) -> Contents:
    """The verified tables and models of a backup folder, or BackupRefused naming the folder and
    why.

    The folder must hold exactly the manifest and the files it lists, as regular files (no
    symbolic links), with the listed sizes and SHA-256s (a model's SHA-256 is its version).
    """
    try:
        if not os.path.lexists(folder):
            raise ValueError("does not exist")
        if folder.is_symlink() or not folder.is_dir():
            raise ValueError("not a folder (a symbolic link is not followed)")
        contents = parse_manifest(_read_manifest(folder))
        tables = contents.tables
        expected = [(t.file, t.label, t.size_bytes, t.sha256) for t in tables] + [
            (m.file, f"model {m.version}", m.size_bytes, m.version) for m in contents.models]
        unexpected = set(os.listdir(folder)) - {MANIFEST, *(e[0] for e in expected)}
        if unexpected:
            raise ValueError(f"unexpected entries {sorted(unexpected)} beside the manifest")
        for file, label, listed_size, listed_sha256 in expected:
            try:
                size, sha256 = file_digest(folder / file)
            except FileNotFoundError:
                raise ValueError(f"{file} ({label}) is missing")
            except OSError as error:
                raise ValueError(f"{file} cannot be opened as a regular file"
                                 f" ({error.strerror})")
            if (size, sha256) != (listed_size, listed_sha256):
                raise ValueError(f"{file} ({label}) does not match its SHA-256 in the"
                                 " manifest: changed or damaged since the backup was taken")
    except ValueError as error:
        raise BackupRefused(folder, str(error)) from None
    except OSError as error:
        raise BackupRefused(folder, f"cannot be read ({error.strerror})") from None
    return contents


def write_manifest(folder: Path, created_at: str, tables: list[Table],
                   models: list[Model] = ()) -> None:
    """Write the manifest, owner-only; it is checked as restore would check it first."""
    document = {"format": FORMAT, "version": VERSION, "created_at": created_at,
                "tables": [t.as_json() for t in tables],
                "models": [m.as_json() for m in models]}
    parse_manifest(json.loads(json.dumps(document)))
    fd = os.open(folder / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
