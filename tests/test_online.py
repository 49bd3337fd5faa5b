"""Online feature runtime: the definitions event by event, strictly-before semantics with
events already fed at the decision time, timestamp forms, caller errors, history
accumulation, and a property test against a direct implementation of the definitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.online import SessionFeatures, ViewerHistory
from features.schema import us_to_iso
from features.spec import HISTORY_COUNTS, SESSION_COUNTS, FeatureSpec

SPEC = FeatureSpec.build(["ceramics", "coding"], ["plain", "scarcity", "pickup"],
                         ["workbook", "physical_kit"], 120)
T0 = 1_785_776_400_000_000
SEC = 1_000_000
NAMES = SPEC.context_names


def at(seconds: float) -> int:
    return T0 + round(seconds * SEC)


def join_event(seconds: float, **fields: Any) -> dict[str, Any]:
    return {"type": "join", "ts": at(seconds), "device": "tv", "channel": "popup",
            "local_pickup": True, "drop_started_at": at(-300), **fields}


def vector(session: SessionFeatures, when: int) -> dict[str, float]:
    return dict(zip(NAMES, session.context(when).tolist(), strict=True))


def test_features_follow_the_definitions() -> None:
    history = ViewerHistory(sessions=2, enrolls=1, claims=3, cta_clicks=4)
    s = SessionFeatures(SPEC, creator_niche="coding", history=history)
    s.update(join_event(0))
    s.update({"type": "chat", "ts": at(10)})
    s.update({"type": "bonus_impression", "ts": at(20), "slate_id": "a", "bonus_id": "x"})
    s.update({"type": "bonus_impression", "ts": at(20), "slate_id": "a", "bonus_id": "y"})
    s.update({"type": "bonus_claim", "ts": at(25), "slate_id": "a", "bonus_id": "x"})
    s.update({"type": "cta_impression", "ts": at(30), "variant": "v"})
    got = vector(s, at(40))
    assert got == {
        "minute_in_drop": float(np.float32(340 / 60)), "secs_since_join": 40.0,
        "secs_since_last_chat": 30.0, "sess_chats": 1.0, "sess_reactions": 0.0,
        "sess_cta_impressions": 1.0, "sess_cta_clicks": 0.0, "sess_bonus_claims": 1.0,
        "sess_enrolls": 0.0, "sess_slates": 1.0, "hist_sessions": 2.0, "hist_enrolls": 1.0,
        "hist_claims": 3.0, "hist_cta_clicks": 4.0, "local_pickup": 1.0,
        "device": SPEC["device"].encode("tv"), "channel": SPEC["channel"].encode("popup"),
        "creator_niche": SPEC["creator_niche"].encode("coding"),
    }
    assert s.context(at(40)).dtype == np.float32


def test_events_at_the_decision_time_do_not_count_even_when_fed() -> None:
    s = SessionFeatures(SPEC)
    s.update(join_event(0))
    s.update({"type": "chat", "ts": at(5)})
    before = s.context(at(10)).copy()
    for kind in ("chat", "reaction", "cta_impression", "cta_click", "enroll", "bonus_claim"):
        s.update({"type": kind, "ts": at(10), "variant": "v", "slate_id": "s", "bonus_id": "b"})
    s.update({"type": "bonus_impression", "ts": at(10), "slate_id": "new", "bonus_id": "b"})
    s.update(join_event(10, device="phone"))  # a second join: not the session's first
    assert np.array_equal(s.context(at(10)), before)
    later = vector(s, at(10) + 1)
    one_us = float(np.float32(1e-6))
    assert (later["sess_chats"], later["sess_slates"], later["secs_since_last_chat"]) == (2.0, 1.0, one_us)
    assert later["device"] == SPEC["device"].encode("tv")


def test_join_rules_and_defaults() -> None:
    s = SessionFeatures(SPEC)
    s.update({"type": "chat", "ts": at(1)})
    s.update(join_event(5))
    defaults = {n: SPEC[n].default for n in ("minute_in_drop", "secs_since_join", "local_pickup",
                                             "device", "channel", "creator_niche")}
    got = vector(s, at(5))
    assert {n: got[n] for n in defaults} == defaults  # the join is at the decision time
    assert vector(s, at(6))["secs_since_join"] == 1.0
    odd = SessionFeatures(SPEC, creator_niche="knitting")  # not in the vocabulary
    odd.update(join_event(0, device="smartwatch", channel=None, local_pickup=None,
                          drop_started_at=None))
    got = vector(odd, at(1))
    assert (got["device"], got["channel"], got["local_pickup"], got["creator_niche"]) == (0.0,) * 4
    assert (got["minute_in_drop"], got["secs_since_join"]) == (-1.0, 1.0)


def test_ties_between_joins_break_by_event_id() -> None:
    s = SessionFeatures(SPEC)
    s.update(join_event(0, event_id="e2", device="phone"))
    s.update(join_event(0, event_id="e1", device="desktop"))
    s.update(join_event(0, event_id="e3", device="tv"))
    assert vector(s, at(1))["device"] == SPEC["device"].encode("desktop")


@pytest.mark.parametrize("form", [
    lambda us: us, us_to_iso,
    lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us),
    lambda us: us_to_iso(us).replace("Z", "+00:00"),
])
def test_timestamp_forms_agree(form: Any) -> None:
    s = SessionFeatures(SPEC)
    s.update({**join_event(0), "ts": form(at(0)), "drop_started_at": form(at(-60))})
    s.update({"type": "chat", "ts": form(at(3.5))})
    assert vector(s, form(at(7.25))) == vector(s, at(7.25))
    assert vector(s, at(7.25))["secs_since_last_chat"] == 3.75


def test_out_of_order_and_bad_events_are_refused() -> None:
    s = SessionFeatures(SPEC)
    s.update({"type": "chat", "ts": at(10)})
    with pytest.raises(ValueError, match=rf"chat at {us_to_iso(at(9))} is older than the latest "
                                         rf"event at {us_to_iso(at(10))}"):
        s.update({"type": "chat", "ts": at(9)})
    with pytest.raises(ValueError, match=rf"decision time {us_to_iso(at(9))} is before the latest"):
        s.context(at(9))
    with pytest.raises(ValueError, match="unknown event type 'dance'"):
        s.update({"type": "dance", "ts": at(11)})
    with pytest.raises(ValueError, match="event has no 'ts' field"):
        s.update({"type": "chat"})
    with pytest.raises(ValueError, match="event ts: not a timestamp"):
        s.update({"type": "chat", "ts": "yesterday"})
    with pytest.raises(ValueError, match="no UTC offset"):
        s.context("2026-09-01T18:00:00")
    assert vector(s, at(10))["sess_chats"] == 0.0  # the refused events left no trace
    assert vector(s, at(12))["sess_chats"] == 1.0


def test_matrices_tile_the_context_and_reuse_their_buffer() -> None:
    s = SessionFeatures(SPEC, creator_niche="ceramics")
    s.update(join_event(0))
    items = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    m = s.cta_matrix(at(2), items)
    assert m.shape == (8, len(NAMES) + 3) and m.dtype == np.float32
    assert all(np.array_equal(row[: len(NAMES)], s.context(at(2))) for row in m)
    assert np.array_equal(m[:, len(NAMES):], items)
    again = s.cta_matrix(at(3), items)
    assert again is m and again[0, 1] == 3.0  # the buffer is reused: copy to keep
    b = s.bonus_matrix(at(3), np.ones((5, 3), np.float32))
    assert b.shape == (5, len(NAMES) + 3)
    assert s.cta_matrix(at(3), np.empty((0, 3), np.float32)).shape == (0, len(NAMES) + 3)
    with pytest.raises(ValueError, match=r"CTA items must be a K x 3 array, got shape \(8, 2\)"):
        s.cta_matrix(at(3), np.ones((8, 2), np.float32))
    out = np.empty(len(NAMES), np.float32)
    assert s.context(at(4), out) is out


def test_spec_the_runtime_cannot_compute_is_refused() -> None:
    from dataclasses import replace

    from features.spec import Feature

    extra = replace(SPEC, context=(*SPEC.context, Feature("mood", "float32", 0.0)))
    with pytest.raises(ValueError, match="does not match the online runtime"):
        SessionFeatures(extra)
    reordered = replace(SPEC, context=tuple(reversed(SPEC.context)))
    s, plain = SessionFeatures(reordered), SessionFeatures(SPEC)
    for session in (s, plain):
        session.update(join_event(0))
        session.update({"type": "reaction", "ts": at(1)})
    assert s.context(at(2)).tolist() == plain.context(at(2)).tolist()[::-1]


def test_viewer_history_accumulates_finished_sessions() -> None:
    events = [{"type": "enroll", "ts": at(1)}, {"type": "bonus_claim", "ts": at(2)},
              {"type": "bonus_claim", "ts": at(3)}, {"type": "cta_click", "ts": at(4)},
              {"type": "chat", "ts": at(5)}]
    h = ViewerHistory().absorb(events).absorb(events[:1])
    assert h == ViewerHistory(sessions=2, enrolls=2, claims=2, cta_clicks=1)
    assert h.to_features() == dict(zip(HISTORY_COUNTS, (2.0, 2.0, 2.0, 1.0), strict=True))
    s = SessionFeatures(SPEC, history=h)
    for e in events:
        s.update(e)
    assert s.history_after(h) == h.absorb(events)
    with pytest.raises(ValueError, match="at least one event"):
        ViewerHistory().absorb([])
    with pytest.raises(ValueError, match="at least one event"):
        SessionFeatures(SPEC).history_after()
    with pytest.raises(ValueError, match=r"ViewerHistory.claims must be an integer >= 0, got -1"):
        ViewerHistory(claims=-1)


# ---- property: the runtime equals the definitions, read straight off the spec ------------

def reference(events: list[dict[str, Any]], when: int, niche: str | None,
              history: ViewerHistory) -> list[float]:
    """The context at ``when``, computed directly from the definitions (slow, obvious)."""
    before = [e for e in events if e["ts"] < when]
    joins = sorted((e for e in events if e["type"] == "join"), key=lambda e: (e["ts"], e["event_id"]))
    join = joins[0] if joins and joins[0]["ts"] < when else None
    chats = [e["ts"] for e in before if e["type"] == "chat"]
    values: dict[str, Any] = {
        "minute_in_drop": (when - join["drop_started_at"]) / 60e6 if join else None,
        "secs_since_join": (when - join["ts"]) / 1e6 if join else None,
        "secs_since_last_chat": (when - max(chats)) / 1e6 if chats else None,
        **{n: sum(e["type"] == k for e in before) for n, k in SESSION_COUNTS.items()},
        "sess_slates": len({e["slate_id"] for e in before if e["type"] == "bonus_impression"}),
        **history.to_features(),
        **{n: (join or {}).get(n) for n in ("local_pickup", "device", "channel")},
        "creator_niche": niche,
    }
    return [float(np.float32(SPEC[n].encode(values[n]))) for n in NAMES]


KINDS = ["join", "chat", "reaction", "cta_impression", "cta_click", "enroll", "bonus_impression",
         "bonus_claim", "pickup_select", "leave"]
event_st = st.tuples(st.sampled_from(KINDS), st.integers(0, 5), st.sampled_from(["s1", "s2", "s3"]),
                     st.sampled_from(["phone", "tv", "fridge", None]), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(event_st, max_size=25), st.integers(0, 6), st.sampled_from(["coding", None, "x"]),
       st.integers(0, 3))
def test_runtime_matches_the_definitions(raw: list[Any], query: int, niche: str | None,
                                         past: int) -> None:
    events, ts = [], T0
    for i, (kind, gap, slate, device, pickup) in enumerate(raw):
        ts += gap * 250_000  # gaps of 0 make ties
        events.append({"type": kind, "ts": ts, "event_id": f"e{(i * 7) % 11:02d}{i}", "slate_id": slate,
                       "device": device, "channel": "stream", "local_pickup": pickup,
                       "drop_started_at": T0 - 90 * SEC})
    history = ViewerHistory(sessions=past, enrolls=past // 2)
    when = (events[-1]["ts"] if events else T0) + (query - 3) * 250_000
    session = SessionFeatures(SPEC, creator_niche=niche, history=history)
    fed = [e for e in events if e["ts"] <= when]  # includes events at the decision time
    for e in fed:
        session.update(e)
    assert session.context(when).tolist() == reference(fed, when, niche, history)
