"""The landing folder: which export files are there, what each one is, and in which order they load.

An export is its bytes: its identity is the SHA-256 of its content. The same bytes dropped twice
(under the same name or another) are one export; changed bytes under an old name are a new export
beside the old one, never an overwrite. Its date comes from its file name
(CHURN_LANDING_DATE_PATTERN, default `YYYY-MM-DD` or `YYYYMMDD`), else from its arrival: the
file's modification time, in UTC.
Exports load in (export date, arrival, name) order, so a late file takes its place by date.

Only regular `.csv` files directly in the folder are exports. Symbolic links are refused (a link
could point anywhere the platform can read), as are FIFOs and devices; sub-folders and hidden files
are ignored. A file modified within the settle time is still being written and waits for the next
scan. The folder is read up to MAX_ENTRIES entries: beyond that the scan fails instead of loading
an arbitrary part of it. An empty file is refused until it has content.
"""

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from churn_platform.core import settings
from churn_platform.core.errors import InputError

MAX_ENTRIES = 10_000
_CHUNK = 1 << 20
_KEY_HASH_CHARS = 12
# Dagster partition keys: the key is built from these only.
_KEY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}__[0-9a-f]{12}$")


@dataclass(frozen=True)
class Export:
    """One export file: its content hash, its date and where that date came from, its arrival."""

    path: Path
    sha256: str
    size: int
    export_date: date
    date_source: str  # "name" | "arrival"
    arrived_at: datetime  # the file's modification time, UTC

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def partition_key(self) -> str:
        """Stable across scans and renames: the export date and the first 48 bits of the hash."""
        return partition_key(self.export_date, self.sha256)

    @property
    def order(self) -> tuple:
        return self.export_date, self.arrived_at, self.name


@dataclass(frozen=True)
class Refused:
    path: Path
    reason: str


@dataclass
class Scan:
    """What a scan found: exports in load order, files it would not take and why, and the hash
    cache to pass to the next scan (a file whose stat did not change is not read again)."""

    exports: list[Export]
    refused: list[Refused]
    duplicates: list[tuple[Path, str]]  # (file, partition key of the export it repeats)
    waiting: list[Path]  # modified within the settle time
    hashes: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)


def partition_key(export_date: date, sha256: str) -> str:
    return f"{export_date.isoformat()}__{sha256[:_KEY_HASH_CHARS]}"


def parse_partition_key(key: str) -> tuple[date, str]:
    """The export date and hash prefix of a partition key; InputError for anything else."""
    if not _KEY_PATTERN.match(key):
        raise InputError(f"not an export partition key: {key!r} (expected YYYY-MM-DD__<12 hex>)")
    day, digest = key.split("__")
    return date.fromisoformat(day), digest


def date_pattern(pattern: str | None = None) -> re.Pattern:
    """The compiled file-name date pattern; it must have the groups year, month and day."""
    text = pattern if pattern is not None else settings.landing_date_pattern()
    try:
        compiled = re.compile(text)
    except re.error as error:
        raise InputError(
            f"{settings.LANDING_DATE_PATTERN_ENV} is not a regular expression: {error}"
        ) from None
    missing = {"year", "month", "day"} - set(compiled.groupindex)
    if missing:
        raise InputError(
            f"{settings.LANDING_DATE_PATTERN_ENV} must name the groups year, month and day"
            f" ((?P<year>...)); missing: {', '.join(sorted(missing))}"
        )
    return compiled


