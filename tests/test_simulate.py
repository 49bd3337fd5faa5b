"""The simulator: determinism, schema validity, world shape, consent mix, label timing,
corruption bookkeeping, and a ground truth that the simulator really uses.

The truth check is the strong one: a naive per-row implementation of the feature
definitions (consent ledger applied as ingest states it) recomputes every CTA
impression's context from the written events, and the simulator's own context and
click probability must agree with it exactly.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.config import SimulateConfig
from features.errors import ConfigError
from features.schema import COMMON_FIELDS, EVENT_TYPES, ts_to_us, us_to_iso
from features.simulate import SimulationSummary, _policy, simulate
from features.simulate._columns import TYPE_NAMES
from features.simulate._records import _iso
from features.simulate._run import World
from features.simulate._world import ViewerIds
from features.simulate.response import (
    CHANNEL_VOCAB,
    DEVICE_VOCAB,
    KIND_VOCAB,
    POSITION_BIAS,
    STYLE_VOCAB,
    STYLES,
    click_prob_table,
    true_claim_prob,
    true_click_prob,
    true_policy_value,
    variant_features,
)
from features.spec import HISTORY_COUNTS, SESSION_COUNTS, context_features

SMALL = SimulateConfig(
    seed=2, creators=2, drops_per_creator=8, viewers_per_drop=60, scale=1.0,
    start="2026-08-03T17:00:00Z", corrupt_fraction=0.0,
)
DIRTY = replace(SMALL, creators=1, drops_per_creator=4, corrupt_fraction=0.03)
MEDIUM = replace(SMALL, creators=3, drops_per_creator=8, viewers_per_drop=150)
S = 1_000_000
VIEWER_ID = re.compile(r"^vw-[0-9a-f]{8}$")


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Parsed records and the raw lines that are not a JSON object."""
    records, bad = [], []
    for raw in path.read_bytes().split(b"\n"):
        if not raw:
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad.append(raw)
            continue
        assert isinstance(obj, dict)
        records.append(obj)
    return records, bad


def _records(out: Path) -> list[dict[str, Any]]:
    records, bad = _read_jsonl(out / "events.jsonl")
    assert bad == []
    for r in records:
        r["ts"] = ts_to_us(r["ts"])
        if "drop_started_at" in r:
            r["drop_started_at"] = ts_to_us(r["drop_started_at"])
    return records


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("clean")
    summary = simulate(SMALL, root / "jsonl", fmt="jsonl")
    parquet_summary = simulate(SMALL, root / "parquet")
    return {
        "root": root, "summary": summary, "parquet_summary": parquet_summary,
        "records": _records(root / "jsonl"),
        "catalog": json.loads((root / "jsonl" / "catalog.json").read_text()),
    }


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dirty")
    return {
        "root": root,
        "jsonl": simulate(DIRTY, root / "jsonl", fmt="jsonl", truncate_last_line=True),
        "parquet": simulate(DIRTY, root / "parquet"),
    }


@pytest.fixture(scope="module")
def medium() -> dict[str, Any]:
    return {"truth": _truth(MEDIUM)}


# --- determinism -------------------------------------------------------------------------


def test_same_config_gives_byte_identical_files(tmp_path: Path, dirty: dict[str, Any]) -> None:
    for fmt, name in (("jsonl", "events.jsonl"), ("parquet", "events.parquet")):
        again = simulate(DIRTY, tmp_path / fmt, fmt=fmt, truncate_last_line=fmt == "jsonl")  # type: ignore[arg-type]
        assert (tmp_path / fmt / name).read_bytes() == (dirty["root"] / fmt / name).read_bytes()
        assert (tmp_path / fmt / "catalog.json").read_bytes() == (
            dirty["root"] / fmt / "catalog.json").read_bytes()
        assert again == dirty[fmt]


def test_another_seed_gives_other_data(tmp_path: Path, dirty: dict[str, Any]) -> None:
    simulate(replace(DIRTY, seed=8), tmp_path)
    other = pq.read_table(tmp_path / "events.parquet")
    base = pq.read_table(dirty["root"] / "parquet" / "events.parquet")
    assert other.num_rows != base.num_rows or not other.equals(base)
    ids = [set(t.column("viewer_id").drop_null().to_pylist()) for t in (other, base)]
    assert ids[0].isdisjoint(ids[1])  # ids are keyed by the seed


def test_a_creator_does_not_depend_on_the_others(tmp_path: Path) -> None:
    """Generators are keyed per creator and drop: adding a creator leaves cr-01 unchanged."""
    one = replace(SMALL, creators=1, drops_per_creator=3)
    simulate(one, tmp_path / "one")
    simulate(replace(one, creators=3), tmp_path / "three")
    a = pq.read_table(tmp_path / "one" / "events.parquet")
    b = pq.read_table(tmp_path / "three" / "events.parquet")
    b = b.filter(pa.compute.equal(b.column("creator_id"), "cr-01"))
    assert a.num_rows > 1000
    assert a.equals(b)


