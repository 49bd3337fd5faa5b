"""Batch/online parity: thousands of generated sessions replayed event by event through
the online runtime reproduce every batch row exactly (float32 bit for bit).

History is not taken from the batch table (that would be circular): each viewer's
earlier sessions with the creator that ended before the replayed one began are folded
into a ViewerHistory, as a phone would. Labels are checked against a direct reading of
their definitions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from eventgen import generate_events, make_catalog, write_dataset

from features.batch import build_features
from features.config import FeatureConfig
from features.online import SessionFeatures, ViewerHistory
from features.spec import FeatureSpec

WINDOW_S = 120.0
Session = list[dict[str, Any]]


class Built:
    """A generated dataset, its batch tables, and its sessions as event lists."""

    def __init__(self, root: Path) -> None:
        events = generate_events(3500, seed=11, creators=4, window_s=WINDOW_S)
        clean, catalog = write_dataset(root, events, make_catalog(4))
        build_features(clean, catalog, root / "features", FeatureConfig(WINDOW_S))
        out = root / "features"
        self.spec = FeatureSpec.load(out / "feature_spec.json")
        self.catalog = json.loads((out / "catalog.json").read_text())
        self.cta = pl.read_parquet(out / "cta.parquet")
        self.bonus = pl.read_parquet(out / "bonus.parquet")
        rows = events.with_columns(pl.col("ts", "drop_started_at").dt.epoch("us"))
        self.sessions: dict[str, Session] = defaultdict(list)
        for row in rows.sort("ts", "event_id").iter_rows(named=True):
            self.sessions[row["session_key"]].append(row)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("parity"))


def histories(sessions: dict[str, Session]) -> dict[str, ViewerHistory]:
    """Per session: the viewer's sessions with the same creator that ended before it began."""
    span = {k: (s[0]["ts"], s[-1]["ts"]) for k, s in sessions.items()}
    mates: dict[tuple[str, str], list[str]] = defaultdict(list)
    for k, s in sessions.items():
        mates[(s[0]["viewer_key"], s[0]["creator_id"])].append(k)
    out = {}
    for k, s in sessions.items():
        history = ViewerHistory()
        for other in sorted(mates[(s[0]["viewer_key"], s[0]["creator_id"])]):
            if span[other][1] < span[k][0]:
                history = history.absorb(sessions[other])
        out[k] = history
    return out


def replay(built: Built) -> tuple[dict[str, list[np.ndarray]], dict[tuple[str, str], list[np.ndarray]]]:
    """Feed every session through the runtime; return its vectors per decision.

    CTA: for each impression, the context right after feeding it, the context once every
    event of its instant was fed, and the cta_matrix row of the shown variant. Bonus: per
    slate, the bonus_matrix over its bonuses in position order, after the whole instant.
    """
    spec = built.spec
    creators = {c["creator_id"]: c for c in built.catalog["creators"]}
    variant_items = {cid: ([v["variant"] for v in c["variants"]],
                           np.array([v["features"] for v in c["variants"]], np.float32))
                     for cid, c in creators.items()}
    bonus_items = {cid: {b["bonus_id"]: np.array(b["features"], np.float32) for b in c["bonuses"]}
                   for cid, c in creators.items()}
    hist = histories(built.sessions)
    cta: dict[str, list[np.ndarray]] = {}
    slates: dict[tuple[str, str], list[np.ndarray]] = {}
    for key, events in built.sessions.items():
        creator = events[0]["creator_id"]
        runtime = SessionFeatures(spec, creator_niche=creators[creator]["niche"], history=hist[key])
        pending: list[dict[str, Any]] = []

        def settle(pending: list[dict[str, Any]], runtime: SessionFeatures = runtime,
                   key: str = key, creator: str = creator) -> None:
            by_slate: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for e in pending:
                if e["type"] == "cta_impression":
                    cta[e["event_id"]].append(runtime.context(e["ts"]))
                else:
                    by_slate[e["slate_id"]].append(e)
            for slate_id, shown in by_slate.items():
                shown.sort(key=lambda e: e["position"])
                items = np.stack([bonus_items[creator][e["bonus_id"]] for e in shown])
                slates[(key, slate_id)] = [runtime.bonus_matrix(shown[0]["ts"], items).copy()]
            pending.clear()

        for event in events:
            if pending and event["ts"] != pending[0]["ts"]:
                settle(pending)
            runtime.update(event)
            if event["type"] == "cta_impression":
                names, items = variant_items[creator]
                row = runtime.cta_matrix(event["ts"], items)[names.index(event["variant"])]
                cta[event["event_id"]] = [runtime.context(event["ts"]), row.copy()]
            if event["type"] in ("cta_impression", "bonus_impression"):
                pending.append(event)
        settle(pending)
        assert runtime.history_after(hist[key]) == hist[key].absorb(events)
    return cta, slates


