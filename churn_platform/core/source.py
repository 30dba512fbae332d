"""Reading the source CSV into staging: checked first, then loaded as text, lossless.

The source mapping (mapping.py) says how the file is written and which columns matter. The header
is read and checked in Python against it (cheap, and the error can name every problem at once);
the rows are read by DuckDB's CSV reader with every option fixed, so nothing is sniffed or typed.
"""

import codecs
import csv
import hashlib
import os
from pathlib import Path

from churn_platform.core.clock import utc_now
from churn_platform.core.errors import InputError
from churn_platform.core.files import Unreadable, absolute, open_regular
from churn_platform.core.mapping import (
    DEFAULT_MAPPING,
    Dialect,
    MappingError,
    SourceMapping,
    load_mapping,
    normalize,
    read_mapping,
)
from churn_platform.core.warehouse import SqlTable, quote_ident, quote_literal

_DELIMITERS = (",", ";", "\t", "|")
# Columns staging adds to every row; a source column may not take their names.
STAGING_COLUMNS = ("load_timestamp", "source_file", "source_row", "source_mapping_sha256")
_PYTHON_CODECS = {"utf-8": "utf-8-sig", "latin-1": "latin-1"}
# The header line, and each line above it, is read up to this; longer is refused, not read whole.
# (A 10,010-column header is about 100 KB.)
HEADER_MAX_BYTES = 1 << 20


class SourceFileError(InputError):
    """The source file cannot be loaded; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.problem = problem


def read_header(path: str | os.PathLike, dialect: Dialect = Dialect()) -> list[str]:
    """The header's column names, after checking the file can be read at all."""
    path = Path(path)
    try:
        with open_regular(path) as handle:
            lines = [handle.readline(HEADER_MAX_BYTES + 1) for _ in range(dialect.header_row)]
    except Unreadable as error:
        hint = " (set CHURN_SOURCE_CSV to the source CSV)" if error.missing else ""
        raise SourceFileError(path, error.problem + hint) from None
    except OSError as error:
        raise SourceFileError(path, f"cannot be read ({error.strerror})") from None
    for number, line in enumerate(lines, start=1):
        if len(line) > HEADER_MAX_BYTES:
            raise SourceFileError(path, f"line {number} is longer than {HEADER_MAX_BYTES >> 20} MiB"
                                        " without a line break: not a CSV header this can read")
        if not line:
            break
    if not lines[0].strip():
        raise SourceFileError(path, "is empty: expected a header line and data rows")
    if dialect.encoding == "latin-1" and lines[0].startswith(codecs.BOM_UTF8):
        raise SourceFileError(path, "starts with a UTF-8 byte-order mark: the file is UTF-8, but"
                                    " the source mapping says csv.encoding: latin-1 (set utf-8)")
    line = lines[-1]
    number = dialect.header_row
    if not line:
        raise SourceFileError(path, f"has no line {number} (the mapping's csv.header_row)")
    if not line.strip():
        raise SourceFileError(path, f"line {number}, the header, is empty")
    try:
        text = line.decode(_PYTHON_CODECS[dialect.encoding])
    except UnicodeDecodeError as error:
        raise SourceFileError(
            path, f"line {number} is not UTF-8 text (byte 0x{line[error.start]:02x} at position"
                  f" {error.start + 1}; set csv.encoding: latin-1 in the source mapping if the"
                  " export is Latin-1)"
        ) from None
    reader = csv.reader([text.rstrip("\r\n")], delimiter=dialect.delimiter,
                        quotechar=dialect.quote)
    try:
        return next(reader)
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            problem = f"has a field longer than {csv.field_size_limit():,} characters"
        else:
            problem = f"cannot be parsed ({error})"
        raise SourceFileError(path, f"line {number}, the header, {problem}") from None


def header_problems(header: list[str], mapping: SourceMapping) -> list[str]:
    """Everything wrong with the header for this mapping, each as one phrase."""
    problems = []
    folded = {normalize(column): column for column in header}
    missing = []
    for field in mapping.present:
        if field.source_column not in header:
            near = folded.get(normalize(field.source_column))
            missing.append(field.source_column + (f" (the header has {near!r})" if near else ""))
    if missing:
        problems.append(f"missing required columns: {', '.join(missing)}")
    # DuckDB's column names ignore case.
    lowered = [column.lower() for column in header]
    duplicated = sorted({c for c in header if lowered.count(c.lower()) > 1})
    if duplicated:
        by_case = len(duplicated) > len({c.lower() for c in duplicated})
        note = " (DuckDB ignores case)" if by_case else ""
        problems.append(f"columns named more than once{note}: {', '.join(duplicated)}")
    unnamed = [str(i) for i, column in enumerate(header, start=1) if not column.strip()]
    if unnamed and len(header) > 1:
        problems.append(f"header columns without a name, by position: {', '.join(unnamed)}")
    reserved = [c for c in header if c.lower() in STAGING_COLUMNS]
    if reserved:
        problems.append(f"columns named like those staging adds: {', '.join(reserved)}")
    if len(header) == 1:
        delimiter = mapping.dialect.delimiter
        guessed = [d for d in _DELIMITERS if d != delimiter and d in header[0]]
        hint = f" (it looks delimited by {guessed[0]!r})" if guessed else ""
        problems.append(
            f"the header has a single column{hint}; columns must be separated by {delimiter!r}"
        )
    return problems


