"""The bandit import's quarantine, in ingest's conventions (raw zone; may hold raw keys).

One JSON object per line, in record order: ``{"source": <file name>, "record": <CSV line
number or Parquet row number>, "reason": <code>, "detail": <text naming the column>,
"raw": <the row as read: column -> value; for a malformed CSV row, its list of
fields>}``. Empty CSV fields appear as null; non-finite numbers as text ("nan", "inf").
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from features.bandit._source import REC, RawTable
from features.bandit._validate import CHECK, STATE, Check, detail, reason


@dataclass(frozen=True)
class Entry:
    record: int
    reason: str
    detail: str
    raw: Any


def collect(table: RawTable, judged: pl.DataFrame, rules: list[Check], consent_column: str | None) -> list[Entry]:
    """Every quarantined row (and malformed CSV row) with its reason, detail and raw form."""
    bad = judged.filter(pl.col(STATE) == "quarantined")
    records = bad.get_column(REC).to_list()
    originals = table.frame.filter(pl.col(REC).is_in(records))
    by_record = {row.pop(REC): row for row in originals.iter_rows(named=True)}
    out = [Entry(m.record, "malformed_row",
                 detail("malformed_row", "", None, f"row has {len(m.fields)} fields, the header has "
                                                   f"{table.header_width}; quote fields that hold commas"),
                 list(m.fields))
           for m in table.malformed]
    for row in bad.iter_rows(named=True):
        code, column = reason(rules, row[CHECK], consent_column)
        original = by_record[row[REC]]
        out.append(Entry(row[REC], code, detail(code, column, row.get(column), original.get(column)),
                         {k: _jsonable(v) for k, v in original.items()}))
    return sorted(out, key=lambda e: e.record)


def write(path: Path, source: str, entries: list[Entry]) -> None:
    """Write the quarantine JSONL to ``path`` (the caller makes it atomic)."""
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for e in entries:
            item = {"source": source, "record": e.record, "reason": e.reason, "detail": e.detail, "raw": e.raw}
            f.write(json.dumps(item, ensure_ascii=False, allow_nan=False) + "\n")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | pl.Series):
        return [_jsonable(v) for v in value]
    return str(value)
