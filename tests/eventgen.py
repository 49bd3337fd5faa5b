"""Synthetic *clean* events (the output of ingest) and a catalog, for feature tests and
benchmarks.

Vectorized with numpy and polars, so it makes 10M events in seconds. The sessions are
random but shaped like live drops, with the cases that break point-in-time code:
several events at the same timestamp as an impression (and a second impression at the
same instant), sessions without a join, events before the join, viewers with several
sessions with one creator, and one viewer in two overlapping drops of different
creators. ``rows_to_events`` builds hand-written sessions for targeted tests.

    >>> events = generate_events(2_000, seed=1)
    >>> clean_dir, catalog_path = write_dataset(tmp_path, events, make_catalog(4))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.clean_events import CLEAN_SCHEMA, UTC_US
from features.spec import BONUS_KINDS, CTA_STYLES

STYLES = CTA_STYLES
KINDS = BONUS_KINDS
NICHES = ("ceramics", "baking", "woodwork", "guitar", "watercolor", "coding")
N_VARIANTS = 8
N_BONUSES = 20
SLATE_SIZE = 3
T0_US = 1_785_776_400_000_000  # 2026-08-03T17:00:00Z
SEC = 1_000_000
MIN = 60 * SEC
DAY = 86_400 * SEC


def key_of(prefix: str, number: int) -> str:
    """A 20-hex-char pseudonymous key, like ingest's keyed hash."""
    return hashlib.sha256(f"{prefix}{number}".encode()).hexdigest()[:20]


