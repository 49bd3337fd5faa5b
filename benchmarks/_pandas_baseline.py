"""The naive pandas baseline of the data path: what a pandas user writes first.

Same job as ``carryon ingest`` + the CTA context features of ``carryon features``, on the
same raw Parquet file, done the straightforward way: ``read_parquet``; a boolean mask per
validation rule; ``drop_duplicates("event_id")``; the consent ledger with ``merge_asof``;
``hmac`` per distinct id; then the point-in-time CTA context features by
``groupby(session).apply`` of a Python function that walks the session's events in time
order, and viewer history by a self-merge of each viewer's sessions with the same
creator. Idiomatic pandas wherever pandas has a vectorized answer; the naive part is the
per-session walk, the approach a pandas user writes first for "counts of what happened
strictly before each impression". Correct, not fast: ``benchmarks/data_path.py``
runs it in a child process, checks its CTA table equals the pipeline's, and reports the
speed ratio.

    python benchmarks/_pandas_baseline.py RAW.parquet --catalog catalog.json --params params.yaml --out DIR

Writes DIR/clean.parquet and DIR/cta.parquet (``impression_id`` = the impression's event_id, ``session_key``,
``viewer_key``, the context features as float32); prints a JSON summary on stdout.
The pseudonymization key comes from ``CARRYON_PSEUDONYM_KEY`` (hex, as for ``carryon ingest``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.schema import (  # noqa: E402
    CHANNELS,
    COMMON_FIELDS,
    CONSENT_ACTIONS,
    CONSENT_PURPOSES,
    EVENT_TYPES,
    FIELD_KINDS,
    MAX_ID_CHARS,
    MAX_STRING_CHARS,
    ts_to_us,
)
from features.spec import HISTORY_COUNTS, SESSION_COUNTS, FeatureSpec  # noqa: E402
from pipeline.params import load_params  # noqa: E402

US = 1_000_000


# -- ingest --------------------------------------------------------------------------------


def to_us(column: pd.Series) -> pd.Series:
    """A timestamp column (Parquet timestamp or ISO strings) as UTC µs, NaN where unreadable."""
    if pd.api.types.is_datetime64_any_dtype(column):
        stamps = column if column.dt.tz is not None else column.dt.tz_localize("UTC")
    else:
        stamps = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
    stamps = stamps.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return pd.Series(
        np.where(stamps.isna(), np.nan, stamps.astype("int64").astype("float64")), index=column.index
    ).where(stamps.notna())


def validate(df: pd.DataFrame, min_us: int, max_us: int) -> pd.Series:
    """Boolean mask of valid records: one rule at a time, over the whole frame."""
    ok = df["type"].isin(list(EVENT_TYPES))
    for name in COMMON_FIELDS:
        ok &= df[name].notna()
    ok &= df["ts_us"].notna() & (df["ts_us"] >= min_us) & (df["ts_us"] <= max_us)
    for type_name, spec in EVENT_TYPES.items():
        is_type = df["type"] == type_name
        for name in spec.required:
            ok &= ~is_type | df[name].notna()
        if "drop_started_at" in spec.required:
            ok &= ~is_type | df["drop_started_at_us"].notna()
    for name, kind in FIELD_KINDS.items():
        if kind != "str" or name == "type":
            continue
        carried = df["type"].isin(carriers(name))
        text = df[name].astype("string")
        limit = MAX_ID_CHARS if name.endswith("_id") or name == "variant" else MAX_STRING_CHARS
        ok &= ~carried | text.isna() | ((text.str.len() <= limit) & (text.str.len() > 0))
    for name, allowed in (("channel", CHANNELS), ("purpose", CONSENT_PURPOSES), ("action", CONSENT_ACTIONS)):
        ok &= ~df["type"].isin(carriers(name)) | df[name].isna() | df[name].isin(list(allowed))
    ok &= df["propensity"].isna() | ((df["propensity"] > 0) & (df["propensity"] <= 1))
    ok &= df["amount"].isna() | ((df["amount"] >= 0) & np.isfinite(df["amount"]))
    ok &= df["position"].isna() | ((df["position"] >= 1) & (df["position"] < 2**31))
    # No id that reaches the clean output may carry the raw viewer id.
    for name in ("event_id", "session_id", "slate_id"):
        embeds = [isinstance(v, str) and isinstance(i, str) and v in i
                  for v, i in zip(df["viewer_id"], df[name], strict=True)]
        ok &= ~pd.Series(embeds, index=df.index, dtype=bool)
    valid: pd.Series = ok.fillna(False).astype(bool)
    return valid


def carriers(field: str) -> list[str]:
    """Event types that carry ``field``; every type for the common fields."""
    if field in COMMON_FIELDS:
        return list(EVENT_TYPES)
    return [t for t, spec in EVENT_TYPES.items() if field in spec.required + spec.optional]


def consent_filter(df: pd.DataFrame, snapshot_us: int) -> pd.DataFrame:
    """Keep consented viewers' events recorded while personalization was granted.

    The viewer's state at a time is their latest personalization action at or before
    it (a grant and a withdrawal at the same instant: the withdrawal wins); nothing yet
    means not granted. The state at the snapshot must be a grant.
    """
    consents = df[(df["type"] == "consent") & (df["purpose"] == "personalization") & (df["ts_us"] <= snapshot_us)]
    instants: Any = (  # one row per (viewer, instant): granted unless any withdrawal
        consents.assign(grant=consents["action"] == "grant")
        .groupby(["viewer_id", "ts_us"], as_index=False)["grant"].all()
    )
    ledger: pd.DataFrame = instants.sort_values(["viewer_id", "ts_us"])
    last_action = ledger.groupby("viewer_id")["grant"].last()
    granted_now = set(last_action[last_action].index)
    events = df[df["viewer_id"].isin(granted_now) & (df["ts_us"] <= snapshot_us)].sort_values("ts_us")
    with_state = pd.merge_asof(
        events, ledger.sort_values("ts_us"), on="ts_us", by="viewer_id", direction="backward",
        allow_exact_matches=True,
    )
    return with_state[with_state["grant"].fillna(False).astype(bool)].drop(columns="grant")


def pseudonymize(values: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 of each distinct id (hex, first 20 chars), mapped back onto the rows."""
    mapping = {v: hmac.new(key, str(v).encode("utf-8"), hashlib.sha256).hexdigest()[:20] for v in values.unique()}
    return values.map(mapping)


