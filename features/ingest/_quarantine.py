"""The quarantine: every bad record as read, with one reason code and a detail.

One JSON object per line, ordered by input file then record number:
``{"source": <file name>, "record": <1-based line/row>, "reason": <code>,
"detail": <text naming the field>, "raw": <line as text, or the Parquet row as an
object>}``; a line that is not UTF-8 is kept losslessly as ``"raw_b64"``. The
quarantine lives in the raw zone: it may hold raw viewer ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from features.ingest._columns import REC
from features.ingest._dedup import DIFFERS, FIRST_REC, FIRST_SRC
from features.ingest._readers import Loaded
from features.ingest._validate import CHECK, ENUMS, ID_FIELDS, INT32_MAX, Check
from features.schema import COMMON_FIELDS, EVENT_TYPES, FIELD_KINDS, MAX_ID_CHARS, MAX_STRING_CHARS, ts_to_us, us_to_iso

_KIND_TEXT = {
    "str": "a string",
    "ts": "an ISO 8601 time string with UTC offset",
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
}


@dataclass(frozen=True)
class Entry:
    """One quarantined record, ready to write."""

    src: int
    record: int
    reason: str
    detail: str
    raw: dict[str, Any]  # {"raw": ...} or {"raw_b64": ...}


@dataclass(frozen=True)
class TimeLimits:
    """How the accepted time range is described in details."""

    min_text: str
    max_text: str


def collect_entries(
    loaded: Sequence[Loaded],
    failed: pl.DataFrame,
    rules: Sequence[Check],
    conflicts: pl.DataFrame,
    limits: TimeLimits,
) -> list[Entry]:
    """Every bad record with its reason, detail and raw form, in input order.

    ``failed`` holds the rows that failed a check (with CHECK), ``conflicts`` the
    later rows of event_ids seen before with other content.
    """
    wanted: dict[int, set[int]] = {i: {r.record for r in item.rejected} for i, item in enumerate(loaded)}
    for frame in (failed, conflicts):
        for src, record in frame.select("_src", REC).iter_rows():
            wanted[src].add(record)
    fetched = {i: loaded[i].fetch(sorted(records)) for i, records in wanted.items() if records}
    out = []
    for i, item in enumerate(loaded):
        for r in item.rejected:
            out.append(Entry(i, r.record, r.reason, r.detail, fetched[i][r.record][0]))
    for row in failed.iter_rows(named=True):
        rule = rules[row[CHECK]]
        raw, original = fetched[row["_src"]][row[REC]]
        out.append(Entry(row["_src"], row[REC], rule.code, _detail(rule, row, original, limits), raw))
    for row in conflicts.iter_rows(named=True):
        first = f"{loaded[row[FIRST_SRC]].source.name} record {row[FIRST_REC]}"
        detail = (
            f"event_id {_show(row['event_id'])} was first seen in {first} with different "
            f"{row[DIFFERS]}; the first is kept. Give distinct events distinct event_ids"
        )
        out.append(Entry(row["_src"], row[REC], "event_id_conflict", detail, fetched[row["_src"]][row[REC]][0]))
    return sorted(out, key=lambda e: (e.src, e.record))


def write_quarantine(path: Path, entries: Iterable[Entry], loaded: Sequence[Loaded]) -> None:
    """Write the quarantine JSONL to ``path`` (the caller makes it atomic)."""
    with path.open("w", encoding="ascii", newline="\n") as f:
        for e in entries:
            item = {"source": loaded[e.src].source.name, "record": e.record, "reason": e.reason, "detail": e.detail}
            # ASCII escapes: no U+2028 or NEL inside a record for line-splitting tools to trip on
            f.write(json.dumps({**item, **e.raw}, ensure_ascii=True, allow_nan=False) + "\n")


def _detail(rule: Check, row: dict[str, Any], original: dict[str, Any], limits: TimeLimits) -> str:
    name, code = rule.field, rule.code
    value = row.get(name)
    if code.startswith("missing_field:"):
        if name in COMMON_FIELDS:
            return f"required field '{name}' is missing or null"
        return f"field '{name}' is required for type '{row['type']}' and is missing or null"
    if code.startswith("wrong_type:"):
        got = _describe(original.get(name)) if original else "a value of another type"
        return f"field '{name}' must be {_KIND_TEXT[FIELD_KINDS[name]]}, got {got}"
    if code == "unknown_type":
        return f"field 'type' = {_show(value)} is not a schema v1 event type ({', '.join(EVENT_TYPES)})"
    if code == "string_too_long":
        limit = MAX_ID_CHARS if name in ID_FIELDS else MAX_STRING_CHARS
        return f"field '{name}' has {len(str(value))} characters, over the limit of {limit}"
    if code == "bad_timestamp":
        return (
            f"field '{name}' = {_show(original.get(name))} is not an ISO 8601 time with a UTC "
            "offset (e.g. 2026-08-03T17:00:00Z)"
        )
    if code.startswith("bad_value:"):
        if isinstance(value, str) and not value:
            return f"field '{name}' is empty"
        if name in ENUMS:
            return f"field '{name}' = {_show(value)} is not one of: {', '.join(ENUMS[name])}"
        return f"field '{name}' = {value} is not a finite number"
    if code == "negative_amount":
        return f"field 'amount' = {value} is negative; it must be >= 0"
    if code == "bad_propensity":
        return f"field 'propensity' = {value} is outside (0, 1]; log the probability of the shown action"
    if code == "bad_position":
        return f"field 'position' = {value} is outside [1, {INT32_MAX}]; positions count from 1"
    if code == "ts_before_min":
        return f"field 'ts' = {_iso(value)} is before {limits.min_text}"
    if code == "ts_in_future":
        return f"field 'ts' = {_iso(value)} is after {limits.max_text}"
    if code == "id_embeds_viewer_id":
        return (
            f"field '{name}' contains the raw viewer_id; ids kept in clean data must not embed "
            "it (privacy): derive them without the viewer id"
        )
    raise AssertionError(f"no detail for check {code}")  # every check code is handled above


def _iso(value: Any) -> str:
    return us_to_iso(ts_to_us(value)) if value is not None else "null"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array"}
    kind = kinds.get(type(value), "an object" if isinstance(value, dict) else type(value).__name__)
    return f"{kind} {_show(value)}"
