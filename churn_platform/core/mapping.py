"""Source mappings: which column of a company's CSV holds each canonical field, how its values
spell the categories, and how the file is written.

A mapping is a YAML file named by CHURN_SOURCE_MAPPING; the default is the original schema. Reading
one collects every problem instead of stopping at the first, so a user fixes them in one edit.
"""

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.events import AliasEvent

from churn_platform.core.errors import InputError
from churn_platform.core.fields import FIELDS, REQUIRED_FIELDS, Field
from churn_platform.core.files import Unreadable, absolute, open_regular
from churn_platform.core.settings import DEFAULT_SOURCE_MAPPING as DEFAULT_MAPPING

ENCODINGS = {  # accepted spelling -> DuckDB's read_csv name (a BOM is skipped either way)
    "utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8",
    "latin-1": "latin-1", "latin1": "latin-1", "iso-8859-1": "latin-1", "iso8859-1": "latin-1",
}
# Whitespace as a cell's padding, and runs of it inside a category spelling.
BLANKS = " \t\r\n\u00a0"
_BLANK_RUN = re.compile(r"[ \t\r\n\u00a0]+")
# A mapping is a few KiB; these bound what a hostile one can cost (a read of /dev/zero, an alias
# bomb, nesting deep enough to exhaust Python's stack). Its deepest use is fields.X.aliases.Y: 5.
MAPPING_MAX_BYTES = 1 << 20
MAPPING_MAX_DEPTH = 20


class MappingError(InputError):
    """The mapping cannot be used; the message names the mapping file and every problem."""

    def __init__(self, path: str | Path, problems: list[str]):
        listed = "\n".join(f"- {p}" for p in problems)
        super().__init__(
            f"source mapping {absolute(path)}: {len(problems)} problem(s),"
            f" nothing was loaded:\n{listed}"
        )


@dataclass(frozen=True)
class Dialect:
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header_row: int = 1  # line number; the lines above it are skipped


@dataclass(frozen=True)
class SourceMapping:
    """Canonical fields bound to one export: `fields` mirror FIELDS with its columns and aliases."""

    path: str
    sha256: str
    fields: tuple[Field, ...]
    dialect: Dialect | None  # None only while the `csv:` section has problems

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    @property
    def present(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.absent)

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.absent)

    @property
    def is_default(self) -> bool:
        return Path(self.path) == DEFAULT_MAPPING


def normalize(value: str) -> str:
    """How category spellings compare: case-insensitive, blanks trimmed and runs of them as one."""
    return _BLANK_RUN.sub(" ", value.strip(BLANKS)).lower()


class _Refused(yaml.YAMLError):
    """A construct a mapping never needs and a hostile one abuses."""


class _TextLoader(yaml.SafeLoader):
    """Every scalar stays text: YAML 1.1 would read Yes, No, on and 0 as booleans and numbers.

    Aliases are refused (one line of them can expand to gigabytes) and nesting is bounded (the
    composer recurses once per level).
    """

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise _Refused(f"YAML aliases (*{event.anchor}) are not accepted in a source mapping"
                           f" (line {event.start_mark.line + 1}): write the value out")
        self._depth += 1
        try:
            if self._depth > MAPPING_MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAPPING_MAX_DEPTH} levels"
                               f" (line {self.peek_event().start_mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_TextLoader.yaml_implicit_resolvers = {}


def _read_bounded(path: Path) -> bytes:
    """The file's bytes: a regular file of at most MAPPING_MAX_BYTES, or Unreadable."""
    with open_regular(path) as handle:
        try:
            content = handle.read(MAPPING_MAX_BYTES + 1)
        except OSError as error:
            raise Unreadable(f"cannot be read ({error.strerror})") from None
    if len(content) > MAPPING_MAX_BYTES:
        raise Unreadable(f"is larger than {MAPPING_MAX_BYTES >> 20} MiB; a source mapping is a"
                         " few KiB")
    return content


def _field_entry(name: str, entry) -> tuple[str | None, dict, list[str]]:
    """(source column or None when absent, raw aliases, problems) of one `fields:` entry."""
    where = f"fields.{name}"
    if isinstance(entry, str):
        return (entry, {}, []) if entry.strip() else (None, {}, [f"{where}: empty column name"])
    if not isinstance(entry, dict):
        return None, {}, [f"{where}: expected a column name or a mapping with `column` or `absent`"]
    problems = [f"{where}.{key}: unknown key (expected column, aliases or absent)"
                for key in entry if key not in ("column", "aliases", "absent")]
    column, aliases, absent = entry.get("column"), entry.get("aliases", {}), entry.get("absent")
    if absent is not None and str(absent).lower() not in ("true", "yes"):
        problems.append(f"{where}.absent: expected `true`, got {absent!r}")
    if absent is not None and column is not None:
        problems.append(f"{where}: has both `column` and `absent`; choose one")
    if absent is None and not isinstance(column, str) and not problems:
        problems.append(f"{where}: expected `column: <source column>` or `absent: true`")
    if not isinstance(aliases, dict):
        problems.append(f"{where}.aliases: expected `source spelling: category` pairs")
        aliases = {}
    return (column if isinstance(column, str) and absent is None else None), aliases, problems


