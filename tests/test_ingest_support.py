"""Raw-event builders for the ingest tests, and checks that they make valid input.

``event`` builds one schema-v1 record by hand; ``session`` a consented viewer's drop;
``generate_raw`` a large random table (vectorized) for throughput and fuzz seeds.
The other ``test_ingest*`` modules import from here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.config import ConsentConfig, IngestConfig
from features.ingest import IngestReport, PseudonymKey, ingest
from features.schema import EVENT_TYPES, us_to_iso

T0 = 1_785_776_400_000_000  # 2026-08-03T17:00:00Z in µs
SEC = 1_000_000
TEST_KEY = PseudonymKey(hashlib.sha256(b"carryon ingest tests").digest(), "env")
CONFIG = IngestConfig(
    partitions=4,
    pseudonym_key_file=None,
    min_ts="2020-01-01T00:00:00Z",
    max_ts="2030-01-01T00:00:00Z",
    max_clock_skew_s=300,
    max_record_bytes=4096,
)
LATEST = ConsentConfig(snapshot="latest")

# Type-specific fields of a valid record of each type.
TYPE_VALUES: dict[str, dict[str, Any]] = {
    "join": {"device": "phone", "channel": "stream", "drop_started_at": "2026-08-03T17:00:00Z",
             "local_pickup": True},
    "leave": {},
    "chat": {},
    "reaction": {},
    "cta_impression": {"variant": "c1-v1", "propensity": 0.25},
    "cta_click": {"variant": "c1-v1"},
    "enroll": {"amount": 149.0, "currency": "EUR", "variant": "c1-v1"},
    "bonus_impression": {"bonus_id": "c1-b3", "slate_id": "slate-9", "position": 2, "propensity": 0.5},
    "bonus_claim": {"bonus_id": "c1-b3", "slate_id": "slate-9"},
    "pickup_select": {"bonus_id": "c1-b3"},
    "consent": {"purpose": "personalization", "action": "grant"},
}
assert set(TYPE_VALUES) == set(EVENT_TYPES)


def event(
    type_: str = "chat",
    event_id: str = "evt-1",
    *,
    viewer: str = "viewer-alpha",
    session: str = "sess-a1",
    at_s: float = 0.0,
    **fields: Any,
) -> dict[str, Any]:
    """One valid raw record (fields override the defaults; None removes a field)."""
    record: dict[str, Any] = {
        "event_id": event_id,
        "ts": us_to_iso(T0 + int(at_s * SEC)),
        "creator_id": "c1",
        "drop_id": "c1-d1",
        "session_id": session,
        "viewer_id": viewer,
        "type": type_,
        **TYPE_VALUES[type_],
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def grant(event_id: str, *, viewer: str = "viewer-alpha", at_s: float = 0.0, action: str = "grant",
          session: str = "sess-a1") -> dict[str, Any]:
    return event("consent", event_id, viewer=viewer, session=session, at_s=at_s, action=action)


def session(viewer: str, session_id: str, prefix: str, start_s: float = 0.0) -> list[dict[str, Any]]:
    """A consented viewer's session with one event of every type (11 records)."""
    order = ["consent", "join", "chat", "reaction", "cta_impression", "cta_click", "bonus_impression",
             "bonus_claim", "pickup_select", "enroll", "leave"]
    return [
        event(t, f"{prefix}-{i}", viewer=viewer, session=session_id, at_s=start_s + i)
        for i, t in enumerate(order)
    ]


def lines_of(records: Iterable[Mapping[str, Any] | str | bytes]) -> bytes:
    """JSONL bytes: dicts are dumped, str/bytes written as the line itself."""
    out = []
    for r in records:
        if isinstance(r, bytes):
            out.append(r)
        elif isinstance(r, str):
            out.append(r.encode("utf-8"))
        else:
            out.append(json.dumps(r).encode("utf-8"))
    return b"".join(line + b"\n" for line in out)


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any] | str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lines_of(records))
    return path


def run(
    tmp_path: Path,
    sources: list[Path],
    consent: ConsentConfig = LATEST,
    config: IngestConfig = CONFIG,
    key: PseudonymKey = TEST_KEY,
    name: str = "clean",
) -> IngestReport:
    return ingest(sources, tmp_path / name, tmp_path / f"{name}-quarantine.jsonl", config, consent, key=key)