def check_header(path: str | os.PathLike, header: list[str],
                 mapping: SourceMapping | None = None) -> None:
    """Every mapped column present, no name twice; all problems reported in one message."""
    mapping = mapping or load_mapping(DEFAULT_MAPPING)
    _raise_for(path, header_problems(header, mapping), mapping)


def _raise_for(path, problems: list[str], mapping: SourceMapping) -> None:
    if problems:
        suffix = "" if mapping.is_default else f" (source mapping {mapping.path})"
        raise SourceFileError(path, "; ".join(problems) + suffix)


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def file_sha256(path: Path) -> str:
    """The file's SHA-256: what a run loaded, shown with its materialization."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise SourceFileError(path, f"cannot be read ({error.strerror})") from None


def checked_source(path: str | os.PathLike, mapping_path: str | os.PathLike = DEFAULT_MAPPING
                   ) -> tuple[SourceMapping, list[str]]:
    """The mapping and the file's header, checked together before anything is written.

    Every problem of both is reported in one failure: a user fixes them all in one edit.
    """
    mapping, problems = read_mapping(mapping_path)
    header, file_problems = [], []
    if mapping.dialect is not None:  # without a dialect, the header cannot be read
        try:
            header = read_header(path, mapping.dialect)
            file_problems = header_problems(header, mapping)
        except SourceFileError as error:
            file_problems = [error.problem]
    if problems:
        raise MappingError(mapping_path, problems + [f"{path}: {p}" for p in file_problems])
    _raise_for(path, file_problems, mapping)
    return mapping, header


def staging_table(path: str | os.PathLike,
                  mapping_path: str | os.PathLike = DEFAULT_MAPPING) -> SqlTable:
    """The staging SELECT: every column as text, as it stood in the file, plus where it came from.

    Empty cells stay '' (force_not_null), a literal `None` stays the word None, and `source_row` is
    the record's line number in a file of one line per record. Columns the mapping does not use
    are kept too: staging is lossless. `source_mapping_sha256` records the mapping, for lineage.

    The file is read first into a temporary table in file order, whose rowid is then the record's
    index: cheaper than numbering rows with a window over the whole file (5M rows: about 2.5 s).
    """
    path = absolute(path)
    before = _fingerprint(path)
    mapping, header = checked_source(path, mapping_path)
    # Hashed before the read; verify() then proves the file unchanged, so the hash is what loaded.
    source_sha256 = file_sha256(path)
    dialect = mapping.dialect
    columns = ", ".join(f"{quote_literal(c)}: 'VARCHAR'" for c in header)
    not_null = ", ".join(quote_literal(c) for c in header)
    selected = ", ".join(quote_ident(c) for c in header)
    read = f"""
        CREATE OR REPLACE TEMP TABLE _prepared AS
        SELECT * FROM read_csv($source_file, header = true, auto_detect = false,
                               columns = {{{columns}}}, delim = $delim, quote = $quote,
                               escape = $quote, encoding = $encoding, skip = $skip,
                               force_not_null = [{not_null}])
    """
    sql = f"""
        SELECT {selected},
               $load_timestamp::TIMESTAMP AS load_timestamp,
               $source_file::VARCHAR AS source_file,
               (rowid - (SELECT min(rowid) FROM _prepared) + $first_row)::BIGINT AS source_row,
               $mapping_sha256::VARCHAR AS source_mapping_sha256
        FROM _prepared
    """

    def verify(row_count: int) -> None:
        """Refuse an empty load, or one from a file replaced or rewritten while it was read."""
        if row_count == 0:
            raise SourceFileError(path, "has a header but no data rows")
        if _fingerprint(path) != before:
            raise SourceFileError(path, "changed while it was being read; nothing was loaded")

    now = utc_now()
    mapped = {f.source_column for f in mapping.present}
    return SqlTable(
        sql,
        params={
            "load_timestamp": now,
            "source_file": str(path),
            "first_row": dialect.header_row + 1,
            "mapping_sha256": mapping.sha256,
        },
        prepare=(read, {
            "source_file": str(path),
            "delim": dialect.delimiter,
            "quote": dialect.quote,
            "encoding": dialect.encoding,
            "skip": dialect.header_row - 1,
        }),
        verify=verify,
        error_context=f"loading {path}",
        metadata={
            "source_file": str(path),
            "source_sha256": source_sha256,
            "source_columns": len(header),
            "source_mapping": mapping.path,
            "source_mapping_sha256": mapping.sha256,
            "absent_fields": ", ".join(mapping.absent) or "none",
            "columns_kept_in_staging_only": ", ".join(c for c in header if c not in mapped)
            or "none",
        },
    )