def date_from_name(name: str, pattern: re.Pattern) -> date | None:
    """The date the pattern finds in a file name; None when it finds none.

    A match that is not a calendar date (20261399) raises: that file's name says a date, and
    guessing another would misplace it in history.
    """
    match = pattern.search(name)
    if not match:
        return None
    try:
        return date(int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError:
        raise InputError(
            f"landing file {name}: {match.group(0)!r} in its name is not a calendar date;"
            f" rename the file or change {settings.LANDING_DATE_PATTERN_ENV}"
        ) from None


def _signature(st: os.stat_result) -> tuple[int, ...]:
    # ctime changes on every write and cannot be set back: a rewrite keeping size and mtime shows.
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _read_hash(path: Path) -> tuple[str, os.stat_result]:
    """The file's SHA-256 and stat, read through a descriptor that never follows a link nor
    waits on a FIFO; raises ValueError when the file is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _signature(after) != _signature(st):
        raise BlockingIOError("changed while being read")
    return digest.hexdigest(), st


def scan(folder: Path, *, pattern: str | None = None, settle_s: float | None = None,
         hashes: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
         now: datetime | None = None) -> Scan:
    """The exports in `folder`, in load order, and what was refused or is still arriving."""
    compiled = date_pattern(pattern)
    settle_s = settings.landing_settle_seconds() if settle_s is None else settle_s
    now = now or datetime.now(timezone.utc)
    hashes = dict(hashes or {})
    if not folder.is_dir() or folder.is_symlink():
        raise InputError(
            f"landing folder {folder} ({settings.LANDING_DIR_ENV}) is not a directory"
            " (a symbolic link is not taken either)"
        )
    with os.scandir(folder) as entries:
        listed = []
        for entry in entries:
            listed.append(entry)
            if len(listed) > MAX_ENTRIES:
                raise InputError(
                    f"landing folder {folder} holds more than {MAX_ENTRIES} entries: move loaded"
                    " exports elsewhere (they stay in staging), then the scan resumes"
                )
    found: dict[str, Export] = {}
    result = Scan([], [], [], [], {})
    for entry in sorted(listed, key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith(".") or entry.is_dir(follow_symlinks=False):
            continue  # hidden (partial uploads, editors' files) and sub-folders: not exports
        if entry.is_symlink():
            result.refused.append(Refused(path, "a symbolic link: copy the file itself"))
            continue
        if not entry.name.lower().endswith(".csv"):
            result.refused.append(Refused(path, "not a .csv file"))
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                result.refused.append(Refused(path, "not a regular file"))
                continue
            if st.st_size == 0:  # a failed or unstarted export; looked at again next scan
                result.refused.append(Refused(path, "empty: an export has at least a header"))
                continue
            arrived = datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc)
            if (now - arrived).total_seconds() < settle_s:
                result.waiting.append(path)
                continue
            cached = hashes.get(entry.name)
            if cached and tuple(cached[0]) == _signature(st):  # a list once through JSON
                sha = cached[1]
            else:
                sha, st = _read_hash(path)
            export_date = date_from_name(entry.name, compiled)
        except InputError as error:
            result.refused.append(Refused(path, error.description))
            continue
        except BlockingIOError:
            result.waiting.append(path)
            continue
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            result.refused.append(Refused(path, f"cannot be read: {reason}"))
            continue
        result.hashes[entry.name] = (_signature(st), sha)
        export = Export(
            path=path, sha256=sha, size=st.st_size,
            export_date=export_date or arrived.date(),
            date_source="name" if export_date else "arrival",
            arrived_at=arrived,
        )
        earlier = found.get(sha)
        if earlier is None or export.order < earlier.order:
            if earlier is not None:
                result.duplicates.append((earlier.path, export.partition_key))
            found[sha] = export
        else:
            result.duplicates.append((path, earlier.partition_key))
    result.exports = sorted(found.values(), key=lambda e: e.order)
    return result


def new_exports(exports: list[Export], known_keys: list[str] | set[str]) -> list[Export]:
    """The exports not yet registered, in load order.

    Known by content: a registered key whose hash prefix matches is the same export, even if its
    date differs (an undated file touched again has a new arrival time, not new content).
    """
    known = {key.rsplit("__", 1)[-1] for key in known_keys}
    return [e for e in exports if e.sha256[:_KEY_HASH_CHARS] not in known]


def locate(folder: Path, key: str, *, pattern: str | None = None) -> Export:
    """The file in `folder` holding the export `key`, its content checked against the key.

    Found by content, not name: the export may have been renamed or touched since it was
    registered. InputError when no file holds it any more (changed or removed).
    """
    _, digest = parse_partition_key(key)
    found = scan(folder, pattern=pattern, settle_s=0)
    for export in found.exports:
        if export.sha256.startswith(digest):
            return export
    raise InputError(
        f"export {key}: no file in the landing folder {folder} holds its content any more (changed"
        " or removed since it was registered); a changed file is registered as a new export"
    )


def require_stable_pseudonyms() -> None:
    """Landing mode keeps history across exports: it needs the keyed, stable pseudonyms."""
    if not os.environ.get(settings.PSEUDONYMIZATION_KEY_ENV):
        raise InputError(
            f"landing-folder mode ({settings.LANDING_DIR_ENV}) builds customer history across"
            " exports, which needs the same pseudonym for a customer in every export; without"
            f" {settings.PSEUDONYMIZATION_KEY_ENV} each run draws random pseudonyms and no export"
            f" would join the last. Set {settings.PSEUDONYMIZATION_KEY_ENV} to a long random"
            " secret (e.g. `openssl rand -hex 32`) kept outside the repository, and keep it:"
            " changing it starts history over"
        )
