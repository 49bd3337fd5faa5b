"""The simulation run: the world drop by drop, streamed to Parquet or JSONL atomically.

Drops are played in time order; each creator carries its viewer pool from drop to
drop, so memory stays bounded by one batch of drops whatever the scale. Parquet gets
one row group per batch of drops.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features._fsutil import atomic_file, atomic_write_text
from features.config import ProgressFn, SimulateConfig, no_progress
from features.errors import ConfigError
from features.schema import ts_to_us
from features.simulate._columns import TYPE_NAMES, Columns
from features.simulate._corrupt import DUPLICATE_KINDS, INVALID_KINDS, JSONL_KINDS, corrupt
from features.simulate._drop import DropResult, simulate_drop
from features.simulate._records import SCHEMA, json_lines, to_table
from features.simulate._viewers import ANALYTICS, GRANTED, PERSONALIZATION, WITHDRAWN, ViewerPool
from features.simulate._world import (
    CORRUPT,
    JSONL,
    MAX_CREATORS,
    Creator,
    DropPlan,
    ViewerIds,
    build_creators,
    plan_drops,
    rng_for,
)
from features.spec import context_features

ROWS_PER_GROUP = 250_000
CATALOG_FILE = "catalog.json"
EVENTS_FILES = {"parquet": "events.parquet", "jsonl": "events.jsonl"}


def _check(config: SimulateConfig) -> None:
    def bad(key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(f"simulate.{key} must be {expected}, got {value!r}; fix params.yaml")

    if not 1 <= config.creators <= MAX_CREATORS:
        raise bad("creators", f"in 1..{MAX_CREATORS}", config.creators)
    if config.drops_per_creator < 1:
        raise bad("drops_per_creator", ">= 1", config.drops_per_creator)
    if config.viewers_per_drop < 1:
        raise bad("viewers_per_drop", ">= 1", config.viewers_per_drop)
    if not config.scale > 0:
        raise bad("scale", "> 0", config.scale)
    if not 0.0 <= config.corrupt_fraction <= 0.5:
        raise bad("corrupt_fraction", "in [0, 0.5]", config.corrupt_fraction)
    try:
        ts_to_us(config.start)
    except (TypeError, ValueError) as e:
        raise bad("start", "an ISO 8601 time with UTC offset", config.start) from e


class World:
    """Creators, their drop plans and viewer pools; :meth:`drops` plays the drops."""

    def __init__(self, config: SimulateConfig) -> None:
        _check(config)
        self.config = config
        self.creators: tuple[Creator, ...] = build_creators(config.seed, config.creators)
        per_creator = max(1, round(config.drops_per_creator * config.scale))
        plans = [p for c in self.creators for p in plan_drops(config.seed, c, per_creator, config.start)]
        plans.sort(key=lambda p: (p.start_us, p.creator, p.index))
        self.plans: list[DropPlan] = plans
        ids = ViewerIds(config.seed)
        self.pools = [ViewerPool(c.index, ids) for c in self.creators]
        niche = {f.name: f for f in context_features(c.niche for c in self.creators)}["creator_niche"]
        self._niche_code = {c.index: niche.encode(c.niche) for c in self.creators}

    def catalog(self) -> dict[str, Any]:
        return {"schema": 1, "creators": [c.to_catalog() for c in self.creators]}

    def drops(self, collect_truth: bool = False) -> Iterator[DropResult]:
        """Play every drop in time order (each creator's drops in sequence)."""
        for plan in self.plans:
            creator = self.creators[plan.creator]
            yield simulate_drop(
                self.config.seed, creator, plan, self.pools[plan.creator],
                self.config.viewers_per_drop, self._niche_code[plan.creator], collect_truth,
            )

    def consent_counts(self) -> dict[str, int]:
        def total(attr: str, value: int | None = None) -> int:
            n = 0
            for pool in self.pools:
                arr = getattr(pool, attr)[: pool.size]
                n += int((arr == value).sum() if value is not None else arr.sum())
            return n

        return {
            "granted_personalization": total("consent_kind", PERSONALIZATION),
            "analytics_only": total("consent_kind", ANALYTICS),
            "no_consent": total("consent_kind", 0),
            "withdrew": total("withdrew"),
            "granted_again": total("regranted"),
            "standing_granted": total("state", GRANTED),
            "standing_withdrawn": total("state", WITHDRAWN),
        }


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation wrote. ``records`` = ``events`` + every bad or duplicate record."""

    format: str
    events_file: str  # file name inside the output directory
    catalog_file: str
    seed: int
    scale: float
    events: int  # valid simulated events, each once
    records: int  # records (lines) written, bad ones included
    creators: int
    drops: int
    sessions: int
    viewers: int
    consented_viewers: int  # personalization granted at the end of the simulation
    consent: Mapping[str, int] = field(default_factory=dict)
    events_by_type: Mapping[str, int] = field(default_factory=dict)
    corrupted: Mapping[str, int] = field(default_factory=dict)  # invalid records per kind
    duplicates: Mapping[str, int] = field(default_factory=dict)  # exact / conflicting

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "events_file": self.events_file,
            "catalog_file": self.catalog_file, "seed": self.seed, "scale": self.scale,
            "events": self.events, "records": self.records, "creators": self.creators,
            "drops": self.drops, "sessions": self.sessions, "viewers": self.viewers,
            "consented_viewers": self.consented_viewers, "consent": dict(self.consent),
            "events_by_type": dict(self.events_by_type), "corrupted": dict(self.corrupted),
            "duplicates": dict(self.duplicates),
        }


class _JsonlSink:
    """JSON lines with malformed lines, one non-UTF-8 line and an optional truncated tail."""

    def __init__(self, f: BinaryIO, seed: int, fraction: float) -> None:
        self.f, self.seed, self.fraction = f, seed, fraction
        self.counts = dict.fromkeys(JSONL_KINDS, 0)
        self.last = ""

    def write(self, drop: DropResult, table: pa.Table, cols: Columns) -> int:
        lines = list(json_lines(table, cols))
        if lines:
            self.last = lines[-1]
        if self.fraction > 0:
            rng = rng_for(self.seed, JSONL, drop.plan.creator, drop.plan.index)
            bad = [_malformed(rng, drop.plan.drop_id, k, lines)
                   for k in range(int(rng.binomial(len(lines), self.fraction / 7)))]
            self.counts["malformed_json"] += len(bad)
            at = np.sort(rng.integers(0, len(lines) + 1, size=len(bad)))
            for offset, (pos, line) in enumerate(zip(at.tolist(), bad, strict=True)):
                lines.insert(pos + offset, line)
        data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
        written = len(lines)
        if self.fraction > 0 and self.counts["non_utf8"] == 0:
            prefix = f'{{"event_id":"{drop.plan.drop_id}-u00000","type":"chat","note":"'.encode()
            data += prefix + b"caf\xe9 \xff\xfe\"}\n"
            self.counts["non_utf8"] = 1
            written += 1
        self.f.write(data)
        return written

    def finish(self, truncate: bool) -> int:
        if truncate and self.last:
            self.f.write(self.last[: max(1, len(self.last) // 2)].encode("utf-8"))
            self.counts["truncated_last_line"] = 1
            return 1
        return 0


def _malformed(rng: np.random.Generator, drop_id: str, k: int, lines: list[str]) -> str:
    choice = int(rng.integers(4))
    if choice == 0 and lines:
        line = lines[int(rng.integers(len(lines)))]
        return line[: max(1, int(rng.integers(1, len(line))))]  # cut mid-record
    if choice == 1:
        return f"{{'event_id': '{drop_id}-m{k:05d}', 'type': 'chat'}}"  # single quotes
    if choice == 2:
        return f'{{"event_id":"{drop_id}-m{k:05d}",,"type":"reaction"}}'
    return "<html><body>502 Bad Gateway</body></html>"


def run(
    config: SimulateConfig, out_dir: Path, fmt: Literal["parquet", "jsonl"] = "parquet", *,
    progress: ProgressFn = no_progress, truncate_last_line: bool = False,
) -> SimulationSummary:
    """Simulate the world of ``config``; write events and catalog under ``out_dir``."""
    if fmt not in EVENTS_FILES:
        raise ValueError(f"fmt must be 'parquet' or 'jsonl', got {fmt!r}")
    world = World(config)
    out_dir = Path(out_dir)
    events_path = out_dir / EVENTS_FILES[fmt]
    by_type: Counter[str] = Counter()
    bad = dict.fromkeys((*INVALID_KINDS, *DUPLICATE_KINDS), 0)
    totals = {"events": 0, "records": 0, "sessions": 0}
    total_drops = len(world.plans)
    progress("simulate", 0, total_drops)

    def batches() -> Iterator[tuple[DropResult, pa.Table, Columns]]:
        for done, drop in enumerate(world.drops(), start=1):
            cols = drop.columns
            kinds, n = np.unique(cols["kind"], return_counts=True)
            by_type.update({TYPE_NAMES[k]: int(c) for k, c in zip(kinds.tolist(), n.tolist(), strict=True)})
            totals["events"] += cols["kind"].shape[0]
            totals["sessions"] += len(drop.session_ids)
            rng = rng_for(config.seed, CORRUPT, drop.plan.creator, drop.plan.index)
            cols, counts = corrupt(rng, cols, config.corrupt_fraction)
            for key, value in counts.items():
                bad[key] += value
            totals["records"] += cols["kind"].shape[0]
            yield drop, to_table(drop, cols), cols
            progress("simulate", done, total_drops)

    jsonl_counts = dict.fromkeys(JSONL_KINDS, 0)
    with atomic_file(events_path) as tmp:
        if fmt == "parquet":
            _write_parquet(tmp, (table for _, table, _ in batches()))
        else:
            with open(tmp, "wb") as f:
                sink = _JsonlSink(f, config.seed, config.corrupt_fraction)
                extra = 0
                for drop, table, cols in batches():
                    extra += sink.write(drop, table, cols) - cols["kind"].shape[0]
                extra += sink.finish(truncate_last_line)
            totals["records"] += extra
            jsonl_counts = sink.counts
    atomic_write_text(out_dir / CATALOG_FILE, json.dumps(world.catalog(), indent=2) + "\n")
    stale = out_dir / EVENTS_FILES["jsonl" if fmt == "parquet" else "parquet"]
    stale.unlink(missing_ok=True)  # a previous run's other format must not be ingested too

    consent = world.consent_counts()
    return SimulationSummary(
        format=fmt,
        events_file=events_path.name,
        catalog_file=CATALOG_FILE,
        seed=config.seed,
        scale=config.scale,
        events=totals["events"],
        records=totals["records"],
        creators=len(world.creators),
        drops=total_drops,
        sessions=totals["sessions"],
        viewers=sum(p.size for p in world.pools),
        consented_viewers=consent["standing_granted"],
        consent=consent,
        events_by_type=dict(sorted(by_type.items())),
        corrupted={**{k: bad[k] for k in INVALID_KINDS}, **jsonl_counts},
        duplicates={k: bad[k] for k in DUPLICATE_KINDS},
    )


def _write_parquet(path: Path, tables: Iterator[pa.Table]) -> None:
    buffer: list[pa.Table] = []
    rows = 0
    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
        for table in tables:
            buffer.append(table)
            rows += table.num_rows
            if rows >= ROWS_PER_GROUP:
                writer.write_table(pa.concat_tables(buffer), row_group_size=rows)
                buffer, rows = [], 0
        if buffer:
            writer.write_table(pa.concat_tables(buffer), row_group_size=rows)