def make_catalog(creators: int, seed: int = 7) -> dict[str, Any]:
    """A catalog of ``creators`` creators, 8 variants and 20 bonuses each."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(creators):
        cid = f"c{c:02d}"
        variants = [
            {"variant": f"{cid}-v{k}", "style": STYLES[k % len(STYLES)],
             "discount": round(float(rng.choice([0.0, 0.1, 0.15, 0.2, 0.35, 0.5])), 2),
             "urgency": int(rng.integers(0, 2)), "text": f"offer {k}"}
            for k in range(N_VARIANTS)
        ]
        bonuses = [
            {"bonus_id": f"{cid}-b{k:02d}", "kind": KINDS[k % len(KINDS)],
             "value": round(float(rng.uniform(3, 60)), 2),
             "requires_pickup": int(KINDS[k % len(KINDS)] == "physical_kit"), "title": f"bonus {k}"}
            for k in range(N_BONUSES)
        ]
        out.append({
            "creator_id": cid, "name": f"Creator {c}", "niche": NICHES[c % len(NICHES)],
            "currency": "EUR", "course_price": 149.0, "variants": variants, "bonuses": bonuses,
            "default_variant": variants[0]["variant"],
            "default_bonus_order": [b["bonus_id"] for b in bonuses],
        })
    return {"schema": 1, "creators": out}


# Event type codes used while generating.
_JOIN, _LEAVE, _CHAT, _REACTION, _CTA, _CLICK, _ENROLL, _BONUS, _CLAIM, _PICKUP, _CONSENT = range(11)
_TYPE_NAMES = ("join", "leave", "chat", "reaction", "cta_impression", "cta_click", "enroll",
               "bonus_impression", "bonus_claim", "pickup_select", "consent")


def generate_events(
    sessions: int, *, seed: int = 0, creators: int = 4, window_s: float = 120.0,
    events_per_session: float = 8.0,
) -> pl.DataFrame:
    """About ``sessions`` random sessions of clean events (columns of CLEAN_SCHEMA).

    ``window_s`` is the label window: some clicks land exactly on its edge and
    1 µs past it. Each session has ~``events_per_session`` base events plus the
    clicks, enrolls, slates' rows, claims and pickups they cause.
    """
    rng = np.random.default_rng(seed)
    drops_per_creator = max(2, sessions // (creators * 60))
    n_drops = creators * drops_per_creator
    drop_creator = np.repeat(np.arange(creators), drops_per_creator)
    drop_index = np.tile(np.arange(drops_per_creator), creators)
    # A creator's drops never overlap; different creators' drops on one day do.
    drop_start = (T0_US + drop_index * DAY + drop_creator * 20 * MIN
                  + rng.integers(0, 10 * MIN, n_drops))
    drop_len = rng.integers(15 * MIN, 60 * MIN, n_drops)
    drop_popup = rng.random(n_drops) < 0.3

    # Viewers: a heavy tail of regulars, so many have several sessions with a creator.
    n_viewers = max(2, sessions // 3)
    viewer = np.minimum((rng.pareto(1.2, sessions) * n_viewers / 8).astype(np.int64), n_viewers - 1)
    drop = rng.integers(0, n_drops, sessions)
    _, first = np.unique(viewer * n_drops + drop, return_index=True)  # one session per (viewer, drop)
    first.sort()
    viewer, drop = viewer[first], drop[first]
    n_sess = len(viewer)

    s_start = drop_start[drop] + (rng.random(n_sess) * 0.7 * drop_len[drop]).astype(np.int64)
    s_len = np.maximum(MIN, (rng.random(n_sess) * (drop_start[drop] + drop_len[drop] - s_start)))
    s_len = s_len.astype(np.int64)
    has_join = rng.random(n_sess) > 0.05
    # 10% of sessions have events before their join.
    join_at = s_start + np.where(rng.random(n_sess) < 0.1, (rng.random(n_sess) * s_len * 0.3), 0)
    join_at = join_at.astype(np.int64)

    parts: list[dict[str, np.ndarray]] = []

    def add(sess: np.ndarray, ts: np.ndarray, code: int, **cols: np.ndarray) -> None:
        parts.append({"sess": sess, "ts": ts.astype(np.int64),
                      "code": np.full(len(sess), code, np.int8), **cols})

    idx = np.arange(n_sess)
    add(idx[has_join], join_at[has_join], _JOIN)
    # A few sessions join twice (a reconnect): the first join is the session's join.
    rejoin = idx[has_join & (rng.random(n_sess) < 0.03)]
    add(rejoin, join_at[rejoin] + (rng.random(len(rejoin)) * s_len[rejoin]).astype(np.int64), _JOIN)
    leaves = idx[rng.random(n_sess) < 0.8]
    add(leaves, s_start[leaves] + s_len[leaves], _LEAVE)
    consents = idx[rng.random(n_sess) < 0.2]
    add(consents, s_start[consents], _CONSENT)

    # Base events, on a 100 ms grid so that equal timestamps are common.
    rate = rng.gamma(2.0, events_per_session / 2.0, n_sess)
    counts = rng.poisson(rate)
    b_sess = np.repeat(idx, counts)
    b_ts = s_start[b_sess] + (rng.random(len(b_sess)) * s_len[b_sess]).astype(np.int64)
    b_ts = b_ts // 100_000 * 100_000
    kind = rng.choice(4, len(b_sess), p=[0.45, 0.25, 0.18, 0.12])
    for code, k in ((_CHAT, 0), (_REACTION, 1)):
        add(b_sess[kind == k], b_ts[kind == k], code)

    # CTA impressions, their clicks (same variant, sometimes another; some exactly on
    # the window edge or 1 µs past it) and enrolls.
    window = round(window_s * SEC)
    c_sess, c_ts = b_sess[kind == 2], b_ts[kind == 2]
    # Ties: a second impression and a chat at the very same instant.
    twin = rng.random(len(c_sess)) < 0.05
    c_sess, c_ts = np.concatenate([c_sess, c_sess[twin]]), np.concatenate([c_ts, c_ts[twin]])
    tie = rng.random(len(c_sess)) < 0.15
    add(c_sess[tie], c_ts[tie], _CHAT)
    c_var = rng.integers(0, N_VARIANTS, len(c_sess))
    add(c_sess, c_ts, _CTA, var=c_var, prop=rng.choice([0.125, 0.3, 0.05, 0.7], len(c_sess)))
    clicked = rng.random(len(c_sess)) < 0.3
    delay = (rng.random(len(c_sess)) * 1.3 * window).astype(np.int64)
    edge = rng.random(len(c_sess))
    delay = np.where(edge < 0.05, window, np.where(edge < 0.1, window + 1, delay))
    delay = np.where(edge > 0.97, 0, delay)  # a click at the impression's own instant
    other = rng.random(len(c_sess)) < 0.1
    k_var = np.where(other, (c_var + 1) % N_VARIANTS, c_var)
    k_ts = c_ts + delay
    add(c_sess[clicked], k_ts[clicked], _CLICK, var=k_var[clicked])
    enrolled = clicked & (rng.random(len(c_sess)) < 0.3)
    e_ts = k_ts + (rng.random(len(c_sess)) * 0.5 * window).astype(np.int64)
    add(c_sess[enrolled], e_ts[enrolled], _ENROLL, var=k_var[enrolled],
        amount=np.full(int(enrolled.sum()), 149.0))

    # Bonus slates: SLATE_SIZE distinct bonuses at one instant, then claims and pickups.
    s_sess, s_ts = b_sess[kind == 3], b_ts[kind == 3]
    n_slates = len(s_sess)
    slate_no = np.arange(n_slates)
    picks = np.argsort(rng.random((n_slates, N_BONUSES)), axis=1)[:, :SLATE_SIZE]
    for pos in range(SLATE_SIZE):
        add(s_sess, s_ts, _BONUS, bonus=picks[:, pos], slate=slate_no,
            position=np.full(n_slates, pos + 1), prop=rng.uniform(0.05, 1.0, n_slates))
    claim = rng.random(n_slates) < 0.35
    claim_pos = rng.integers(0, SLATE_SIZE, n_slates)
    claim_bonus = picks[slate_no, claim_pos]
    claim_ts = s_ts + (rng.random(n_slates) * 60 * SEC).astype(np.int64)
    add(s_sess[claim], claim_ts[claim], _CLAIM, bonus=claim_bonus[claim], slate=slate_no[claim])
    pickup = claim & (rng.random(n_slates) < 0.5)
    p_ts = claim_ts + (rng.random(n_slates) * 30 * SEC).astype(np.int64)
    add(s_sess[pickup], p_ts[pickup], _PICKUP, bonus=claim_bonus[pickup])
    early = ~claim & (rng.random(n_slates) < 0.05)  # a pickup with no claim: relevance 0
    add(s_sess[early], s_ts[early] + SEC, _PICKUP, bonus=picks[early, 0])

    return _assemble(parts, rng, viewer=viewer, drop=drop, drop_creator=drop_creator,
                     drop_start=drop_start, drop_popup=drop_popup)


def null_if(cond: pl.Expr, expr: pl.Expr) -> pl.Expr:
    return pl.when(cond).then(expr)


def _cat(parts: list[dict[str, np.ndarray]], name: str, fill: float) -> np.ndarray:
    return np.concatenate([p.get(name, np.full(len(p["sess"]), fill)) for p in parts])


def _assemble(
    parts: list[dict[str, np.ndarray]], rng: np.random.Generator, *, viewer: np.ndarray,
    drop: np.ndarray, drop_creator: np.ndarray, drop_start: np.ndarray, drop_popup: np.ndarray,
) -> pl.DataFrame:
    sess = np.concatenate([p["sess"] for p in parts])
    code = np.concatenate([p["code"] for p in parts])
    n = len(sess)
    n_sess = len(viewer)
    s_device = rng.choice(4, n_sess, p=[0.6, 0.25, 0.13, 0.02])  # 3 = an unknown device
    s_pickup = rng.choice(3, n_sess, p=[0.6, 0.3, 0.1])  # 2 = not stated
    session_keys = pl.Series([key_of("s", i) for i in range(n_sess)])
    uniq_viewers, viewer_idx = np.unique(viewer, return_inverse=True)
    viewer_keys = pl.Series([key_of("v", int(v)) for v in uniq_viewers])
    frame = pl.DataFrame({
        "sess": sess,
        "ts": np.concatenate([p["ts"] for p in parts]),
        "code": code,
        "var": _cat(parts, "var", -1).astype(np.int64),
        "bonus": _cat(parts, "bonus", -1).astype(np.int64),
        "slate": _cat(parts, "slate", -1).astype(np.int64),
        "position": _cat(parts, "position", -1).astype(np.int64),
        "prop": _cat(parts, "prop", np.nan),
        "amount": _cat(parts, "amount", np.nan),
        "order": rng.permutation(n),  # event ids in random order: ties break arbitrarily
    })
    creator = drop_creator[drop]
    sessions = pl.DataFrame({
        "sess": np.arange(n_sess),
        "session_key": session_keys,
        "viewer_key": viewer_keys.gather(viewer_idx),
        "creator_n": creator,
        "drop_n": drop,
        "device_n": s_device,
        "pickup_n": s_pickup,
        "channel_popup": drop_popup[drop],
        "drop_started_us": drop_start[drop],
    })
    creator_id = pl.format("c{}", pl.col("creator_n").cast(pl.String).str.zfill(2))
    ev = frame.join(sessions, on="sess", how="left").with_columns(
        type=pl.col("code").replace_strict(dict(enumerate(_TYPE_NAMES)), return_dtype=pl.String),
        creator_id=creator_id,
    )
    join = pl.col("type") == "join"
    ev = ev.select(
        event_id=pl.format("ev{}", pl.col("order").cast(pl.String).str.zfill(10)),
        ts=pl.col("ts").cast(UTC_US),
        creator_id=pl.col("creator_id"),
        drop_id=pl.format("{}-d{}", pl.col("creator_id"), pl.col("drop_n")),
        session_key=pl.col("session_key"),
        viewer_key=pl.col("viewer_key"),
        type=pl.col("type"),
        variant=null_if(pl.col("var") >= 0,
                        pl.format("{}-v{}", pl.col("creator_id"), pl.col("var"))),
        propensity=pl.col("prop").fill_nan(None),
        bonus_id=null_if(pl.col("bonus") >= 0, pl.format(
            "{}-b{}", pl.col("creator_id"), pl.col("bonus").cast(pl.String).str.zfill(2))),
        slate_id=null_if(pl.col("slate") >= 0, pl.format("sl{}", pl.col("slate"))),
        position=null_if(pl.col("position") >= 0, pl.col("position")).cast(pl.Int32),
        amount=pl.col("amount").fill_nan(None),
        currency=null_if(pl.col("type") == "enroll", pl.lit("EUR")),
        device=null_if(join, pl.col("device_n").replace_strict(
            {0: "phone", 1: "desktop", 2: "tv", 3: "smartwatch"}, return_dtype=pl.String)),
        channel=null_if(join, pl.when(pl.col("channel_popup")).then(pl.lit("popup"))
                        .otherwise(pl.lit("stream"))),
        local_pickup=null_if(join & (pl.col("pickup_n") < 2), pl.col("pickup_n") == 1),
        drop_started_at=null_if(join, pl.col("drop_started_us")).cast(UTC_US),
        purpose=null_if(pl.col("type") == "consent", pl.lit("personalization")),
        action=null_if(pl.col("type") == "consent", pl.lit("grant")),
    )
    return ev.sort("viewer_key", "ts", "event_id")


def rows_to_events(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Clean events from hand-written rows (``ts`` and ``drop_started_at`` as int µs).

    Missing columns are null; ``event_id`` defaults to the row's position.
    """
    records = []
    for i, row in enumerate(rows):
        rec: dict[str, Any] = {name: None for name in CLEAN_SCHEMA}
        rec["event_id"] = f"h{i:06d}"
        rec.update(row)
        records.append(rec)
    frame = pl.DataFrame(records, schema={
        **CLEAN_SCHEMA, "ts": pl.Int64(), "drop_started_at": pl.Int64()})
    return frame.with_columns(pl.col("ts", "drop_started_at").cast(UTC_US)).sort(
        "viewer_key", "ts", "event_id")


def partition_of(viewer_keys: pl.Series, partitions: int) -> pl.Series:
    """The partition of each viewer (a hash of the key, like ingest's)."""
    return (viewer_keys.hash(seed=7) % partitions).cast(pl.Int64)


def write_clean(events: pl.DataFrame, clean_dir: Path, partitions: int = 4) -> None:
    """Write events as ``clean_dir/events/part=NN/data.parquet``, whole viewers per part."""
    part = partition_of(events["viewer_key"], partitions)
    for p in range(partitions):
        chunk = events.filter(part == p).sort("viewer_key", "ts", "event_id")
        if chunk.height == 0:
            continue
        out = clean_dir / "events" / f"part={p:02d}" / "data.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        chunk.write_parquet(out)


def write_dataset(
    root: Path, events: pl.DataFrame, catalog: Mapping[str, Any], partitions: int = 4,
) -> tuple[Path, Path]:
    """Write clean events and the catalog under ``root``; return (clean_dir, catalog_path)."""
    clean_dir = root / "clean"
    write_clean(events, clean_dir, partitions)
    catalog_path = root / "catalog.json"
    catalog_path.write_text(json.dumps(catalog, indent=2), encoding="utf-8")
    return clean_dir, catalog_path
