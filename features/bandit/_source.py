"""Reading a logged-bandit table (CSV or Parquet) as it is, before any judgement.

CSV is read with the standard ``csv`` module (UTF-8, a header line first), every value
a string; a row whose field count differs from the header's is kept aside as
malformed, a blank line is counted and skipped. Parquet is read with polars in its own
types. Each record keeps its number (``_rec``): the line number in a CSV file (the
header is line 1), the 1-based row number in a Parquet file. Anything that makes the
whole file unreadable raises :class:`InputUnreadableError` naming the file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from features.errors import DataError, InputUnreadableError

REC = "_rec"
PARQUET_MAGIC = b"PAR1"
_FORMATS = "a .csv or .parquet file"

Format = Literal["csv", "parquet"]


@dataclass(frozen=True)
class Malformed:
    """A CSV row whose field count differs from the header's."""

    record: int  # line number where the row ends
    fields: list[str]


@dataclass
class RawTable:
    """One input file as read: well-formed records in ``frame`` (with ``_rec``), the rest aside."""

    name: str  # the file name, never an absolute path
    format: Format
    frame: pl.DataFrame
    sha256: str
    header_width: int
    malformed: list[Malformed] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def records(self) -> int:
        return self.frame.height + len(self.malformed)


def read_table(path: Path) -> RawTable:
    """Read ``path`` (CSV or Parquet); raise before anything is written if it cannot be read."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputUnreadableError(f"{path}: unsupported input type {suffix or '(no suffix)'!r}; pass {_FORMATS}")
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise InputUnreadableError(f"{path}: is a directory; pass {_FORMATS}") from None
    except OSError as e:
        raise InputUnreadableError(f"{path}: cannot read it ({e.strerror}); check the path and permissions") from e
    if not data:
        raise InputUnreadableError(f"{path}: file is empty (0 bytes); re-export it from its producer")
    digest = hashlib.sha256(data).hexdigest()
    table = _read_csv(path, data, digest) if suffix == ".csv" else _read_parquet(path, data, digest)
    if table.records == 0:
        raise InputUnreadableError(f"{path}: holds no records (a header only, or no rows); "
                                   "re-export it from its producer")
    return table


def _read_csv(path: Path, data: bytes, digest: str) -> RawTable:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputUnreadableError(f"{path}: not UTF-8 text (byte {e.start}); re-export the CSV as UTF-8") from e
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    try:
        header = next(reader, None)
        while header is not None and not header:  # blank lines before the header
            header = next(reader, None)
        if header is None:
            raise InputUnreadableError(f"{path}: no header line; the first line must name the columns")
        _check_header(path, header)
        width = len(header)
        columns: list[list[str | None]] = [[] for _ in header]
        numbers: list[int] = []
        malformed: list[Malformed] = []
        blank = 0
        for row in reader:
            if not row:
                blank += 1
            elif len(row) != width:
                malformed.append(Malformed(reader.line_num, row))
            else:
                numbers.append(reader.line_num)
                for column, value in zip(columns, row, strict=True):
                    column.append(value if value != "" else None)
    except csv.Error as e:
        raise InputUnreadableError(f"{path}: not a readable CSV file near line {reader.line_num} ({e}); "
                                   "re-export it") from e
    frame = pl.DataFrame(
        [pl.Series(REC, numbers, dtype=pl.Int64)]
        + [pl.Series(name, values, dtype=pl.String) for name, values in zip(header, columns, strict=True)],
    )
    return RawTable(path.name, "csv", frame, digest, width, malformed, blank)


def _check_header(path: Path, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header; give every column one name")
        seen.add(name)
    if REC in seen:
        raise DataError(f"{path}: column name {REC!r} is reserved; rename that column")


def _read_parquet(path: Path, data: bytes, digest: str) -> RawTable:
    if len(data) < 12 or data[:4] != PARQUET_MAGIC or data[-4:] != PARQUET_MAGIC:
        raise InputUnreadableError(f"{path}: not a Parquet file (missing PAR1 magic bytes; truncated or another "
                                   "format); re-export it, or rename it if it is CSV")
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError, pl.exceptions.PanicException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputUnreadableError(f"{path}: cannot read it as Parquet ({first}); re-export the file") from e
    _check_header(path, frame.columns)
    frame = frame.with_row_index(REC, offset=1).with_columns(pl.col(REC).cast(pl.Int64))
    return RawTable(path.name, "parquet", frame, digest, frame.width - 1)