# -- features ------------------------------------------------------------------------------

COUNTED = {event_type: name for name, event_type in SESSION_COUNTS.items()}
FEATURE_COLUMNS = ["event_id", "ts_us", "session_key", "viewer_key", "creator_id", "type", "slate_id", "device",
                   "channel", "local_pickup", "drop_started_at_us"]


def session_features(events: pd.DataFrame) -> list[dict[str, Any]]:
    """Walk one session's events (in time order); one row of context features per impression."""
    counts = dict.fromkeys(SESSION_COUNTS, 0)
    join: Any = None
    last_chat: int | None = None
    slates: set[str] = set()
    rows: list[dict[str, Any]] = []
    pending: list[Any] = []  # events at the current timestamp: they count only after it
    current: int | None = None

    def apply(ev: Any) -> None:
        nonlocal join, last_chat
        if ev.type in COUNTED:
            counts[COUNTED[ev.type]] += 1
        if ev.type == "join" and join is None:
            join = ev
        elif ev.type == "chat":
            last_chat = ev.ts_us
        elif ev.type == "bonus_impression":
            slates.add(ev.slate_id)

    walk: Iterable[Any] = events.itertuples(index=False)
    for ev in walk:
        if ev.ts_us != current:
            for p in pending:
                apply(p)
            pending, current = [], ev.ts_us
        if ev.type == "cta_impression":
            t = ev.ts_us
            rows.append({
                "impression_id": ev.event_id,
                "session_key": ev.session_key,
                "viewer_key": ev.viewer_key,
                "creator_id": ev.creator_id,
                "minute_in_drop": (t - join.drop_started_at_us) / 60e6 if join is not None else None,
                "secs_since_join": (t - join.ts_us) / 1e6 if join is not None else None,
                "secs_since_last_chat": (t - last_chat) / 1e6 if last_chat is not None else None,
                **counts,
                "sess_slates": len(slates),
                "local_pickup": None if join is None or pd.isna(join.local_pickup) else float(join.local_pickup),
                "device": None if join is None else join.device,
                "channel": None if join is None else join.channel,
            })
        pending.append(ev)
    return rows


