"""Ingest validation: every bad record gets its exact reason and is kept verbatim.

Table-driven: each bad line, alone beside a valid consent grant, must be quarantined
with exactly one reason code; a file mixing all of them must keep counts that add up
and a quarantine that holds each bad line as read.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_ingest_support import (
    CONFIG,
    LATEST,
    TEST_KEY,
    event,
    grant,
    lines_of,
    read_clean,
    read_quarantine,
    run,
    write_jsonl,
)

from features.ingest import _readers, ingest


def without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


def raw_line(record: dict[str, Any], **replace: str) -> str:
    """A JSON line with some values replaced by raw JSON text (NaN, huge numbers, ...)."""
    text = json.dumps({**record, **{k: f"@@{k}@@" for k in replace}})
    for k, v in replace.items():
        text = text.replace(f'"@@{k}@@"', v)
    return text


BAD_RECORDS: list[tuple[str, dict[str, Any] | str | bytes, str]] = [
    ("malformed", '{"event_id": "x", ', "malformed_json"),
    ("not json at all", "hello world", "malformed_json"),
    ("deep nesting", "[" * 2000 + "]" * 2000, "malformed_json"),
    ("not utf-8", b'{"event_id": "\xff\xfe"}', "not_utf8"),
    ("lone surrogate escape", raw_line(event(), event_id='"e\\ud800"'), "not_utf8"),
    ("huge line", event("chat", "big", note="x" * (CONFIG.max_record_bytes + 10)), "record_too_large"),
    ("array", "[1, 2, 3]", "not_an_object"),
    ("string", '"just text"', "not_an_object"),
    ("null", "null", "not_an_object"),
    ("no event_id", without(event(), "event_id"), "missing_field:event_id"),
    ("null ts", {**event(), "ts": None}, "missing_field:ts"),
    ("no viewer_id", without(event(), "viewer_id"), "missing_field:viewer_id"),
    ("no session_id", without(event(), "session_id"), "missing_field:session_id"),
    ("no type", without(event(), "type"), "missing_field:type"),
    ("numeric event_id", event(event_id=12), "wrong_type:event_id"),  # type: ignore[arg-type]
    ("numeric ts", event(ts=1785776400), "wrong_type:ts"),
    ("object viewer_id", event(viewer_id={"id": 1}), "wrong_type:viewer_id"),
    ("unknown type", event(type="dance"), "unknown_type"),
    ("enroll without amount", without(event("enroll"), "amount"), "missing_field:amount"),
    ("impression without propensity", without(event("cta_impression"), "propensity"), "missing_field:propensity"),
    ("join without channel", without(event("join"), "channel"), "missing_field:channel"),
    ("consent without action", without(event("consent"), "action"), "missing_field:action"),
    ("string position", event("bonus_impression", position="2"), "wrong_type:position"),
    ("fractional position", event("bonus_impression", position=2.5), "wrong_type:position"),
    ("huge int position", raw_line(event("bonus_impression"), position="1" + "0" * 30), "wrong_type:position"),
    ("string local_pickup", event("join", local_pickup="yes"), "wrong_type:local_pickup"),
    ("boolean amount", event("enroll", amount=True), "wrong_type:amount"),
    ("string propensity", event("cta_impression", propensity="0.5"), "wrong_type:propensity"),
    ("unparseable ts", event(ts="yesterday"), "bad_timestamp"),
    ("ts without offset", event(ts="2026-08-03T17:00:00"), "bad_timestamp"),
    ("date only", event(ts="2026-08-03"), "bad_timestamp"),
    ("bad drop_started_at", event("join", drop_started_at="2026-08-03 17:00"), "bad_timestamp"),
    ("ts before min", event(ts="2019-12-31T23:59:59Z"), "ts_before_min"),
    ("ts in the future", event(ts="2031-01-01T00:00:00Z"), "ts_in_future"),
    ("negative amount", event("enroll", amount=-1.0), "negative_amount"),
    ("zero propensity", event("cta_impression", propensity=0), "bad_propensity"),
    ("propensity above one", event("bonus_impression", propensity=1.5), "bad_propensity"),
    ("position zero", event("bonus_impression", position=0), "bad_position"),
    ("position beyond int32", event("bonus_impression", position=2**31), "bad_position"),
    ("unknown channel", event("join", channel="tv"), "bad_value:channel"),
    ("unknown purpose", event("consent", purpose="marketing"), "bad_value:purpose"),
    ("unknown action", event("consent", action="maybe"), "bad_value:action"),
    ("NaN amount", raw_line(event("enroll"), amount="NaN"), "bad_value:amount"),
    ("infinite propensity", raw_line(event("cta_impression"), propensity="Infinity"), "bad_value:propensity"),
    ("overflowing amount", raw_line(event("enroll"), amount="1" + "0" * 400), "bad_value:amount"),
    ("empty event_id", event(event_id=""), "bad_value:event_id"),
    ("empty variant", event("cta_click", variant=""), "bad_value:variant"),
    ("long viewer_id", event(viewer="v" * 129), "string_too_long"),
    ("long device", event("join", device="d" * 257), "string_too_long"),
    ("event_id embeds viewer", event(event_id="viewer-alpha-7"), "id_embeds_viewer_id"),
    ("session_id embeds viewer", event(session="s:viewer-alpha:1"), "id_embeds_viewer_id"),
    ("slate_id embeds viewer", event("bonus_claim", slate_id="viewer-alpha/slate"), "id_embeds_viewer_id"),
]


def _line_text(record: dict[str, Any] | str | bytes) -> bytes:
    return lines_of([record]).removesuffix(b"\n")


def _assert_verbatim(entry: dict[str, Any], line: bytes) -> None:
    if "raw_b64" in entry:
        assert base64.b64decode(entry["raw_b64"]) == line
        assert "raw" not in entry
    else:
        assert entry["raw"].encode("utf-8") == line


@pytest.mark.parametrize(("record", "reason"), [(r, c) for _, r, c in BAD_RECORDS], ids=[n for n, _, _ in BAD_RECORDS])
def test_bad_record_is_quarantined_with_its_reason(
    tmp_path: Path, record: dict[str, Any] | str | bytes, reason: str
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [grant("g0", at_s=-10), record, event("chat", "ok-1")])
    report = run(tmp_path, [path])
    assert report.quarantine_reasons == {reason: 1}
    assert (report.records_read, report.clean, report.quarantined) == (3, 2, 1)
    [entry] = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert (entry["source"], entry["record"], entry["reason"]) == ("in.jsonl", 2, reason)
    field = reason.partition(":")[2]
    if field:
        assert f"'{field}'" in entry["detail"]  # the detail names the field
    _assert_verbatim(entry, _line_text(record))


def test_first_failing_check_decides_the_reason(tmp_path: Path) -> None:
    # Both a missing common field and a bad amount: the common field comes first.
    record = without(event("enroll", amount=-5.0), "drop_id")
    path = write_jsonl(tmp_path / "in.jsonl", [grant("g0"), record])
    assert run(tmp_path, [path]).quarantine_reasons == {"missing_field:drop_id": 1}


def test_truncated_last_line_is_quarantined(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [grant("g0"), event("chat", "e1")])
    with path.open("ab") as f:
        f.write(b'{"event_id": "e2", "ts": "2026-08-03T17:00:0')
    report = run(tmp_path, [path])
    assert report.quarantine_reasons == {"truncated_last_line": 1}
    [entry] = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert entry["record"] == 3
    assert entry["raw"] == '{"event_id": "e2", "ts": "2026-08-03T17:00:0'


def test_complete_last_line_without_newline_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines_of([grant("g0")]) + json.dumps(event("chat", "e1")).encode())
    report = run(tmp_path, [path])
    assert (report.clean, report.quarantined) == (2, 0)


def test_blank_lines_are_counted_not_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", ["", grant("g0"), "   ", "\r", event("chat", "e1"), ""])
    report = run(tmp_path, [path])
    assert report.blank_lines == 4
    assert report.records_read == 2
    assert report.clean == 2


def test_crlf_lines_parse_and_stay_verbatim_in_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    valid = json.dumps(event("chat", "e1")).encode()
    path.write_bytes(lines_of([grant("g0")]) + b'{"event_id": 1}\r\n' + valid + b"\r\n")
    report = run(tmp_path, [path])
    assert (report.clean, report.quarantined) == (2, 1)
    [entry] = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert entry["raw"] == '{"event_id": 1}\r'


def test_extra_fields_are_ignored_and_counted(tmp_path: Path) -> None:
    records = [
        grant("g0"),
        event("chat", "e1", mood="happy"),  # outside the schema
        event("chat", "e2", amount=3.0),  # in the schema, but not a chat's field
        event("chat", "e3", amount="not even a number"),  # ignored, so never a type error
        event("chat", "e4"),
    ]
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    assert (report.clean, report.quarantined, report.extra_fields_ignored) == (5, 0, 3)
    clean = read_clean(tmp_path / "clean")
    assert "mood" not in clean.columns
    assert clean.filter(clean["type"] == "chat")["amount"].null_count() == 4


def test_optional_fields_may_be_absent_or_null(tmp_path: Path) -> None:
    records = [
        grant("g0"),
        event("join", "e1", local_pickup=None),
        {**event("enroll", "e2", currency=None, variant=None)},
        {**event("join", "e3"), "local_pickup": None},
    ]
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    assert (report.clean, report.quarantined) == (4, 0)


def test_escaped_surrogate_pairs_are_text(tmp_path: Path) -> None:
    records: list[dict[str, Any] | str] = [grant("g0"), raw_line(event("chat"), event_id='"e-\\ud83d\\ude00"')]
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    assert (report.clean, report.quarantined) == (2, 0)
    assert "e-\U0001f600" in read_clean(tmp_path / "clean")["event_id"].to_list()


def test_timestamps_with_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    records = [grant("g0", at_s=-3600), event("chat", "e1", ts="2026-08-03T19:00:00.5+02:00")]
    run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    clean = read_clean(tmp_path / "clean")
    [ts] = clean.filter(clean["event_id"] == "e1")["ts"].to_list()
    assert ts.isoformat() == "2026-08-03T17:00:00.500000+00:00"


def test_integral_float_position_is_accepted(tmp_path: Path) -> None:
    records = [grant("g0"), event("bonus_impression", "e1", position=3.0)]
    run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    clean = read_clean(tmp_path / "clean")
    assert clean.filter(clean["event_id"] == "e1")["position"].to_list() == [3]


def test_mixed_file_counts_add_up_and_quarantine_is_verbatim(tmp_path: Path) -> None:
    valid = [grant("g0", at_s=-10), *(event("chat", f"ok-{i}", at_s=i) for i in range(5))]
    bad = [r for _, r, _ in BAD_RECORDS]
    records: list[dict[str, Any] | str | bytes] = [valid[0]]
    for i, b in enumerate(bad):  # interleave, with blank lines and an exact duplicate
        records += [b, valid[1 + i % 5]] if i % 7 else [b, "", valid[1]]
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    report = run(tmp_path, [path])

    lines = path.read_bytes().split(b"\n")[:-1]
    non_blank = [line for line in lines if line.strip()]
    assert report.records_read == len(non_blank)
    assert report.blank_lines == len(lines) - len(non_blank)
    assert report.records_read == report.clean + report.quarantined + report.duplicates + report.excluded_no_consent
    assert report.clean == len(valid)
    assert report.quarantined == len(bad)
    expected: dict[str, int] = {}
    for _, _, reason in BAD_RECORDS:
        expected[reason] = expected.get(reason, 0) + 1
    assert report.quarantine_reasons == dict(sorted(expected.items()))

    entries = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert len(entries) == report.quarantined
    assert [e["record"] for e in entries] == sorted(e["record"] for e in entries)
    for entry in entries:
        _assert_verbatim(entry, lines[entry["record"] - 1])
        assert entry["source"] == "mixed.jsonl"


def test_quarantine_is_one_ascii_line_per_record_whatever_the_text(tmp_path: Path) -> None:
    odd = "line\u2028sep\x85nel\u00e9"
    line = json.dumps(event("enroll", "e1", amount=-1.0, currency=odd), ensure_ascii=False)  # raw UTF-8
    records: list[dict[str, Any] | str | bytes] = [grant("g0"), line, b'{"x": "\xff"}']
    run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)])
    data = (tmp_path / "clean-quarantine.jsonl").read_bytes()
    assert data.isascii()
    assert data.count(b"\n") == 2
    assert odd in read_quarantine(tmp_path / "clean-quarantine.jsonl")[0]["raw"]


def test_clock_bounds_the_future_when_max_ts_is_not_set(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    soon, later = now + timedelta(seconds=60), now + timedelta(seconds=CONFIG.max_clock_skew_s + 3600)
    records = [grant("g0"), event("chat", "e1", ts=soon.isoformat()), event("chat", "e2", ts=later.isoformat())]
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)], config=replace(CONFIG, max_ts=None))
    assert report.quarantine_reasons == {"ts_in_future": 1}
    [entry] = read_quarantine(tmp_path / "clean-quarantine.jsonl")
    assert entry["record"] == 3
    assert "ingest clock" in entry["detail"]


def test_progress_reports_every_phase_in_order(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    path = write_jsonl(tmp_path / "in.jsonl", [grant("g0"), event("chat", "e1", at_s=1)])
    ingest([path], tmp_path / "clean", tmp_path / "q.jsonl", CONFIG, LATEST, key=TEST_KEY,
           progress=lambda *c: calls.append(c))
    phases = [c[0] for c in calls]
    assert list(dict.fromkeys(phases)) == ["read", "validate", "consent", "write"]
    assert calls[-1] == ("write", CONFIG.partitions, CONFIG.partitions)
    reads = [c for c in calls if c[0] == "read"]
    assert reads[-1][1] == reads[-1][2] == path.stat().st_size


def test_chunked_reading_gives_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records: list[dict[str, Any] | str | bytes] = [grant("g0", at_s=-10)]
    for i, (_, bad, _) in enumerate(BAD_RECORDS):
        records += [event("chat", f"ok-{i}", at_s=i), bad, "", event("chat", f"ok-{i}", at_s=i)]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    whole = run(tmp_path, [path], name="whole")
    monkeypatch.setattr(_readers, "CHUNK_RECORDS", 7)
    chunked = run(tmp_path, [path], name="chunked")
    assert whole.to_dict() | {"seconds": 0} == chunked.to_dict() | {"seconds": 0}
    assert chunked.records_read == chunked.clean + chunked.quarantined + chunked.duplicates
    assert chunked.clean == 1 + len(BAD_RECORDS)
    for name in ("events/part=00/data.parquet", "events/part=01/data.parquet"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "chunked" / name).read_bytes()
    assert (tmp_path / "whole-quarantine.jsonl").read_bytes() == (tmp_path / "chunked-quarantine.jsonl").read_bytes()
