"""Reading the source CSV into staging: checked first, then loaded as text, lossless.

The header is read and checked in Python (cheap, and the error can name every problem at once);
the rows are read by DuckDB's CSV reader with every option fixed, so nothing is sniffed or typed.
"""

import csv
import os
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from churn_platform.fields import SOURCE_COLUMNS
from churn_platform.warehouse import SqlTable, quote_ident, quote_literal

DELIMITER = ","
_OTHER_DELIMITERS = (";", "\t", "|")


class SourceFileError(dg.Failure):
    """The source file cannot be loaded; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(description=f"{path}: {problem}", allow_retries=False)


def read_header(path: str | os.PathLike) -> list[str]:
    """The header's column names, after checking the file can be read at all."""
    path = Path(path)
    if not path.exists():
        raise SourceFileError(path, "file not found (set CHURN_SOURCE_CSV to the source CSV)")
    if not path.is_file():
        raise SourceFileError(path, "is not a regular file")
    try:
        with path.open("rb") as handle:
            first_line = handle.readline()
    except OSError as error:
        raise SourceFileError(path, f"cannot be read ({error.strerror})") from None
    if not first_line.strip():
        raise SourceFileError(path, "is empty: expected a header line and data rows")
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SourceFileError(
            path, f"line 1 is not UTF-8 text (byte 0x{first_line[error.start]:02x} at position"
                  f" {error.start + 1})"
        ) from None
    return next(csv.reader([text.rstrip("\r\n")], delimiter=DELIMITER))


def check_header(path: str | os.PathLike, header: list[str]) -> None:
    """Every required column present, no name twice; all problems reported in one message."""
    problems = []
    missing = [column for column in SOURCE_COLUMNS if column not in header]
    if missing:
        problems.append(f"missing required columns: {', '.join(missing)}")
    duplicated = sorted({column for column in header if header.count(column) > 1})
    if duplicated:
        problems.append(f"columns named more than once: {', '.join(duplicated)}")
    if len(header) == 1:
        guessed = [d for d in _OTHER_DELIMITERS if d in header[0]]
        hint = f" (it looks delimited by {guessed[0]!r})" if guessed else ""
        problems.append(f"the header has a single column{hint}; columns must be separated by ','")
    if problems:
        raise SourceFileError(path, "; ".join(problems))


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def staging_table(path: str | os.PathLike) -> SqlTable:
    """The staging SELECT: every column as text, as it stood in the file, plus where it came from.

    Empty cells stay '' (force_not_null), a literal `None` stays the word None, and `source_row` is
    the record's line number in a file of one line per record (the header is line 1).
    """
    path = Path(path).resolve()
    before = _fingerprint(path)
    header = read_header(path)
    check_header(path, header)
    columns = ", ".join(f"{quote_literal(c)}: 'VARCHAR'" for c in header)
    not_null = ", ".join(quote_literal(c) for c in header)
    selected = ", ".join(quote_ident(c) for c in header)
    sql = f"""
        SELECT {selected},
               $load_timestamp::TIMESTAMP AS load_timestamp,
               $source_file::VARCHAR AS source_file,
               (row_number() OVER () + 1)::BIGINT AS source_row
        FROM read_csv($source_file, header = true, auto_detect = false, columns = {{{columns}}},
                      delim = ',', quote = '"', escape = '"', force_not_null = [{not_null}])
    """

    def verify(row_count: int) -> None:
        """Refuse an empty load, or one from a file replaced or rewritten while it was read."""
        if row_count == 0:
            raise SourceFileError(path, "has a header but no data rows")
        if _fingerprint(path) != before:
            raise SourceFileError(path, "changed while it was being read; nothing was loaded")

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return SqlTable(
        sql,
        params={"load_timestamp": now, "source_file": str(path)},
        verify=verify,
        error_context=f"loading {path}",
        metadata={"source_file": str(path), "source_columns": len(header)},
    )
