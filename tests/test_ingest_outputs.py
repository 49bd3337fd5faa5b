"""What ingest writes: pseudonymous, partitioned, sorted, reproducible clean events.

No raw viewer or session id (and no key) in any clean file or the report; the clean
schema is the one the features stage reads (tests/eventgen.py); partitions hold
whole viewers; the same input gives the same bytes, and input read twice only adds
duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from eventgen import CLEAN_SCHEMA as FEATURES_EXPECT
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ingest_support import (
    CONFIG,
    LATEST,
    TEST_KEY,
    event,
    generate_raw,
    grant,
    read_clean,
    read_quarantine,
    run,
    session,
    write_jsonl,
)

from features.ingest import Pseudonymizer, PseudonymKey, ingest
from features.ingest._write import _viewer_time_order
from features.schema import ts_to_us

VIEWERS = ("viewer-QZX-0001", "viewer-QZX-0002", "viewer-QZX-0003")


def _records() -> list[dict[str, Any]]:
    out = []
    for i, viewer in enumerate(VIEWERS):
        out += session(viewer, f"session-QZX-{i}", f"ev{i}", start_s=i * 100)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _hmac20(key: PseudonymKey, raw: str) -> str:
    return hmac.new(key.key, raw.encode(), hashlib.sha256).hexdigest()[:20]


def test_no_raw_id_or_key_in_any_clean_file_or_the_report(tmp_path: Path) -> None:
    report = run(tmp_path, [write_jsonl(tmp_path / "raw" / "in.jsonl", _records())])
    assert report.clean == 33
    texts = [*VIEWERS, *(f"session-QZX-{i}" for i in range(3)), "QZX", TEST_KEY.key.hex()]
    secrets = [t.encode() for t in texts] + [TEST_KEY.key]
    outputs = {**_files(tmp_path / "clean"), "report.json": json.dumps(report.to_dict()).encode()}
    assert len(outputs) == 1 + CONFIG.partitions
    for name, data in outputs.items():
        for secret in secrets:
            assert secret not in data, f"{secret!r} found in {name}"
    clean = read_clean(tmp_path / "clean")
    for column in clean.select(pl.col(pl.String)).columns:  # decoded, in case compression hid it
        assert not clean[column].str.contains("QZX").any(), column


def test_pseudonyms_are_keyed_hashes_of_viewer_and_session_ids(tmp_path: Path) -> None:
    run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", _records())])
    clean = read_clean(tmp_path / "clean")
    assert set(clean["viewer_key"]) == {_hmac20(TEST_KEY, v) for v in VIEWERS}
    assert set(clean["session_key"]) == {_hmac20(TEST_KEY, f"session-QZX-{i}") for i in range(3)}
    assert Pseudonymizer(TEST_KEY).many(["x", "y"]) == [_hmac20(TEST_KEY, "x"), _hmac20(TEST_KEY, "y")]


def test_a_long_key_is_hashed_like_hmac_does(tmp_path: Path) -> None:
    key = PseudonymKey(bytes(range(100)), "file")
    assert Pseudonymizer(key).one("viewer-1") == _hmac20(key, "viewer-1")


def test_clean_schema_is_what_the_features_stage_reads(tmp_path: Path) -> None:
    run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", _records())])
    for path in sorted((tmp_path / "clean" / "events").glob("part=*/data.parquet")):
        assert pl.read_parquet_schema(path) == FEATURES_EXPECT
        # plain Parquet strings, no Arrow dictionary type that other readers would see
        assert "dictionary" not in str(pq.read_schema(path))


def test_every_partition_is_written_and_holds_whole_sorted_viewers(tmp_path: Path) -> None:
    raw = generate_raw(4_000, seed=11, granted=0.9)
    raw.write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"])
    paths = sorted((tmp_path / "clean" / "events").glob("part=*/data.parquet"))
    assert [p.parent.name for p in paths] == [f"part={i:02d}" for i in range(CONFIG.partitions)]
    seen: set[str] = set()
    total = 0
    for i, path in enumerate(paths):
        part = pl.read_parquet(path)
        total += part.height
        keys = set(part["viewer_key"])
        assert not keys & seen  # a viewer lives in one partition only
        seen |= keys
        assert all(int(k[:8], 16) % CONFIG.partitions == i for k in keys)
        assert part.equals(part.sort("viewer_key", "ts", "event_id"))
    assert total == report.clean


def test_ties_in_time_are_ordered_by_event_id(tmp_path: Path) -> None:
    records = [grant("g0", at_s=-1), *(event("chat", f"e{c}", at_s=5) for c in "qbzam"), event("chat", "e0", at_s=6)]
    run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    assert read_clean(tmp_path / "clean")["event_id"].to_list() == ["g0", "ea", "eb", "em", "eq", "ez", "e0"]


def test_empty_partitions_are_written_with_the_schema(tmp_path: Path) -> None:
    records = [grant("g0"), event("chat", "e1", at_s=1)]
    run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    sizes = [pl.read_parquet(p).height for p in sorted((tmp_path / "clean" / "events").glob("part=*/data.parquet"))]
    assert sorted(sizes) == [0] * (CONFIG.partitions - 1) + [2]


def test_same_input_gives_identical_files(tmp_path: Path) -> None:
    records: list[dict[str, Any] | str] = [*_records(), "not json", event("enroll", "neg", amount=-1.0)]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    first = run(tmp_path, [path], name="a")
    second = run(tmp_path, [path], name="b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert (tmp_path / "a-quarantine.jsonl").read_bytes() == (tmp_path / "b-quarantine.jsonl").read_bytes()
    again = run(tmp_path, [path], name="a")  # over its own earlier output
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert first.to_dict() | {"seconds": 0} == second.to_dict() | {"seconds": 0} == again.to_dict() | {"seconds": 0}


def test_input_read_twice_only_adds_duplicates(tmp_path: Path) -> None:
    raw = generate_raw(2_000, seed=12, granted=0.7)
    raw.write_parquet(tmp_path / "raw.parquet")
    once = run(tmp_path, [tmp_path / "raw.parquet"], name="once")
    twice = run(tmp_path, [tmp_path / "raw.parquet", tmp_path / "raw.parquet"], name="twice")
    assert _files(tmp_path / "once") == _files(tmp_path / "twice")
    assert twice.records_read == 2 * once.records_read
    assert twice.duplicates == once.records_read
    assert (twice.clean, twice.excluded_no_consent, twice.quarantined) == (
        once.clean, once.excluded_no_consent, once.quarantined)


def test_bad_records_read_twice_are_quarantined_twice(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [grant("g0"), "not json"])
    report = run(tmp_path, [path, path])
    assert (report.quarantined, report.duplicates, report.clean) == (2, 1, 1)


def test_event_id_conflict_keeps_the_first_and_quarantines_the_rest(tmp_path: Path) -> None:
    records = [
        grant("g0"), event("chat", "e1", at_s=1), event("chat", "e1", at_s=1),  # exact copy: duplicate
        event("chat", "e1", at_s=2),  # other content: conflict
        event("reaction", "e1", at_s=1),  # other content: conflict
    ]
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    assert (report.clean, report.duplicates, report.quarantine_reasons) == (2, 1, {"event_id_conflict": 2})
    entries = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert [e["record"] for e in entries] == [4, 5]
    assert "ts" in entries[0]["detail"] and "in.jsonl record 2" in entries[0]["detail"]
    assert "type" in entries[1]["detail"]
    clean = read_clean(tmp_path / "clean")
    assert clean.filter(pl.col("event_id") == "e1")["type"].to_list() == ["chat"]


def test_an_invalid_first_copy_does_not_block_a_valid_later_one(tmp_path: Path) -> None:
    records = [grant("g0"), event("enroll", "e1", amount=-1.0), event("enroll", "e1", amount=5.0)]
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    assert (report.clean, report.quarantine_reasons) == (2, {"negative_amount": 1})


def test_directory_input_reads_event_files_and_skips_the_rest(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [grant("g0")])
    write_jsonl(raw / "sub" / "b.ndjson", [event("chat", "x1", at_s=1)])
    generate_raw(50, seed=1, granted=1.0).write_parquet(raw / "c.parquet")
    (raw / "catalog.json").write_text('{"schema": 1}\n')
    (raw / "notes.txt").write_text("hello\n")
    write_jsonl(raw / ".hidden.jsonl", ["not json"])
    quarantine = raw / "quarantine.jsonl"
    write_jsonl(quarantine, ["left from an earlier run"])
    report = ingest([raw], tmp_path / "clean", quarantine, CONFIG, LATEST, key=TEST_KEY)
    assert report.inputs == ("raw/a.jsonl", "raw/c.parquet", "raw/sub/b.ndjson")
    assert report.skipped_inputs == ("raw/catalog.json", "raw/notes.txt")
    assert (report.records_read, report.quarantined) == (52, 0)
    assert quarantine.read_text() == ""  # replaced by this run's (empty) quarantine


@pytest.mark.parametrize("partitions", [1, 3, 120])
def test_partition_count_follows_the_config(tmp_path: Path, partitions: int) -> None:
    raw = generate_raw(600, seed=13, granted=1.0)
    raw.write_parquet(tmp_path / "raw.parquet")
    report = run(tmp_path, [tmp_path / "raw.parquet"], config=replace(CONFIG, partitions=partitions))
    paths = sorted((tmp_path / "clean" / "events").glob("part=*/data.parquet"))
    width = 3 if partitions > 100 else 2
    assert [p.parent.name for p in paths] == [f"part={i:0{width}d}" for i in range(partitions)]
    assert sum(pl.read_parquet(p).height for p in paths) == report.clean == raw.height


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([0, 1, 2, 2**40, 2**62, -(2**62)]), st.text("abc", max_size=3)),
        min_size=1, max_size=40, unique_by=lambda r: r[2],
    )
)
def test_partition_order_is_viewer_then_time_then_event_id(rows: list[tuple[int, int, str]]) -> None:
    # Spans of 2**62 µs force the two-sort path; small ones the packed 64-bit key.
    rank = np.array([r[0] for r in rows], dtype=np.uint32)
    at = np.array([r[1] for r in rows], dtype=np.int64)
    ids = pl.Series([r[2] for r in rows], dtype=pl.String)
    order = _viewer_time_order(rank, at, ids)
    assert [rows[i] for i in order] == sorted(rows)


def test_first_copy_wins_whatever_the_layout_of_the_records(tmp_path: Path) -> None:
    later_layout = event("chat", "e0", at_s=2)
    first = {"note": "first", **event("chat", "e1", at_s=1)}  # keys in another order than the rest
    records = [grant("g0"), later_layout, first, event("chat", "e1", at_s=5)]
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    assert report.quarantine_reasons == {"event_id_conflict": 1}
    [entry] = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert entry["record"] == 4
    clean = read_clean(tmp_path / "clean")
    [ts] = clean.filter(pl.col("event_id") == "e1")["ts"].to_list()
    assert ts.second == 1


@st.composite
def repeated_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 15))):
        kind = draw(st.sampled_from(["chat", "enroll", "cta_click"]))
        record = event(kind, f"e{draw(st.integers(0, 4))}", at_s=draw(st.integers(0, 2)))
        if kind == "enroll":
            record["amount"] = draw(st.sampled_from([1.0, 2.0]))
        if draw(st.booleans()):
            record["note"] = "ignored"  # outside the schema: never part of the content
        if draw(st.booleans()):
            record["amount" if kind != "enroll" else "variant"] = 9.0 if kind != "enroll" else None
        keys = sorted(record, reverse=draw(st.booleans()))  # two layouts, interleaved
        out.append({k: record[k] for k in keys if record[k] is not None})
    return out


@settings(max_examples=60, deadline=None)
@given(repeated_events())
def test_duplicates_and_conflicts_follow_input_order(records: list[dict[str, Any]]) -> None:
    carried = {"chat": (), "cta_click": ("variant",), "enroll": ("amount", "currency", "variant")}
    common = ("event_id", "ts", "creator_id", "drop_id", "session_id", "viewer_id", "type")

    def content(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(r.get(f) for f in (*common, *carried[r["type"]]))

    first: dict[str, tuple[Any, ...]] = {}
    duplicates, conflicts = 0, []
    for line, r in enumerate(records, 2):
        if r["event_id"] not in first:
            first[r["event_id"]] = content(r)
        elif first[r["event_id"]] == content(r):
            duplicates += 1
        else:
            conflicts.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report = run(root, [write_jsonl(root / "in.jsonl", [grant("g0", at_s=-1), *records])])
        counted = (report.duplicates, report.quarantine_reasons.get("event_id_conflict", 0))
        assert counted == (duplicates, len(conflicts))
        assert [e["record"] for e in read_quarantine(root / "clean-quarantine.jsonl")] == conflicts
        clean = read_clean(root / "clean")
        kept = {r["event_id"]: r for r in clean.iter_rows(named=True) if r["event_id"] != "g0"}
        assert set(kept) == set(first)
        for event_id, expected in first.items():
            assert ts_to_us(kept[event_id]["ts"]) == ts_to_us(expected[1])