# --- records -----------------------------------------------------------------------------


def test_every_record_of_an_uncorrupted_run_is_valid(clean: dict[str, Any]) -> None:
    records = clean["records"]
    assert len(records) == clean["summary"].events == clean["summary"].records
    ids = [r["event_id"] for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        spec = EVENT_TYPES[r["type"]]
        carried = {*COMMON_FIELDS, *spec.required, *spec.optional}
        assert set(r) <= carried, r
        assert all(r.get(f) is not None for f in (*COMMON_FIELDS, *spec.required)), r
        assert VIEWER_ID.match(r["viewer_id"])
        hex_part = r["viewer_id"][3:]
        assert all(hex_part not in r[f] for f in ("event_id", "session_id"))
        if "propensity" in r:
            assert 0.0 < r["propensity"] <= 1.0
        if "position" in r:
            assert r["position"] in (1, 2, 3, 4, 5)
        if "amount" in r:
            assert r["amount"] >= 0
        if r["type"] == "join":
            assert r["device"] in ("phone", "desktop", "tv")
            assert r["channel"] in ("stream", "popup")
            assert isinstance(r["local_pickup"], bool)
        if r["type"] == "consent":
            assert r["purpose"] in ("personalization", "analytics")
            assert r["action"] in ("grant", "withdraw")
    counts = Counter(r["type"] for r in records)
    assert set(counts) == set(EVENT_TYPES)
    assert counts == clean["summary"].events_by_type


def test_parquet_schema_and_same_events_as_jsonl(clean: dict[str, Any]) -> None:
    table = pq.read_table(clean["root"] / "parquet" / "events.parquet")
    types = {f.name: f.type for f in table.schema}
    assert types["ts"] == pa.timestamp("us", tz="UTC") == types["drop_started_at"]
    assert types["position"] == pa.int32()
    assert types["local_pickup"] == pa.bool_()
    assert types["propensity"] == pa.float64() == types["amount"]
    assert all(types[f] == pa.string() for f in ("event_id", "viewer_id", "session_id", "type", "variant"))
    rows = table.to_pylist()
    assert len(rows) == len(clean["records"])
    for row, rec in zip(rows, clean["records"], strict=True):
        row = {k: v for k, v in row.items() if v is not None}
        row["ts"] = ts_to_us(row["ts"])
        if "drop_started_at" in row:
            row["drop_started_at"] = ts_to_us(row["drop_started_at"])
        assert row == rec
    assert clean["parquet_summary"].to_dict() | {"format": "jsonl", "events_file": "events.jsonl"} == (
        clean["summary"].to_dict())


def test_iso_timestamps_match_the_schema_formatter() -> None:
    values = [0, 1, 1_785_000_000_123_456, 2_100_000_000_000_001]
    column = pa.array([*values, None], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    assert _iso(column) == [*(us_to_iso(v) for v in values), None]


def test_catalog_shape(clean: dict[str, Any]) -> None:
    catalog = clean["catalog"]
    assert catalog["schema"] == 1
    assert len(catalog["creators"]) == SMALL.creators
    for c in catalog["creators"]:
        assert [v["style"] for v in c["variants"]] == list(STYLES)
        assert all(0.0 <= v["discount"] <= 0.5 and v["urgency"] in (0, 1) and v["text"] for v in c["variants"])
        kinds = Counter(b["kind"] for b in c["bonuses"])
        assert len(c["bonuses"]) == 20
        assert len(kinds) == 6
        assert all(b["requires_pickup"] == (b["kind"] == "physical_kit") for b in c["bonuses"])
        assert c["default_variant"] in {v["variant"] for v in c["variants"]}
        assert sorted(c["default_bonus_order"]) == sorted(b["bonus_id"] for b in c["bonuses"])


# --- world shape -------------------------------------------------------------------------


def _by_session(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        sessions[r["session_id"]].append(r)
    return {k: sorted(v, key=lambda r: r["ts"]) for k, v in sessions.items()}


def test_drops_last_15_to_60_minutes_on_both_channels_without_overlap(clean: dict[str, Any]) -> None:
    drops: dict[str, dict[str, Any]] = {}
    for r in clean["records"]:
        d = drops.setdefault(r["drop_id"], {"creator": r["creator_id"], "last": 0, "start": None})
        d["last"] = max(d["last"], r["ts"])
        if r["type"] == "join":
            d["start"], d["channel"] = r["drop_started_at"], r["channel"]
    assert len(drops) == SMALL.creators * SMALL.drops_per_creator
    assert {d["channel"] for d in drops.values()} == {"stream", "popup"}
    for d in drops.values():
        assert d["last"] - d["start"] <= 60 * 60 * S
    by_creator = defaultdict(list)
    for d in drops.values():
        by_creator[d["creator"]].append((d["start"], d["last"]))
    for spans in by_creator.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    world = World(SMALL)
    assert all(15 * 60 * S <= p.length_us <= 60 * 60 * S for p in world.plans)


def test_returning_share_grows_and_devices_mix(clean: dict[str, Any]) -> None:
    joins = [r for r in clean["records"] if r["type"] == "join"]
    seen: set[tuple[str, str]] = set()
    share: dict[str, list[int]] = defaultdict(list)
    for j in sorted(joins, key=lambda r: r["ts"]):
        key = (j["creator_id"], j["viewer_id"])
        share[j["drop_id"]].append(key in seen)
        seen.add(key)
    first = [np.mean(v) for k, v in share.items() if k.endswith("d0001")]
    last = [np.mean(v) for k, v in share.items() if k.endswith(f"d{SMALL.drops_per_creator:04d}")]
    assert max(first) == 0.0
    assert min(last) > 0.2
    devices = Counter(j["device"] for j in joins)
    assert 0.5 < devices["phone"] / len(joins) < 0.7
    assert devices["tv"] > 0
    pickup = defaultdict(list)
    for j in joins:
        pickup[j["channel"]].append(j["local_pickup"])
    assert np.mean(pickup["popup"]) > np.mean(pickup["stream"]) + 0.2


def test_consent_mix_withdrawals_and_grants_again(clean: dict[str, Any]) -> None:
    ledger: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    first_join: dict[str, int] = {}
    for r in clean["records"]:
        if r["type"] == "consent":
            ledger[r["viewer_id"]].append((r["ts"], r["purpose"], r["action"]))
        if r["type"] == "join":
            first_join[r["viewer_id"]] = min(r["ts"], first_join.get(r["viewer_id"], r["ts"]))
    viewers = set(first_join)
    granters = {v for v in viewers if any(p == "personalization" and a == "grant" and t == first_join[v]
                                          for t, p, a in ledger[v])}
    analytics_only = {v for v in viewers - granters if ledger[v]}
    assert 0.70 < len(granters) / len(viewers) < 0.80
    assert 0.05 < len(analytics_only) / len(viewers) < 0.15
    assert all(p == "analytics" for v in analytics_only for _, p, _ in ledger[v])
    withdrew = {v for v in granters if any(a == "withdraw" for _, _, a in ledger[v])}
    again = {v for v in withdrew
             if any(a == "grant" and t > min(t2 for t2, _, a2 in ledger[v] if a2 == "withdraw")
                    for t, _, a in ledger[v])}
    assert 0.01 < len(withdrew) / len(granters) < 0.08
    assert again, "some viewers grant personalization again after withdrawing"
    assert all(v in granters for v in withdrew)
    # Events recorded while withdrawn exist (ingest must drop them).
    recorded_withdrawn = 0
    for r in clean["records"]:
        steps = sorted((t, a) for t, p, a in ledger[r["viewer_id"]] if p == "personalization")
        i = bisect.bisect_right([t for t, _ in steps], r["ts"])
        recorded_withdrawn += i > 0 and steps[i - 1][1] == "withdraw"
    assert recorded_withdrawn > 50
    summary = clean["summary"]
    assert summary.consent["withdrew"] == len(withdrew)
    assert summary.consent["granted_again"] == len(again)
    assert summary.viewers == len(viewers)
    assert summary.consented_viewers == summary.consent["standing_granted"]


def test_cta_labels_are_unambiguous(clean: dict[str, Any]) -> None:
    prices = {c["creator_id"]: c for c in clean["catalog"]["creators"]}
    clicks = enrolls = 0
    for events in _by_session(clean["records"]).values():
        imps = [e for e in events if e["type"] == "cta_impression"]
        assert all(b["ts"] - a["ts"] >= 150 * S for a, b in itertools.pairwise(imps))
        end = events[-1]["ts"]
        if any(e["type"] == "leave" for e in events):
            assert events[-1]["type"] == "leave"
        for e in events:
            if e["type"] not in ("cta_click", "enroll"):
                continue
            before = [i for i in imps if i["ts"] < e["ts"]]
            assert before
            assert e["variant"] == before[-1]["variant"]
            lag = e["ts"] - before[-1]["ts"]
            if e["type"] == "cta_click":
                clicks += 1
                assert 5 * S <= lag <= 90 * S
            else:
                enrolls += 1
                assert lag < 120 * S
                assert any(c["type"] == "cta_click" and before[-1]["ts"] < c["ts"] < e["ts"] for c in events)
                creator = prices[e["creator_id"]]
                discount = {v["variant"]: v["discount"] for v in creator["variants"]}[e["variant"]]
                assert e["amount"] == round(creator["course_price"] * (1 - discount), 2)
                assert e["currency"] == creator["currency"]
            assert e["ts"] <= end
    assert clicks > 50
    assert enrolls > 10


def test_withdrawals_censor_no_label(clean: dict[str, Any]) -> None:
    """Ingest drops what follows a withdrawal: none may fall inside an outcome window."""
    sessions = _by_session(clean["records"])
    withdrawals = [r for r in clean["records"] if r["type"] == "consent" and r["action"] == "withdraw"]
    mid_session = 0
    for w in withdrawals:
        events = sessions[w["session_id"]]
        assert w["ts"] % 2 == 1
        assert all(e["ts"] % 2 == 0 for e in events if e is not w)
        for e in events:
            if e["type"] == "cta_impression":
                assert not e["ts"] < w["ts"] <= e["ts"] + 120 * S
            if e["type"] == "bonus_impression":
                assert not e["ts"] < w["ts"] <= e["ts"] + 90 * S
        mid_session += any(e["ts"] > w["ts"] and e["type"] != "leave" for e in events)
    assert len(withdrawals) > 10
    assert mid_session > len(withdrawals) // 2


def test_slates_claims_and_pickups(clean: dict[str, Any]) -> None:
    catalog = {b["bonus_id"]: b for c in clean["catalog"]["creators"] for b in c["bonuses"]}
    slates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    joins = {}
    for r in clean["records"]:
        if r["type"] == "bonus_impression":
            slates[r["slate_id"]].append(r)
        if r["type"] == "join":
            joins[r["session_id"]] = r
    for slots in slates.values():
        assert sorted(s["position"] for s in slots) == [1, 2, 3, 4, 5]
        assert len({s["bonus_id"] for s in slots}) == 5
        assert len({s["ts"] for s in slots}) == 1
    props = [s["propensity"] for v in slates.values() for s in v]
    assert min(props) < 0.2
    assert max(props) == 1.0
    claims = [r for r in clean["records"] if r["type"] == "bonus_claim"]
    for c in claims:
        shown = {s["bonus_id"]: s for s in slates[c["slate_id"]]}
        assert c["bonus_id"] in shown
        assert c["session_id"] == shown[c["bonus_id"]]["session_id"]
        assert 0 < c["ts"] - shown[c["bonus_id"]]["ts"] <= 60 * S
    for p in (r for r in clean["records"] if r["type"] == "pickup_select"):
        assert catalog[p["bonus_id"]]["requires_pickup"] == 1
        assert joins[p["session_id"]]["local_pickup"]
    assert len(claims) > 100


# --- ground truth ------------------------------------------------------------------------


def _reference_contexts(
    records: list[dict[str, Any]], catalog: dict[str, Any],
) -> dict[tuple[str, int], dict[str, float]]:
    """Feature definitions, row by row, on the events that survive the consent ledger."""
    ledger: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        if r["type"] == "consent" and r["purpose"] == "personalization":
            ledger[r["viewer_id"]].append((r["ts"], r["action"]))
    kept = []
    for r in records:
        steps = sorted(ledger[r["viewer_id"]])
        if not steps or steps[-1][1] != "grant":
            continue  # never granted, or a withdrawal stands
        i = bisect.bisect_right([t for t, _ in steps], r["ts"])
        if i > 0 and steps[i - 1][1] == "grant":
            kept.append(r)
    sessions = _by_session(kept)
    spans = defaultdict(list)
    for events in sessions.values():
        e0 = events[0]
        counts = Counter(e["type"] for e in events)
        spans[(e0["viewer_id"], e0["creator_id"])].append(
            (events[0]["ts"], events[-1]["ts"], counts["enroll"], counts["bonus_claim"], counts["cta_click"]))
    spec = {f.name: f for f in context_features(c["niche"] for c in catalog["creators"])}
    niche = {c["creator_id"]: c["niche"] for c in catalog["creators"]}
    out = {}
    for sid, events in sessions.items():
        begin = events[0]["ts"]
        history = [s for s in spans[(events[0]["viewer_id"], events[0]["creator_id"])] if s[1] < begin]
        for imp in (e for e in events if e["type"] == "cta_impression"):
            t = imp["ts"]
            before = [e for e in events if e["ts"] < t]
            join = next(e for e in before if e["type"] == "join")
            chats = [e["ts"] for e in before if e["type"] == "chat"]
            kinds = Counter(e["type"] for e in before)
            raw: dict[str, Any] = {
                "minute_in_drop": (t - join["drop_started_at"]) / 60e6,
                "secs_since_join": (t - join["ts"]) / 1e6,
                "secs_since_last_chat": (t - chats[-1]) / 1e6 if chats else -1.0,
                **{name: kinds[typ] for name, typ in SESSION_COUNTS.items()},
                "sess_slates": len({e["slate_id"] for e in before if e["type"] == "bonus_impression"}),
                "hist_sessions": len(history),
                "hist_enrolls": sum(h[2] for h in history),
                "hist_claims": sum(h[3] for h in history),
                "hist_cta_clicks": sum(h[4] for h in history),
                "local_pickup": float(join["local_pickup"]),
                "device": join["device"],
                "channel": join["channel"],
                "creator_niche": niche[imp["creator_id"]],
            }
            assert set(raw) == set(spec)
            assert set(HISTORY_COUNTS) <= set(raw)
            out[(sid, t)] = {k: float(np.float32(spec[k].encode(v))) for k, v in raw.items()}
            out[(sid, t)]["_variant"] = imp["variant"]  # type: ignore[assignment]
    return out


def _truth(config: SimulateConfig) -> dict[str, Any]:
    """What the simulator knew at every CTA impression, as columns."""
    world = World(config)
    parts = []
    for drop in world.drops(collect_truth=True):
        t = drop.truth
        assert t is not None
        variants = [v["variant"] for v in drop.creator.variants]
        c = drop.columns
        click = c["type"] == TYPE_NAMES.index("cta_click")
        parts.append({
            "clicks": [(drop.session_ids[i], ts, variants[v]) for i, ts, v in zip(
                c["sess"][click].tolist(), c["ts"][click].tolist(), c["variant"][click].tolist(), strict=True)],
            "session_id": [drop.session_ids[i] for i in t.session.tolist()],
            "creator_id": [drop.creator.creator_id] * t.ts.shape[0],
            "variant_id": [variants[i] for i in t.variant.tolist()],
            "ts": t.ts, "variant": t.variant, "p": t.click_prob, "propensity": t.propensity,
            "personalized": t.personalized, **{f"ctx.{k}": v for k, v in t.context.items()},
        })
    cols: dict[str, Any] = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        if isinstance(values[0], list):
            cols[key] = [item for part in values for item in part]
        else:
            cols[key] = np.concatenate(values)
    cols["world"] = world
    return cols


def _select(truth: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    idx = np.flatnonzero(mask)
    return {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in truth.items()
            if k not in ("world", "clicks")}


def test_simulator_context_is_the_feature_definition(clean: dict[str, Any]) -> None:
    """p(x, a) on features recomputed from the written events == what the simulator drew from."""
    reference = _reference_contexts(clean["records"], clean["catalog"])
    truth = _truth(SMALL)
    creators = {c.creator_id: c for c in truth["world"].creators}
    names = [k[4:] for k in truth if k.startswith("ctx.")]
    by_key = {(s, int(t)): i for i, (s, t) in enumerate(zip(truth["session_id"], truth["ts"], strict=True))}
    assert len(reference) > 1000
    assert set(reference) <= set(by_key)
    returning = 0
    for key, ref in reference.items():
        i = by_key[key]
        assert truth["personalized"][i], key
        ctx = {k: v for k, v in ref.items() if not k.startswith("_")}
        assert ctx == {k: float(truth[f"ctx.{k}"][i]) for k in names}, key
        returning += ctx["hist_sessions"] >= 1
        variant = creators[truth["creator_id"][i]].variants[truth["variant"][i]]
        assert variant["variant"] == ref["_variant"]
        arrays = {k: np.asarray([v], np.float32) for k, v in ctx.items()}
        p = true_click_prob(arrays, [variant["style"]], [variant["discount"]], [variant["urgency"]])
        assert p[0] == truth["p"][i]
    assert returning > 100
    # Viewers who withdrew and granted again are in, with history that skips withdrawn events.
    withdrew = {r["viewer_id"] for r in clean["records"] if r["type"] == "consent" and r["action"] == "withdraw"}
    viewer_of = {r["session_id"]: r["viewer_id"] for r in clean["records"]}
    assert sum(1 for sid, _ in reference if viewer_of[sid] in withdrew) >= 10
    # Impressions of viewers who never consented or withdrew for good are not in the table.
    assert len(reference) < int(truth["personalized"].sum())


def test_personalized_policy_beats_every_constant_variant(medium: dict[str, Any]) -> None:
    rows = _select(medium["truth"], medium["truth"]["personalized"])
    ctx = {k[4:]: v for k, v in rows.items() if k.startswith("ctx.")}
    table = variant_features(medium["truth"]["world"].catalog(), rows["creator_id"])
    p = click_prob_table(ctx, table)
    n, k = p.shape
    argmax = np.zeros_like(p)
    argmax[np.arange(n), p.argmax(axis=1)] = 1.0
    constants = [true_policy_value(ctx, table, np.eye(k)[np.full(n, a)]) for a in range(k)]
    best = true_policy_value(ctx, table, argmax)
    assert best >= 1.15 * max(constants)
    assert len(set(p.argmax(axis=1).tolist())) >= 4  # the best style really depends on context
    uniform = true_policy_value(ctx, table, np.full((n, k), 1.0 / k))
    assert uniform == pytest.approx(float(p.mean()), rel=1e-12)
    assert np.array_equal(p[np.arange(n), rows["variant"]], rows["p"])  # the shown variant's truth
    assert 0.05 < rows["p"].mean() < 0.10
    props = rows["propensity"]
    assert props.min() > 0.02
    assert props.max() < 0.6
    assert np.percentile(props, 90) / np.percentile(props, 10) > 2


def test_logged_clicks_follow_the_truth(medium: dict[str, Any]) -> None:
    """Click labels in the simulated events match the true probabilities of the shown variants.

    (The events are the ones the writers write: see the determinism and format tests.)
    """
    truth = medium["truth"]
    clicks = defaultdict(list)
    for sid, ts, variant in truth["clicks"]:
        clicks[sid].append((ts, variant))
    p = truth["p"]
    label = np.array([
        any(0 < t - shown_at <= 120 * S and v == variant for t, v in clicks[sid])
        for sid, shown_at, variant in zip(truth["session_id"], truth["ts"].tolist(), truth["variant_id"], strict=True)
    ], float)
    assert label.sum() == len(truth["clicks"])  # every click is a label of one impression
    edges = np.quantile(p, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    rates = []
    for lo, hi in itertools.pairwise(edges):
        sel = (p >= lo) & (p <= hi)
        se = np.sqrt(p[sel].mean() * (1 - p[sel].mean()) / sel.sum())
        assert abs(label[sel].mean() - p[sel].mean()) < 4 * se
        rates.append(label[sel].mean())
    assert rates[-1] > 2 * rates[0]


# --- corruption --------------------------------------------------------------------------


def test_corruption_counts_match_what_was_written(dirty: dict[str, Any]) -> None:
    table = pq.read_table(dirty["root"] / "parquet" / "events.parquet")
    rows = table.to_pylist()
    summary: SimulationSummary = dirty["parquet"]
    assert len(rows) == summary.records
    found = Counter()
    horizon = ts_to_us("2027-06-01T00:00:00Z")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["event_id"] is not None:
            groups[r["event_id"]].append(r)
        if r["type"] is not None and r["type"] not in EVENT_TYPES:
            found["unknown_type"] += 1
            continue
        spec = EVENT_TYPES.get(r["type"] or "", EVENT_TYPES["leave"])
        if r["type"] is None or any(r[f] is None for f in (*COMMON_FIELDS, *spec.required)):
            found["missing_field"] += 1
        elif r["amount"] is not None and r["amount"] < 0:
            found["negative_amount"] += 1
        elif r["propensity"] is not None and not 0 < r["propensity"] <= 1:
            found["bad_propensity"] += 1
        elif ts_to_us(r["ts"]) > horizon:
            found["future_ts"] += 1
    for group in groups.values():
        for extra in group[1:]:
            found["exact" if extra == group[0] else "conflicting"] += 1
    invalid = {k: v for k, v in summary.corrupted.items() if k in found or v}
    assert {k: found[k] for k in invalid} == invalid
    assert {k: found[k] for k in ("exact", "conflicting")} == dict(summary.duplicates)
    assert all(v > 0 for v in (*summary.duplicates.values(), *invalid.values()))
    assert summary.records == summary.events + sum(invalid.values()) + sum(summary.duplicates.values())


def test_jsonl_corruption_and_truncated_tail(dirty: dict[str, Any]) -> None:
    path = dirty["root"] / "jsonl" / "events.jsonl"
    data = path.read_bytes()
    assert not data.endswith(b"\n")
    records, bad = _read_jsonl(path)
    summary: SimulationSummary = dirty["jsonl"]
    non_utf8 = [b for b in bad if _not_utf8(b)]
    assert len(non_utf8) == summary.corrupted["non_utf8"] == 1
    assert len(bad) == summary.corrupted["malformed_json"] + 1 + summary.corrupted["truncated_last_line"]
    assert summary.corrupted["malformed_json"] > 0
    assert summary.corrupted["truncated_last_line"] == 1
    assert len(records) + len(bad) == summary.records
    parquet = pq.read_table(dirty["root"] / "parquet" / "events.parquet")
    assert [r["event_id"] for r in records] == parquet.column("event_id").to_pylist()
    nulled = [r for r in records if any(v is None for v in r.values())]
    assert len(nulled) == summary.corrupted["missing_field"]


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- failure paths -----------------------------------------------------------------------


@pytest.mark.parametrize(("change", "match"), [
    ({"creators": 0}, r"simulate\.creators must be in 1\.\.256, got 0"),
    ({"creators": 300}, r"simulate\.creators"),
    ({"viewers_per_drop": 0}, r"simulate\.viewers_per_drop must be >= 1"),
    ({"scale": 0.0}, r"simulate\.scale must be > 0"),
    ({"corrupt_fraction": 0.9}, r"simulate\.corrupt_fraction must be in \[0, 0\.5\]"),
    ({"start": "next tuesday"}, r"simulate\.start must be an ISO 8601 time"),
])
def test_bad_config_is_refused_before_writing(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        simulate(replace(SMALL, **change), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_format_is_a_caller_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt must be 'parquet' or 'jsonl', got 'csv'"):
        simulate(SMALL, tmp_path, fmt="csv")  # type: ignore[arg-type]


def test_a_failed_run_leaves_the_previous_output_intact(tmp_path: Path) -> None:
    tiny = replace(SMALL, creators=1, drops_per_creator=2, viewers_per_drop=20)
    simulate(tiny, tmp_path)
    before = (tmp_path / "events.parquet").read_bytes()

    def boom(phase: str, done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(replace(tiny, seed=99), tmp_path, progress=boom)
    assert (tmp_path / "events.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json", "events.parquet"]


def test_progress_reports_every_drop(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    tiny = replace(SMALL, creators=2, drops_per_creator=2, viewers_per_drop=10)
    simulate(tiny, tmp_path, progress=lambda *a: calls.append(a))
    assert calls == [("simulate", i, 4) for i in range(5)]


def test_writing_one_format_removes_the_other(tmp_path: Path) -> None:
    tiny = replace(SMALL, creators=1, drops_per_creator=1, viewers_per_drop=10)
    simulate(tiny, tmp_path, fmt="jsonl")
    simulate(tiny, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json", "events.parquet"]


# --- the response model ------------------------------------------------------------------


def _context(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "minute_in_drop": rng.uniform(0, 60, n).astype(np.float32),
        "sess_chats": rng.integers(0, 10, n).astype(np.float32),
        "sess_cta_impressions": rng.integers(0, 6, n).astype(np.float32),
        "hist_sessions": rng.integers(0, 4, n).astype(np.float32),
        "hist_enrolls": rng.integers(0, 2, n).astype(np.float32),
        "hist_claims": rng.integers(0, 3, n).astype(np.float32),
        "local_pickup": rng.integers(0, 2, n).astype(np.float32),
        "device": rng.integers(0, len(DEVICE_VOCAB), n).astype(np.float32),
        "channel": rng.integers(0, len(CHANNEL_VOCAB), n).astype(np.float32),
    }


def _table(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "variant_style": np.tile(np.arange(1, 9, dtype=np.float64), (n, 1)),
        "variant_discount": rng.choice([0.0, 0.1, 0.3, 0.5], size=(n, 8)),
        "variant_urgency": rng.integers(0, 2, size=(n, 8)).astype(np.float64),
    }


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), mix=st.floats(0.0, 1.0))
def test_policy_value_is_linear_bounded_and_exact_for_one_hot(seed: int, n: int, mix: float) -> None:
    rng = np.random.default_rng(seed)
    ctx, table = _context(n, rng), _table(n, rng)
    a, b = rng.dirichlet(np.ones(8), size=n), rng.dirichlet(np.ones(8), size=n)
    va, vb = true_policy_value(ctx, table, a), true_policy_value(ctx, table, b)
    assert 0.0 <= va <= 1.0
    assert 0.0 <= vb <= 1.0
    mixed = true_policy_value(ctx, table, mix * a + (1 - mix) * b)
    assert mixed == pytest.approx(mix * va + (1 - mix) * vb, abs=1e-12)
    pick = rng.integers(0, 8, n)
    p = true_click_prob(ctx, table["variant_style"][np.arange(n), pick],
                        table["variant_discount"][np.arange(n), pick],
                        table["variant_urgency"][np.arange(n), pick])
    assert true_policy_value(ctx, table, np.eye(8)[pick]) == pytest.approx(float(p.mean()), abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30))
def test_strings_and_codes_give_the_same_truth(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    ctx = _context(n, rng)
    named = dict(ctx, device=np.asarray(DEVICE_VOCAB)[ctx["device"].astype(int)],
                 channel=np.asarray(CHANNEL_VOCAB)[ctx["channel"].astype(int)])
    style = rng.integers(0, len(STYLE_VOCAB), n)
    args = (rng.uniform(0, 0.5, n), rng.integers(0, 2, n))
    coded = true_click_prob(ctx, style.astype(np.float32), *args)
    assert np.array_equal(coded, true_click_prob(named, np.asarray(STYLE_VOCAB)[style], *args))
    assert np.all((coded > 0) & (coded < 1))
    kind = rng.integers(0, len(KIND_VOCAB), n)
    value, rp = rng.uniform(1, 80, n), rng.integers(0, 2, n)
    rel = true_claim_prob(ctx, kind.astype(float), value, rp)
    assert np.array_equal(rel, true_claim_prob(named, np.asarray(KIND_VOCAB)[kind], value, rp))
    pos = rng.integers(1, 6, n)
    assert np.allclose(true_claim_prob(ctx, kind, value, rp, pos), rel * np.asarray(POSITION_BIAS)[pos - 1])


def test_bonus_truth_has_the_intended_heterogeneity() -> None:
    base = {k: np.zeros(2, np.float32) for k in _context(1, np.random.default_rng(0))}
    base["device"] = np.full(2, DEVICE_VOCAB.index("phone"), np.float32)
    base["channel"] = np.full(2, CHANNEL_VOCAB.index("popup"), np.float32)
    base["local_pickup"] = np.asarray([1, 0], np.float32)
    kit = true_claim_prob(base, ["physical_kit"] * 2, [30, 30], [1, 1])
    assert kit[0] > 3 * kit[1]  # kits for local-pickup viewers at pop-ups
    base["hist_sessions"] = np.asarray([1, 0], np.float32)
    qa = true_claim_prob(base, ["live_qa"] * 2, [50, 50], [0, 0])
    assert qa[0] > 2 * qa[1]  # live Q&A for returning viewers
    base["minute_in_drop"] = np.asarray([40, 2], np.float32)
    code = true_claim_prob(base, ["discount_code"] * 2, [20, 20], [0, 0])
    assert code[0] > 2 * code[1]  # discount codes late in the drop


@pytest.mark.parametrize(("bad", "match"), [
    ({"policy": np.full((3, 7), 1 / 7)}, r"policy_probs has shape \(3, 7\), the variant table \(3, 8\)"),
    ({"policy": np.full((3, 8), 0.2)}, "must be non-negative and sum to 1"),
    ({"drop": "device"}, "context lacks the feature column 'device'"),
])
def test_policy_value_refuses_bad_input(bad: dict[str, Any], match: str) -> None:
    rng = np.random.default_rng(1)
    ctx, table = _context(3, rng), _table(3, rng)
    ctx.pop(bad.get("drop", ""), None)
    with pytest.raises(ValueError, match=match):
        true_policy_value(ctx, table, bad.get("policy", np.full((3, 8), 1 / 8)))


def test_variant_features_follow_the_catalog(clean: dict[str, Any]) -> None:
    table = variant_features(clean["catalog"], ["cr-02", "cr-01"])
    assert table["variant_style"].shape == (2, 8)
    assert table["variant_style"][0].tolist() == [STYLE_VOCAB.index(s) for s in STYLES]
    assert table["variant_discount"][0].tolist() == [v["discount"] for v in clean["catalog"]["creators"][1]["variants"]]
    with pytest.raises(ValueError, match="creator 'cr-09' is not in the catalog"):
        variant_features(clean["catalog"], ["cr-09"])


# --- logging policies and ids ------------------------------------------------------------


def test_logged_propensities_are_the_sampling_probabilities() -> None:
    """OPE divides by the logged propensity: it must be the probability the choice was made with."""
    creator = World(SMALL).creators[0]
    rng = np.random.default_rng(3)
    n = 40_000
    ctx = {k: np.repeat(v[:1], n) for k, v in _context(1, rng).items()}
    ctx["creator_niche"] = np.zeros(n, np.float32)
    probs = _policy.cta_probs(creator, ctx)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert probs.min() >= _policy.UNIFORM_MIX / 8
    pick = _policy.choose(rng, probs)
    freq = np.bincount(pick, minlength=8) / n
    assert np.all(np.abs(freq - probs[0]) < 4 * np.sqrt(probs[0] * (1 - probs[0]) / n))

    scores = np.repeat(rng.normal(0, 1, size=(1, 20)), n, axis=0)
    chosen, prop = _policy.sample_slates(rng, scores)
    w = np.exp(scores[0]) / np.exp(scores[0]).sum()
    assert np.allclose(prop[:, 0], w[chosen[:, 0]])
    second = np.exp(scores[0])[chosen[:, 1]] / (np.exp(scores[0]).sum() - np.exp(scores[0])[chosen[:, 0]])
    assert np.allclose(prop[:, 1], second)
    assert all(len(set(row)) == 5 for row in chosen[:200].tolist())
    top = int(np.argmax(w))
    first = chosen[:, 0] == top
    assert abs(first.mean() - w[top]) < 4 * np.sqrt(w[top] * (1 - w[top]) / n)
    given_top = chosen[first, 1]
    j = int(np.argsort(-w)[1])
    expect = w[j] / (1 - w[top])
    assert abs((given_top == j).mean() - expect) < 4 * np.sqrt(expect * (1 - expect) / first.sum())


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**63), creator=st.integers(0, 255),
       numbers=st.sets(st.integers(0, (1 << 24) - 1), min_size=1, max_size=200))
def test_viewer_ids_are_unique_and_keyed(seed: int, creator: int, numbers: set[int]) -> None:
    ids = ViewerIds(seed)
    got = ids.ids(creator, np.asarray(sorted(numbers), np.int64))
    assert len(set(got)) == len(numbers)
    assert all(VIEWER_ID.match(v) for v in got)
    other = ids.ids((creator + 1) % 256, np.asarray(sorted(numbers), np.int64))
    assert set(got).isdisjoint(other)