def _aliases(field: Field, raw: dict) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """Normalized (spelling, category) pairs, and a problem for each that cannot be used."""
    where = f"fields.{field.name}.aliases"
    if raw and field.kind != "category":
        return (), [f"{where}: {field.name} is a {field.kind}, only category fields take aliases"]
    by_name = {normalize(c): c for c in field.categories}
    pairs, problems = {}, []
    for spelling, category in raw.items():
        if not isinstance(spelling, str) or not isinstance(category, str):
            problems.append(f"{where}: expected text on both sides, got {spelling!r}: {category!r}")
            continue
        target = by_name.get(normalize(category))
        key = normalize(spelling)
        if target is None:
            problems.append(
                f"{where}: {spelling!r} -> {category!r} names no category of {field.name}"
                f" (accepted: {', '.join(field.categories)})"
            )
        elif key in by_name and by_name[key] != target:
            problems.append(f"{where}: {spelling!r} is already the category {by_name[key]!r}")
        elif pairs.get(key, target) != target:
            problems.append(f"{where}: {spelling!r} maps to both {pairs[key]!r} and {target!r}")
        else:
            pairs[key] = target
    return tuple(sorted(pairs.items())), problems


def _dialect(raw) -> tuple[Dialect | None, list[str]]:
    if not isinstance(raw, dict):
        return None, ["csv: expected a mapping of delimiter, quote, encoding, header_row"]
    problems = [f"csv.{key}: unknown key (expected delimiter, quote, encoding or header_row)"
                for key in raw if key not in ("delimiter", "quote", "encoding", "header_row")]
    default = Dialect()
    delimiter, quote = raw.get("delimiter", default.delimiter), raw.get("quote", default.quote)
    for key, char in (("delimiter", delimiter), ("quote", quote)):
        if not isinstance(char, str) or len(char) != 1 or char in "\r\n":
            problems.append(f"csv.{key}: expected one character, got {char!r}")
    if delimiter == quote:
        problems.append("csv: delimiter and quote must differ")
    encoding = ENCODINGS.get(str(raw.get("encoding", default.encoding)).lower())
    if encoding is None:
        problems.append(f"csv.encoding: {raw['encoding']!r} is not supported"
                        " (utf-8, with or without BOM, or latin-1)")
    header_row = str(raw.get("header_row", default.header_row))
    if not header_row.isdigit() or int(header_row) < 1:
        problems.append(f"csv.header_row: expected a line number from 1, got {header_row!r}")
    if problems:
        return None, problems
    return Dialect(delimiter, quote, encoding, int(header_row)), []


def read_mapping(path: str | Path) -> tuple[SourceMapping, list[str]]:
    """The mapping and every problem found in it; the usable parts are bound even when some are not.

    A file that cannot be read or parsed raises MappingError at once: nothing in it can be trusted.
    """
    path = Path(path)
    try:
        content = _read_bounded(path)
        document = yaml.load(content.decode("utf-8-sig"), Loader=_TextLoader)
    except Unreadable as error:
        hint = " (set CHURN_SOURCE_MAPPING to a mapping file)" if error.missing else ""
        raise MappingError(path, [error.problem + hint]) from None
    except _Refused as error:
        raise MappingError(path, [str(error)]) from None
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise MappingError(path, [f"cannot be read as YAML: {error}"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("fields"), dict):
        raise MappingError(path, ["expected a YAML mapping with a `fields:` section"])

    problems = [f"{key}: unknown section (expected csv and fields)"
                for key in document if key not in ("csv", "fields")]
    dialect, dialect_problems = _dialect(document.get("csv", {}))
    problems += dialect_problems
    entries = document["fields"]
    known = {f.name for f in FIELDS}
    problems += [f"fields.{name}: unknown field (known: {', '.join(f.name for f in FIELDS)})"
                 for name in entries if name not in known]
    bound = []
    for field in FIELDS:
        column, raw_aliases, entry_problems = _field_entry(field.name, entries.get(field.name))
        if field.name not in entries:
            entry_problems = []  # not mentioned: the source lacks it
        aliases, alias_problems = _aliases(field, raw_aliases)
        problems += entry_problems + alias_problems
        if field.name in REQUIRED_FIELDS and column is None and not entry_problems:
            problems.append(f"fields.{field.name}: required, map it to a source column")
        bound.append(dataclasses.replace(field, source_column=column, aliases=aliases))
    columns = [f.source_column for f in bound if not f.absent]
    problems += [
        f"fields: column {column!r} is mapped to more than one field"
        for column in sorted({c for c in columns if columns.count(c) > 1})
    ]
    mapping = SourceMapping(str(path.resolve()), hashlib.sha256(content).hexdigest(),
                            tuple(bound), dialect)
    return mapping, problems


def load_mapping(path: str | Path) -> SourceMapping:
    """A mapping that has no problems, or MappingError listing them all."""
    mapping, problems = read_mapping(path)
    if problems:
        raise MappingError(path, problems)
    return mapping
