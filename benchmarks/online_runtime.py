"""Online feature runtime benchmark: µs per event update and per feature vector.

Usage (from the project root, with the project's venv)::

    python benchmarks/online_runtime.py                  # 2,000 sessions
    python benchmarks/online_runtime.py --sessions 200   # a quick check

Replays realistic generated sessions (``tests/eventgen.py``, fixed ``--seed``: joins,
chats, reactions, CTA impressions, clicks, enrolls, bonus slates, claims, pickups, ties
at one instant) through ``features.online.SessionFeatures``, the runtime an edge node
runs, and times each call with ``time.perf_counter_ns``:

* ``update``: one event in, with ``ts`` as integer µs and, separately, as the ISO 8601
  string an app would send;
* ``context``: the context vector at each decision (CTA impression or bonus slate),
  right after its own event was fed (so strictly-before must exclude it);
* ``cta_matrix_8``: the model input for the creator's 8 CTA variants (8 x 21, float32);
* ``bonus_matrix``: the model input for the slate's bonuses.

Figures are p50/p99/mean/max in µs over all calls, including the ~0.05 µs cost of the
timer itself; the garbage collector stays on (as on a device) unless ``--no-gc``. The
runtime imports numpy and the standard library only; this script uses polars just to
generate the sessions. Stdout is ONE JSON document; progress on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from features.online import SessionFeatures  # noqa: E402
from features.schema import us_to_iso  # noqa: E402
from features.spec import FeatureSpec  # noqa: E402


def summary(ns: list[int]) -> dict[str, float]:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    return {"calls": int(us.size), "p50_us": round(float(np.percentile(us, 50)), 3),
            "p99_us": round(float(np.percentile(us, 99)), 3), "mean_us": round(float(us.mean()), 3),
            "max_us": round(float(us.max()), 3)}


def sessions_and_spec(n: int, seed: int) -> tuple[list[list[dict[str, Any]]], FeatureSpec, dict[str, Any]]:
    import importlib

    import polars as pl

    eventgen = importlib.import_module("eventgen")  # tests/eventgen.py

    catalog = eventgen.make_catalog(6)
    spec = FeatureSpec.build({c["niche"] for c in catalog["creators"]}, eventgen.STYLES, eventgen.KINDS, 120)
    events = eventgen.generate_events(n, seed=seed, creators=6).with_columns(
        pl.col("ts", "drop_started_at").dt.epoch("us"))
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in events.sort("ts", "event_id").iter_rows(named=True):
        grouped[row["session_key"]].append({k: v for k, v in row.items() if v is not None})
    return list(grouped.values()), spec, catalog


def run(sessions: list[list[dict[str, Any]]], spec: FeatureSpec, catalog: dict[str, Any],
        iso: bool) -> dict[str, list[int]]:
    timer = time.perf_counter_ns
    creators = {c["creator_id"]: c for c in catalog["creators"]}
    rng = np.random.default_rng(0)
    variant_items = {cid: rng.random((8, len(spec.cta_item))).astype(np.float32) for cid in creators}
    bonus_item = rng.random((1, len(spec.bonus_item))).astype(np.float32)
    out: dict[str, list[int]] = {"update": [], "context": [], "cta_matrix_8": [], "bonus_matrix": []}
    for events in sessions:
        creator = events[0]["creator_id"]
        runtime = SessionFeatures(spec, creator_niche=creators[creator]["niche"])
        slate_sizes: dict[str, int] = defaultdict(int)
        for e in events:
            if e["type"] == "bonus_impression":
                slate_sizes[e["slate_id"]] += 1
        shown: set[str] = set()
        for e in events:
            event = {**e, "ts": us_to_iso(e["ts"]), "drop_started_at": us_to_iso(e["drop_started_at"])} \
                if iso and e["type"] == "join" else ({**e, "ts": us_to_iso(e["ts"])} if iso else e)
            start = timer()
            runtime.update(event)
            out["update"].append(timer() - start)
            at = e["ts"]
            if e["type"] == "cta_impression":
                start = timer()
                runtime.context(at)
                out["context"].append(timer() - start)
                start = timer()
                runtime.cta_matrix(at, variant_items[creator])
                out["cta_matrix_8"].append(timer() - start)
            elif e["type"] == "bonus_impression" and e["slate_id"] not in shown:
                shown.add(e["slate_id"])
                items = np.repeat(bonus_item, slate_sizes[e["slate_id"]], axis=0)
                start = timer()
                runtime.context(at)
                out["context"].append(timer() - start)
                start = timer()
                runtime.bonus_matrix(at, items)
                out["bonus_matrix"].append(timer() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="sessions to generate (about)")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--repeat", type=int, default=3, help="replays of all sessions; the first warms up")
    parser.add_argument("--no-gc", action="store_true", help="disable the garbage collector while timing")
    args = parser.parse_args(argv)

    print(f"generating {args.sessions:,} sessions ...", file=sys.stderr, flush=True)
    sessions, spec, catalog = sessions_and_spec(args.sessions, args.seed)
    if args.no_gc:
        gc.disable()
    figures: dict[str, list[int]] = defaultdict(list)
    iso_updates: list[int] = []
    for i in range(args.repeat):
        print(f"replay {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
        timed = run(sessions, spec, catalog, iso=False)
        iso_updates_run = run(sessions, spec, catalog, iso=True)["update"]
        if i == 0 and args.repeat > 1:
            continue  # warm-up
        for k, v in timed.items():
            figures[k].extend(v)
        iso_updates.extend(iso_updates_run)
    result = {
        "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
        "sessions": len(sessions), "events": sum(len(s) for s in sessions), "gc": not args.no_gc,
        "context_features": len(spec.context),
        "update_int_ts": summary(figures["update"]),
        "update_iso_ts": summary(iso_updates),
        "context": summary(figures["context"]),
        "cta_matrix_8": summary(figures["cta_matrix_8"]),
        "bonus_matrix": summary(figures["bonus_matrix"]),
        "target": {"feature_vector_p99_us": 20.0,
                   "passed": summary(figures["cta_matrix_8"])["p99_us"] < 20.0
                   and summary(figures["context"])["p99_us"] < 20.0},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