def read_clean(out_dir: Path) -> pl.DataFrame:
    files = sorted((out_dir / "events").glob("part=*/data.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])


def read_quarantine(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def generate_raw(n_events: int, seed: int = 0, granted: float = 0.8) -> pl.DataFrame:
    """``n_events`` valid raw events (ts as UTC datetimes), 10 per session, vectorized.

    Each session opens with a personalization consent event: a grant for a ``granted``
    share of viewers, a withdrawal for the rest.
    """
    rng = np.random.default_rng(seed)
    per = 10
    n_sessions = max(1, n_events // per)
    n_viewers = max(1, n_sessions // 4)
    sess = np.repeat(np.arange(n_sessions), per)[:n_events]
    pos = np.tile(np.arange(per), n_sessions)[:n_events]
    viewer_of = rng.integers(0, n_viewers, n_sessions)
    start = T0 + np.arange(n_sessions, dtype=np.int64) * 7 * SEC
    middle = np.array(["chat", "reaction", "cta_impression", "cta_click", "bonus_impression",
                       "bonus_claim", "enroll", "pickup_select"])
    types = middle[rng.integers(0, len(middle), n_events)]
    types[pos == 0] = "consent"
    types[pos == 1] = "join"
    types[pos == per - 1] = "leave"
    viewer_granted = rng.random(n_viewers) < granted
    frame = pl.DataFrame({
        "_i": np.arange(n_events),
        "_s": sess,
        "_v": viewer_of[sess],
        "_g": viewer_granted[viewer_of[sess]],
        "type": types,
        "_us": start[sess] + pos * SEC + rng.integers(0, SEC, n_events),
        "_r": rng.random(n_events),
    })
    t = pl.col("type")

    def on(*names: str) -> pl.Expr:
        return t.is_in(list(names))

    creator = pl.format("c{}", pl.col("_s") % 6)
    return frame.select(
        pl.format("e{}", pl.col("_i")).alias("event_id"),
        pl.col("_us").cast(pl.Datetime("us", "UTC")).alias("ts"),
        creator.alias("creator_id"),
        pl.format("{}-d{}", creator, pl.col("_s") // 60).alias("drop_id"),
        pl.format("s{}", pl.col("_s")).alias("session_id"),
        pl.format("viewer-{}", pl.col("_v")).alias("viewer_id"),
        t,
        pl.when(on("join")).then(pl.lit("phone")).alias("device"),
        pl.when(on("join")).then(pl.lit("stream")).alias("channel"),
        pl.when(on("join")).then(pl.col("_r") < 0.3).alias("local_pickup"),
        pl.when(on("join")).then((pl.col("_us") - 60 * SEC).cast(pl.Datetime("us", "UTC"))).alias("drop_started_at"),
        pl.when(on("cta_impression", "cta_click", "enroll")).then(pl.format("{}-v{}", creator, pl.col("_i") % 8))
        .alias("variant"),
        pl.when(on("cta_impression", "bonus_impression")).then(0.05 + 0.9 * pl.col("_r")).alias("propensity"),
        pl.when(on("bonus_impression", "bonus_claim", "pickup_select"))
        .then(pl.format("{}-b{}", creator, pl.col("_i") % 20))
        .alias("bonus_id"),
        pl.when(on("bonus_impression", "bonus_claim")).then(pl.format("sl{}", pl.col("_s"))).alias("slate_id"),
        pl.when(on("bonus_impression")).then(1 + pl.col("_i") % 3).alias("position"),
        pl.when(on("enroll")).then(pl.lit(149.0)).alias("amount"),
        pl.when(on("enroll")).then(pl.lit("EUR")).alias("currency"),
        pl.when(on("consent")).then(pl.lit("personalization")).alias("purpose"),
        pl.when(on("consent")).then(pl.when(pl.col("_g")).then(pl.lit("grant")).otherwise(pl.lit("withdraw")))
        .alias("action"),
    )


def to_jsonl(frame: pl.DataFrame, path: Path) -> Path:
    """Write raw events as JSONL (times as ISO text, absent fields omitted)."""
    iso = "%Y-%m-%dT%H:%M:%S%.6fZ"
    text = frame.with_columns(pl.col("ts", "drop_started_at").dt.strftime(iso))
    with path.open("wb") as f:
        for row in text.iter_rows(named=True):
            f.write(json.dumps({k: v for k, v in row.items() if v is not None}).encode() + b"\n")
    return path


def test_generated_events_are_all_valid_and_granted_viewers_are_kept(tmp_path: Path) -> None:
    raw = generate_raw(2_000, seed=3, granted=1.0)
    path = tmp_path / "raw.parquet"
    raw.write_parquet(path)
    report = run(tmp_path, [path])
    assert report.records_read == 2_000
    assert (report.clean, report.quarantined, report.duplicates, report.excluded_no_consent) == (2_000, 0, 0, 0)


def test_event_builder_makes_valid_records_of_every_type(tmp_path: Path) -> None:
    records = [grant("g0", at_s=-1)] + [event(t, f"e-{t}", at_s=1) for t in EVENT_TYPES]
    report = run(tmp_path, [write_jsonl(tmp_path / "all.jsonl", records)])
    assert report.quarantined == 0
    assert report.clean == len(records)
    assert report.events_per_type == {t: 2 if t == "consent" else 1 for t in sorted(EVENT_TYPES)}
