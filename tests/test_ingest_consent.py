"""The consent ledger at ingest, rule by rule (DESIGN.md, "Consent").

An event is clean only if its viewer's latest personalization action at the
snapshot is a grant, the event is not after the snapshot, and the viewer had
granted at the event's own time. Ties at one instant: withdraw wins.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_ingest_support import SEC, T0, event, grant, read_clean, run, write_jsonl

from features.config import ConsentConfig
from features.ingest import IngestReport
from features.schema import ts_to_us, us_to_iso


def ingest_records(
    tmp_path: Path, records: list[dict[str, Any]], snapshot: str = "latest"
) -> tuple[IngestReport, set[str]]:
    report = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", records)], consent=ConsentConfig(snapshot))
    assert report.records_read == report.clean + report.quarantined + report.duplicates + report.excluded_no_consent
    assert report.quarantined == 0
    return report, set(read_clean(tmp_path / "clean")["event_id"].to_list())


def at(seconds: float) -> str:
    return us_to_iso(T0 + int(seconds * SEC))


def withdraw(event_id: str, *, viewer: str = "viewer-alpha", at_s: float = 0.0) -> dict[str, Any]:
    return grant(event_id, viewer=viewer, at_s=at_s, action="withdraw")


def test_never_granted_viewer_leaves_nothing(tmp_path: Path) -> None:
    records = [event("join", "b1", viewer="viewer-bravo", session="s-b"), event("chat", "b2", viewer="viewer-bravo",
               session="s-b", at_s=1), grant("a0"), event("chat", "a1", at_s=1)]
    report, kept = ingest_records(tmp_path, records)
    assert kept == {"a0", "a1"}
    assert report.excluded_reasons["never_granted"] == 2
    assert (report.consent.consented_viewers, report.consent.excluded_viewers) == (1, 1)


def test_withdraw_without_any_grant_is_never_granted(tmp_path: Path) -> None:
    report, kept = ingest_records(tmp_path, [withdraw("w0"), event("chat", "a1", at_s=1)])
    assert kept == set()
    assert report.excluded_reasons == {"never_granted": 2, "withdrawn_at_snapshot": 0, "after_snapshot": 0,
                                       "recorded_while_withdrawn": 0}


def test_analytics_consent_does_not_grant_personalization(tmp_path: Path) -> None:
    analytics = event("consent", "c0", purpose="analytics", action="grant")
    report, kept = ingest_records(tmp_path, [analytics, event("chat", "a1", at_s=1)])
    assert kept == set()
    assert report.excluded_reasons["never_granted"] == 2


def test_standing_withdrawal_erases_every_event_of_the_viewer(tmp_path: Path) -> None:
    records = [
        grant("a0", at_s=0), event("chat", "a1", at_s=1), event("enroll", "a2", at_s=2),
        withdraw("a3", at_s=3), event("chat", "a4", at_s=4),
        grant("b0", viewer="viewer-bravo", at_s=0), event("chat", "b1", viewer="viewer-bravo", session="s-b", at_s=1),
    ]
    report, kept = ingest_records(tmp_path, records)
    assert kept == {"b0", "b1"}  # including a0..a2, recorded before the withdrawal
    assert report.excluded_reasons["withdrawn_at_snapshot"] == 5
    assert (report.consent.consented_viewers, report.consent.excluded_viewers) == (1, 1)


def test_events_recorded_while_withdrawn_are_dropped_after_a_new_grant(tmp_path: Path) -> None:
    records = [
        event("join", "a_", at_s=-1),  # before any grant
        grant("a0", at_s=0), event("chat", "a1", at_s=1),
        withdraw("a2", at_s=2), event("chat", "a3", at_s=3), event("enroll", "a4", at_s=4),
        grant("a5", at_s=5), event("chat", "a6", at_s=6),
    ]
    report, kept = ingest_records(tmp_path, records)
    assert kept == {"a0", "a1", "a5", "a6"}
    assert report.excluded_reasons["recorded_while_withdrawn"] == 4  # a_, a2 (the withdrawal itself), a3, a4


def test_snapshot_latest_is_the_newest_valid_event_never_the_clock(tmp_path: Path) -> None:
    records = [grant("a0"), event("chat", "a1", at_s=30)]
    future = event("chat", "bad", at_s=10 * 365 * 86_400)  # beyond max_ts: quarantined, moves nothing
    path = write_jsonl(tmp_path / "in.jsonl", [*records, future])
    report = run(tmp_path, [path])
    assert report.quarantine_reasons == {"ts_in_future": 1}
    assert report.consent.snapshot == at(30)


def test_explicit_snapshot_excludes_later_events(tmp_path: Path) -> None:
    records = [grant("a0", at_s=0), event("chat", "a1", at_s=10), event("chat", "a2", at_s=20)]
    report, kept = ingest_records(tmp_path, records, snapshot=at(10))
    assert kept == {"a0", "a1"}
    assert report.excluded_reasons["after_snapshot"] == 1
    assert report.consent.snapshot == at(10)


def test_grant_after_the_snapshot_does_not_count(tmp_path: Path) -> None:
    records = [event("chat", "a1", at_s=0), grant("a2", at_s=20), event("chat", "a3", at_s=21)]
    report, kept = ingest_records(tmp_path, records, snapshot=at(10))
    assert kept == set()
    assert report.excluded_reasons["never_granted"] == 3
    assert report.consent.consented_viewers == 0


def test_withdrawal_after_the_snapshot_does_not_count(tmp_path: Path) -> None:
    records = [grant("a0", at_s=0), event("chat", "a1", at_s=5), withdraw("a2", at_s=20)]
    report, kept = ingest_records(tmp_path, records, snapshot=at(10))
    assert kept == {"a0", "a1"}
    assert report.excluded_reasons["after_snapshot"] == 1


def test_grant_and_withdraw_at_the_same_instant_withdraw_wins(tmp_path: Path) -> None:
    records = [grant("a0", at_s=0), withdraw("a1", at_s=5), grant("a2", at_s=5), event("chat", "a3", at_s=6)]
    report, kept = ingest_records(tmp_path, records)
    assert kept == set()
    assert report.excluded_reasons["withdrawn_at_snapshot"] == 4


def test_event_at_the_grant_instant_counts_and_at_the_withdrawal_instant_does_not(tmp_path: Path) -> None:
    records = [
        event("join", "a0", at_s=0), grant("a1", at_s=0),
        event("chat", "a2", at_s=5), withdraw("a3", at_s=5),
        grant("a4", at_s=8), event("chat", "a5", at_s=9),
    ]
    report, kept = ingest_records(tmp_path, records)
    assert kept == {"a0", "a1", "a4", "a5"}
    assert report.excluded_reasons["recorded_while_withdrawn"] == 2


def test_events_at_the_snapshot_instant_are_included(tmp_path: Path) -> None:
    records = [grant("a0", at_s=0), event("chat", "a1", at_s=10), event("chat", "a2", at_s=10.000001)]
    _, kept = ingest_records(tmp_path, records, snapshot=at(10))
    assert kept == {"a0", "a1"}


def test_snapshot_id_follows_the_consented_viewers_and_the_time(tmp_path: Path) -> None:
    base = [grant("a0", at_s=0), event("chat", "a1", at_s=10)]
    other = [*base, grant("b0", viewer="viewer-bravo", at_s=1)]
    first, _ = ingest_records(tmp_path / "1", base, snapshot=at(20))
    again, _ = ingest_records(tmp_path / "2", base, snapshot=at(20))
    more, _ = ingest_records(tmp_path / "3", other, snapshot=at(20))
    later, _ = ingest_records(tmp_path / "4", base, snapshot=at(30))
    assert first.consent.snapshot_id == again.consent.snapshot_id
    assert len({first.consent.snapshot_id, more.consent.snapshot_id, later.consent.snapshot_id}) == 3


def _reference(records: list[dict[str, Any]], snapshot_us: int) -> tuple[set[str], dict[str, int]]:
    """DESIGN.md's consent rules, written the plain way, one event at a time."""
    def us(record: dict[str, Any]) -> int:
        return ts_to_us(record["ts"])

    ledger: dict[str, dict[int, bool]] = {}  # viewer -> instant -> granted (withdraw wins a tie)
    for r in records:
        if r["type"] == "consent" and r["purpose"] == "personalization" and us(r) <= snapshot_us:
            at = ledger.setdefault(r["viewer_id"], {})
            at[us(r)] = at.get(us(r), True) and r["action"] == "grant"

    def granted(viewer: str, t: int) -> bool:
        past = [at for at in ledger.get(viewer, {}) if at <= t]
        return bool(past) and ledger[viewer][max(past)]

    kept: set[str] = set()
    reasons = dict.fromkeys(("never_granted", "withdrawn_at_snapshot", "after_snapshot",
                             "recorded_while_withdrawn"), 0)
    for r in records:
        viewer, t = r["viewer_id"], us(r)
        if not any(ledger.get(viewer, {}).values()):
            reasons["never_granted"] += 1
        elif not granted(viewer, snapshot_us):
            reasons["withdrawn_at_snapshot"] += 1
        elif t > snapshot_us:
            reasons["after_snapshot"] += 1
        elif not granted(viewer, t):
            reasons["recorded_while_withdrawn"] += 1
        else:
            kept.add(r["event_id"])
    return kept, reasons


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    records = []
    for v in range(draw(st.integers(1, 4))):
        viewer = f"viewer-{'pqrs'[v]}"
        for i in range(draw(st.integers(1, 12))):
            kind = draw(st.sampled_from(["grant", "withdraw", "analytics", "chat", "chat"]))
            at_s = draw(st.integers(0, 20))  # few instants: many ties
            event_id = f"ev{v}-{i}"
            if kind in ("grant", "withdraw"):
                records.append(grant(event_id, viewer=viewer, at_s=at_s, action=kind, session=f"s-{v}"))
            elif kind == "analytics":
                records.append(event("consent", event_id, viewer=viewer, session=f"s-{v}", at_s=at_s,
                                     purpose="analytics", action=draw(st.sampled_from(["grant", "withdraw"]))))
            else:
                records.append(event("chat", event_id, viewer=viewer, session=f"s-{v}", at_s=at_s))
    return records


@settings(max_examples=60, deadline=None)
@given(histories(), st.none() | st.integers(-2, 22))
def test_ledger_matches_the_rules_written_plainly(records: list[dict[str, Any]], snapshot_s: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = "latest" if snapshot_s is None else at(snapshot_s)
        report, kept = ingest_records(Path(tmp), records, snapshot=snapshot)
    snapshot_us = max(ts_to_us(r["ts"]) for r in records) if snapshot_s is None else T0 + snapshot_s * SEC
    expected_kept, expected_reasons = _reference(records, snapshot_us)
    assert kept == expected_kept
    assert dict(report.excluded_reasons) == expected_reasons