def history(clean: pd.DataFrame) -> pd.DataFrame:
    """hist_* per session: sums over the viewer's earlier, finished sessions with the same creator.

    Pairs every session with every session of the same viewer and creator (a self-merge),
    keeps the pairs that ended before this one began, and sums them.
    """
    counted = {name: t for name, t in HISTORY_COUNTS.items() if t != "session"}
    flags = clean.assign(**{name: clean["type"] == t for name, t in counted.items()})
    per = flags.groupby("session_key", as_index=False).agg(
        viewer_key=("viewer_key", "first"),
        creator_id=("creator_id", "first"),
        begin=("ts_us", "min"),
        end=("ts_us", "max"),
        **{name: (name, "sum") for name in counted},
    )
    pairs = per[["session_key", "viewer_key", "creator_id", "begin"]].merge(
        per.drop(columns="begin"), on=["viewer_key", "creator_id"], suffixes=("", "_earlier"))
    pairs = pairs[pairs["end"] < pairs["begin"]]
    sums = pairs.groupby("session_key").agg(
        hist_sessions=("session_key_earlier", "count"), **{name: (name, "sum") for name in counted})
    return per[["session_key"]].merge(sums, on="session_key", how="left").fillna(0)


def cta_table(clean: pd.DataFrame, spec: FeatureSpec, niches: dict[str, str]) -> pd.DataFrame:
    """The CTA context features of every impression, encoded by the spec (float32)."""
    events = clean[FEATURE_COLUMNS].sort_values(["session_key", "ts_us", "event_id"])
    per_session = events.groupby("session_key", sort=False)[FEATURE_COLUMNS].apply(session_features)
    table = pd.DataFrame([row for rows in per_session for row in rows])
    table = table.merge(history(clean), on="session_key", how="left")
    table["creator_niche"] = table["creator_id"].map(niches)
    out = table[["impression_id", "session_key", "viewer_key"]].copy()
    for feature in spec.context:
        out[feature.name] = np.array([feature.encode(v) for v in table[feature.name].astype(object)],
                                     dtype=np.float32)
    return out


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    key_hex = os.environ.get("CARRYON_PSEUDONYM_KEY")
    if not key_hex:
        print("_pandas_baseline: set CARRYON_PSEUDONYM_KEY (hex; data_path.py does)", file=sys.stderr)
        return 1
    key = bytes.fromhex(key_hex)
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        clock = now

    raw = pd.read_parquet(args.raw)
    for name in FIELD_KINDS:  # a file may leave out columns no record uses
        if name not in raw:
            raw[name] = None
    lap("read")
    raw["ts_us"] = to_us(raw["ts"])
    raw["drop_started_at_us"] = to_us(raw["drop_started_at"])
    min_us = ts_to_us(params.ingest.min_ts)
    max_us = (ts_to_us(params.ingest.max_ts) if params.ingest.max_ts
              else int(time.time() * US) + params.ingest.max_clock_skew_s * US)
    ok = validate(raw, min_us, max_us)
    valid = raw[ok]
    lap("validate")
    deduped = valid.drop_duplicates("event_id", keep="first")
    lap("dedupe")
    snapshot = params.consent.snapshot
    snapshot_us = int(deduped["ts_us"].max()) if snapshot == "latest" else ts_to_us(snapshot)
    consented = consent_filter(deduped, snapshot_us)
    lap("consent")
    clean = consented.copy()
    clean["viewer_key"] = pseudonymize(clean["viewer_id"], key)
    clean["session_key"] = pseudonymize(clean["session_id"], key)
    clean = clean.drop(columns=["viewer_id", "session_id"])
    clean["ts_us"] = clean["ts_us"].astype("int64")
    args.out.mkdir(parents=True, exist_ok=True)
    clean.to_parquet(args.out / "clean.parquet")
    lap("pseudonymize_write")

    catalog = json.loads(args.catalog.read_text(encoding="utf-8"))
    creators = catalog["creators"]
    niches = {c["creator_id"]: c["niche"] for c in creators}
    spec = FeatureSpec.build(
        niches.values(),
        {v["style"] for c in creators for v in c["variants"]},
        {b["kind"] for c in creators for b in c["bonuses"]},
        params.features.label_window_s,
    )
    table = cta_table(clean, spec, niches)
    table.to_parquet(args.out / "cta.parquet")
    lap("cta_features")
    print(json.dumps({
        "phases_s": phases,
        "counts": {
            "read": len(raw),
            "quarantined": int((~ok).sum()),
            "duplicates": len(valid) - len(deduped),
            "excluded_no_consent": len(deduped) - len(consented),
            "clean": len(clean),
            "cta_rows": len(table),
        },
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
