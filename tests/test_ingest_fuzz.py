"""Property tests: no input crashes ingest, and every record read is accounted for.

Random bytes, random JSON and mutated valid records (JSONL), and random tables
(Parquet) go through ingest; the counts must add up, blank lines must be counted
apart, and every quarantined line must be in the quarantine exactly as read.
"""

from __future__ import annotations

import base64
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_support import event, grant, lines_of, read_clean, read_quarantine, run

from features.errors import InputUnreadableError
from features.schema import EVENT_TYPES, FIELD_KINDS

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
field_names = st.sampled_from([*FIELD_KINDS, "extra", ""])
tricky_text = st.sampled_from([
    "", " ", "2026-08-03T17:00:00Z", "2026-08-03T17:00:00", "2031-01-01T00:00:00Z", "viewer-alpha", "grant",
    "withdraw", "personalization", "stream", "\\ud800", "x" * 300, "NaN", "0", "-1", "é",
])


@st.composite
def mutated_records(draw: st.DrawFn) -> str:
    record: dict[str, Any] = event(draw(st.sampled_from(list(EVENT_TYPES))), f"e{draw(st.integers(0, 30))}",
                                   at_s=draw(st.integers(-5, 5)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "json", "text", "number"]))
        name = draw(field_names)
        if action == "drop":
            record.pop(name, None)
        elif action == "json":
            record[name] = draw(json_values)
        elif action == "text":
            record[name] = draw(tricky_text)
        else:
            record[name] = draw(st.integers(-(2**70), 2**70) | st.floats())
    text = json.dumps(record)
    return text.replace('"\\\\ud800"', '"\\ud800"')  # let a raw surrogate escape through


lines = st.one_of(
    st.binary(max_size=80),
    json_values.map(json.dumps),
    mutated_records(),
    st.just(""),
    st.just(json.dumps(grant("g-extra"))),
)


def _check(data: bytes, path_name: str = "in.jsonl") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / path_name
        path.write_bytes(data)
        pieces = data.split(b"\n")
        if data.endswith(b"\n"):
            pieces.pop()
        blank = sum(1 for p in pieces if not p.strip())
        try:
            report = run(root, [path])
        except InputUnreadableError:
            assert len(pieces) == blank  # only inputs without any record are refused
            return
        assert report.records_read == len(pieces) - blank
        assert report.blank_lines == blank
        total = report.clean + report.quarantined + report.duplicates + report.excluded_no_consent
        assert total == report.records_read
        assert sum(report.quarantine_reasons.values()) == report.quarantined
        assert sum(report.excluded_reasons.values()) == report.excluded_no_consent
        assert read_clean(root / "clean").height == report.clean
        entries = read_quarantine(root / "clean-quarantine.jsonl")
        assert len(entries) == report.quarantined
        for entry in entries:
            line = pieces[entry["record"] - 1]
            kept = base64.b64decode(entry["raw_b64"]) if "raw_b64" in entry else entry["raw"].encode("utf-8")
            assert kept == line


@FUZZ
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=20), st.booleans())
def test_random_bytes_never_crash_ingest(chunks: list[bytes], newline_at_end: bool) -> None:
    data = b"\n".join(chunks) + (b"\n" if newline_at_end else b"")
    if data:
        _check(data)


@FUZZ
@given(st.lists(lines, min_size=1, max_size=25), st.booleans())
def test_random_and_mutated_records_are_all_accounted_for(records: list[str | bytes], newline_at_end: bool) -> None:
    data = lines_of([grant("g0", at_s=-10), *records])
    _check(data if newline_at_end else data.removesuffix(b"\n"))


def _column(kind: str, n: int) -> st.SearchStrategy[pl.Series]:
    text = st.lists(st.none() | tricky_text | st.text(max_size=10), min_size=n, max_size=n)
    choices = {
        "text": text.map(lambda v: pl.Series(v, dtype=pl.String)),
        "int": st.lists(st.none() | st.integers(-5, 2**40), min_size=n, max_size=n).map(
            lambda v: pl.Series(v, dtype=pl.Int64)),
        "float": st.lists(st.none() | st.floats(), min_size=n, max_size=n).map(
            lambda v: pl.Series(v, dtype=pl.Float64)),
        "bool": st.lists(st.none() | st.booleans(), min_size=n, max_size=n).map(
            lambda v: pl.Series(v, dtype=pl.Boolean)),
        "time": st.lists(st.none() | st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2032, 1, 1)),
                         min_size=n, max_size=n).map(lambda v: pl.Series(
                             [d.replace(tzinfo=UTC) if d else None for d in v], dtype=pl.Datetime("us", "UTC"))),
    }
    natural = {"str": "text", "ts": "time", "float": "float", "int": "int", "bool": "bool"}.get(kind, "text")
    return st.sampled_from([natural, natural, *choices]).flatmap(lambda k: choices[k])


@st.composite
def tables(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 12))
    base = pl.DataFrame([event(t, f"p{i}", at_s=i) for i, t in enumerate(draw(
        st.lists(st.sampled_from(list(EVENT_TYPES)), min_size=n, max_size=n)))])
    base = base.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
    columns = draw(st.lists(st.sampled_from([*FIELD_KINDS, "extra"]), unique=True, max_size=5))
    replaced = [draw(_column(FIELD_KINDS.get(c, "str"), n)).alias(c) for c in columns]
    dropped = draw(st.lists(st.sampled_from(list(FIELD_KINDS)), unique=True, max_size=2))
    return base.with_columns(replaced).drop([c for c in dropped if c in base.columns and c not in columns])


@FUZZ
@given(tables())
def test_random_parquet_tables_are_all_accounted_for(table: pl.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "in.parquet"
        table.write_parquet(path)
        report = run(root, [path])
        assert report.records_read == table.height
        total = report.clean + report.quarantined + report.duplicates + report.excluded_no_consent
        assert total == report.records_read
        entries = read_quarantine(root / "clean-quarantine.jsonl")
        assert len(entries) == report.quarantined
        for entry in entries:
            assert 1 <= entry["record"] <= table.height
            assert isinstance(entry["raw"], dict)
            assert set(entry["raw"]) == set(table.columns)
