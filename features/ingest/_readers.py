"""Readers: one input file to marked, staged rows, plus what it rejected before staging.

JSONL is read line by line (``json.loads``) in chunks; lines that are too large, not
UTF-8, not JSON or not an object are rejected here with their reason, the rest are
staged (``_columns``) and marked (``_validate``) a chunk at a time. Parquet is
scanned lazily, staged and marked in one streaming pass that also keeps the bad
rows as read. Each reader can give back any record exactly as read, for the
quarantine: JSONL by byte offset, Parquet by row number.
"""

from __future__ import annotations

import base64
import gc
import json
import math
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from features.errors import InputUnreadableError
from features.ingest._columns import ORIGINAL, REC, STAGED_COLUMNS, stage_records, stage_scan
from features.ingest._sources import Source
from features.ingest._validate import FAILED, IGNORED

CHUNK_RECORDS = 100_000  # JSONL records staged together
PIECE_COLUMNS = [*STAGED_COLUMNS, REC, FAILED, IGNORED]  # every reader's output, in this order
_READ_LIMIT_SLACK = 2  # a line of max_record_bytes plus "\r\n" still counts as in bounds

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_LONE_SURROGATE = "line escapes a lone surrogate (\\ud800-\\udfff): not representable as UTF-8 text"

_raw_decode = json.JSONDecoder().raw_decode
_JSON_SPACE = " \t\n\r"

Marker = Callable[[pl.LazyFrame], pl.LazyFrame]
ByteProgress = Callable[[int], None]  # bytes read so far in this file


@dataclass(frozen=True)
class Rejected:
    """A record quarantined before it could be staged (JSONL only)."""

    record: int
    reason: str
    detail: str


@dataclass
class Loaded:
    """One input file: its marked rows, its early rejects, and access to raw records."""

    source: Source
    pieces: list[pl.DataFrame]
    records: int
    blank_lines: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    offsets: array | None = None  # JSONL: byte offset of each line start, and of the end
    originals: dict[int, dict[str, Any]] = field(default_factory=dict)  # Parquet rows as read
    _stamp: tuple[int, int] = (0, 0)

    def fetch(self, records: list[int]) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
        """Per record: (the quarantine's raw part, the fields as read for details)."""
        self._check_unchanged()
        if self.offsets is not None:
            return {r: _jsonl_record(line) for r, line in zip(records, self._lines(records), strict=True)}
        missing = [r for r in records if r not in self.originals]
        if missing:
            self.originals.update(_parquet_rows(self.source, missing))
        return {r: ({"raw": _jsonable(self.originals[r])}, self.originals[r]) for r in records}

    def _lines(self, records: list[int]) -> list[bytes]:
        assert self.offsets is not None
        out = []
        with self.source.path.open("rb") as f:
            for r in records:
                start, end = self.offsets[r - 1], self.offsets[r]
                f.seek(start)
                out.append(f.read(end - start).removesuffix(b"\n"))
        return out

    def _check_unchanged(self) -> None:
        if _stamp(self.source) != self._stamp:
            raise InputUnreadableError(
                f"{self.source.path}: the file changed while ingest was reading it; run ingest again"
            )


def _stamp(source: Source) -> tuple[int, int]:
    try:
        stat = source.path.stat()
    except OSError as e:
        raise InputUnreadableError(f"{source.path}: cannot read it ({e.strerror})") from e
    return stat.st_size, stat.st_mtime_ns


def read_jsonl(source: Source, max_record_bytes: int, mark: Marker, progress: ByteProgress) -> Loaded:
    """Parse a JSONL file line by line; stage and mark the objects, reject the rest."""
    # Parsing allocates millions of acyclic objects; the cyclic collector would rescan
    # every live record again and again (it was half the time), so it pauses meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _read_jsonl(source, max_record_bytes, mark, progress)
    finally:
        if collecting:
            gc.enable()


def _read_jsonl(source: Source, max_record_bytes: int, mark: Marker, progress: ByteProgress) -> Loaded:
    loaded = Loaded(source, [], 0, offsets=array("q", [0]), _stamp=_stamp(source))
    offsets = loaded.offsets
    assert offsets is not None
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    limit = max_record_bytes + _READ_LIMIT_SLACK
    position = 0
    number = 0
    mark_offset, keep, keep_number = offsets.append, records.append, numbers.append
    try:
        with source.path.open("rb") as f:
            readline = f.readline
            while line := readline(limit):
                size = len(line)
                cut = line[-1] != 10  # no "\n": only a file's last line can lack it
                oversized = cut and size == limit
                if oversized:
                    size += _skip_rest_of_line(f)
                number += 1
                position += size
                mark_offset(position)
                body = line.rstrip(b"\r\n")
                if oversized or len(body) > max_record_bytes:
                    loaded.rejected.append(Rejected(number, "record_too_large", _too_large(size, max_record_bytes)))
                    continue
                try:  # the common case, inline: UTF-8, one JSON object, nothing around it
                    text = body.decode("utf-8")
                    parsed, end = _raw_decode(text)
                    simple = end == len(text) and type(parsed) is dict and b"\\u" not in body
                except (ValueError, RecursionError):  # ValueError: UnicodeDecodeError, JSONDecodeError
                    simple = False  # _parse below says why
                if not simple:
                    if not body or body.isspace():
                        loaded.blank_lines += 1
                        continue
                    parsed = _parse(body, number, cut, loaded.rejected)
                    if parsed is None:
                        continue
                keep(parsed)
                keep_number(number)
                if len(records) >= CHUNK_RECORDS:
                    loaded.pieces.append(_stage_chunk(records, numbers, mark))
                    records.clear()  # in place: keep and keep_number append to these lists
                    numbers.clear()
                    progress(position)
    except OSError as e:
        raise InputUnreadableError(f"{source.path}: cannot read it ({e.strerror})") from e
    if records or not loaded.pieces:
        loaded.pieces.append(_stage_chunk(records, numbers, mark))
    loaded.records = number - loaded.blank_lines
    progress(position)
    return loaded