def test_online_reproduces_every_batch_row(built: Built) -> None:
    spec, cta, bonus = built.spec, built.cta, built.bonus
    online_cta, online_slates = replay(built)
    n_ctx = len(spec.context)

    assert len(built.sessions) > 2500 and cta.height > 3000 and bonus.height > 6000
    assert set(cta["impression_id"]) == set(online_cta)
    batch_cta = cta.select(spec.cta_names).to_numpy()
    for imp, row in zip(cta["impression_id"], batch_cta, strict=True):
        at_event, matrix_row, at_instant = online_cta[imp]
        assert row.dtype == np.float32
        assert np.array_equal(row[:n_ctx], at_event), imp
        assert np.array_equal(row[:n_ctx], at_instant), imp
        assert np.array_equal(row, matrix_row), imp

    grouped = bonus.sort("position").group_by("session_key", "slate_id", maintain_order=True)
    compared = 0
    for (session_key, slate_id), rows in grouped:
        (online,) = online_slates[(str(session_key), str(slate_id))]
        assert np.array_equal(rows.select(spec.bonus_names).to_numpy(), online), slate_id
        compared += rows.height
    assert compared == bonus.height and len(online_slates) == bonus["slate_id"].n_unique()


def test_generated_data_holds_the_tricky_cases(built: Built) -> None:
    sessions = built.sessions.values()
    decision = ("cta_impression", "bonus_impression")
    ties = sum(any(e["ts"] == d["ts"] and e is not d and e["type"] not in decision
                   for e in s for d in s if d["type"] in decision) for s in sessions)
    no_join = sum(all(e["type"] != "join" for e in s) for s in sessions)
    early = sum(any(e["type"] != "join" and e["ts"] < min(j["ts"] for j in s if j["type"] == "join")
                    for e in s) for s in sessions if any(e["type"] == "join" for e in s))
    assert ties > 50 and no_join > 20 and early > 50
    by_viewer: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for s in sessions:
        by_viewer[s[0]["viewer_key"]].append((s[0]["ts"], s[-1]["ts"], s[0]["creator_id"]))
    overlapping = sum(
        any(a[2] != b[2] and a[0] < b[1] and b[0] < a[1] for a in v for b in v) for v in by_viewer.values()
    )
    assert overlapping > 10
    assert built.cta.filter(pl.col("hist_sessions") > 0).height > 500


def test_labels_follow_their_definitions(built: Built) -> None:
    window = round(WINDOW_S * 1_000_000)
    expected_cta, expected_bonus = {}, {}
    for events in built.sessions.values():
        for e in events:
            t = e["ts"]
            later = [x for x in events if t < x["ts"] <= t + window]
            if e["type"] == "cta_impression":
                clicked = any(x["type"] == "cta_click" and x["variant"] == e["variant"] for x in later)
                enrolled = any(x["type"] == "enroll" for x in later)
                expected_cta[e["event_id"]] = (clicked, enrolled, int(clicked or enrolled))
            elif e["type"] == "bonus_impression":
                claims = [x["ts"] for x in events if x["type"] == "bonus_claim" and x["ts"] >= t
                          and (x["slate_id"], x["bonus_id"]) == (e["slate_id"], e["bonus_id"])]
                picked = bool(claims) and any(
                    x["type"] == "pickup_select" and x["bonus_id"] == e["bonus_id"]
                    and x["ts"] >= min(claims) for x in events)
                key = (e["session_key"], e["slate_id"], e["bonus_id"])
                expected_bonus[key] = (bool(claims), picked, int(bool(claims)) + int(picked))
    got_cta = {r[0]: tuple(r[1:]) for r in built.cta.select(
        "impression_id", "clicked", "enrolled", "label").iter_rows()}
    got_bonus = {tuple(r[:3]): tuple(r[3:]) for r in built.bonus.select(
        "session_key", "slate_id", "bonus_id", "claimed", "picked_up", "relevance").iter_rows()}
    assert got_cta == expected_cta
    assert got_bonus == expected_bonus
    assert 0 < sum(v[2] for v in got_cta.values()) < len(got_cta)
    assert {v[2] for v in got_bonus.values()} == {0, 1, 2}