def _skip_rest_of_line(f: Any) -> int:
    skipped = 0
    while True:
        part = f.readline(1 << 20)
        skipped += len(part)
        if not part or part.endswith(b"\n"):
            return skipped


def _loads(text: str) -> Any:
    """``json.loads`` without its per-call overhead (the line is already a str)."""
    if text[:1] in _JSON_SPACE:
        text = text.lstrip(_JSON_SPACE)
    parsed, end = _raw_decode(text)
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        raise json.JSONDecodeError("Extra data", text, end)
    return parsed


def _parse(body: bytes, number: int, cut: bool, rejected: list[Rejected]) -> dict[str, Any] | None:
    try:
        parsed = _loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        rejected.append(Rejected(number, "truncated_last_line" if cut else "not_utf8", _not_utf8(e, cut)))
        return None
    except (ValueError, RecursionError) as e:
        rejected.append(Rejected(number, "truncated_last_line" if cut else "malformed_json", _malformed(e, cut)))
        return None
    if type(parsed) is not dict:
        rejected.append(Rejected(number, "not_an_object", _not_object(parsed)))
        return None
    if b"\\u" in body and _SURROGATE_ESCAPE.search(body) and not _is_unicode(parsed):
        rejected.append(Rejected(number, "not_utf8", _LONE_SURROGATE))
        return None
    return parsed


def _is_unicode(parsed: dict[str, Any]) -> bool:
    """False if a \\u escape left a lone surrogate, which no UTF-8 text can hold."""
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _stage_chunk(records: list[dict[str, Any]], numbers: list[int], mark: Marker) -> pl.DataFrame:
    return mark(stage_records(records, numbers).lazy()).select(PIECE_COLUMNS).collect()


def read_parquet(source: Source, mark: Marker) -> Loaded:
    """Scan a Parquet file, stage and mark it in one streaming pass; a row is a record."""
    stamp = _stamp(source)
    try:
        scan = pl.scan_parquet(source.path)
        schema = scan.collect_schema()
        base = scan.select(pl.all().name.prefix(ORIGINAL)).with_row_index(REC, offset=1)
        marked = mark(base.with_columns(stage_scan(schema)))
        originals = [ORIGINAL + c for c in schema]
        rows = marked.select(PIECE_COLUMNS)
        bad = marked.filter(pl.col(FAILED)).select(REC, *originals)
        rows_df, bad_df = pl.collect_all([rows, bad], engine="streaming")
    except (pl.exceptions.PolarsError, OSError, pl.exceptions.PanicException) as e:
        raise InputUnreadableError(
            f"{source.path}: cannot read it as Parquet ({_first_line(e)}); re-export the file"
        ) from e
    rows_df = rows_df.with_columns(pl.col(REC).cast(pl.Int64))
    loaded = Loaded(source, [rows_df], rows_df.height, _stamp=stamp)
    for row in bad_df.iter_rows(named=True):
        record = int(row.pop(REC))
        loaded.originals[record] = {k.removeprefix(ORIGINAL): v for k, v in row.items()}
    return loaded


def _parquet_rows(source: Source, records: list[int]) -> dict[int, dict[str, Any]]:
    try:
        rows = (
            pl.scan_parquet(source.path)
            .with_row_index(REC, offset=1)
            .filter(pl.col(REC).is_in(pl.Series(records, dtype=pl.UInt32).implode()))
            .collect(engine="streaming")
        )
    except (pl.exceptions.PolarsError, OSError, pl.exceptions.PanicException) as e:
        raise InputUnreadableError(f"{source.path}: cannot read it again ({_first_line(e)})") from e
    return {int(row.pop(REC)): row for row in rows.iter_rows(named=True)}


def _jsonl_record(line: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        raw: dict[str, Any] = {"raw": line.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_b64": base64.b64encode(line).decode("ascii")}, {}
    try:
        parsed = json.loads(raw["raw"])
    except (ValueError, RecursionError):
        return raw, {}
    return raw, parsed if isinstance(parsed, dict) else {}


def _too_large(size: int, limit: int) -> str:
    return (
        f"line is {size} bytes, over ingest.max_record_bytes ({limit}); not parsed. "
        "Split the record or raise the limit"
    )


def _not_utf8(error: UnicodeDecodeError, cut: bool) -> str:
    what = "last line has no newline and " if cut else "line "
    return f"{what}is not UTF-8 (byte {error.start} of the line: {error.reason})"


def _malformed(error: Exception, cut: bool) -> str:
    why = error.msg if isinstance(error, json.JSONDecodeError) else type(error).__name__
    where = f" at column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
    if cut:
        return f"last line has no newline and is not valid JSON ({why}{where}): the file was cut short"
    return f"line is not valid JSON ({why}{where})"


def _not_object(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return f"line is a JSON {kinds.get(type(value), 'number')}, not an object with the event fields"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _jsonable(value: Any) -> Any:
    """A Parquet value as JSON: times as ISO text, non-finite numbers and bytes as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal | timedelta):
        return str(value)
    return value
