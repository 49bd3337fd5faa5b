"""Dask benchmark: ingest + features events/s with the local engine and on a Dask LocalCluster.

Usage (from the project root, with the project's venv)::

    python benchmarks/dask_scale.py                      # 10M events: local, 1 worker, 2 workers
    python benchmarks/dask_scale.py --events 20000 --workdir /tmp/bench   # a quick check

The events are simulated once and cached exactly as ``data_path.py`` caches them (same
workdir layout, seed and simulator hash). Then, for each engine -- ``local`` (this
machine's engine: two threads), ``dask-1`` and ``dask-2`` (a ``dask.distributed``
LocalCluster of 1 or 2 worker processes, one thread each, started by ``carryon`` itself
with ``--engine dask`` and ``scale.workers`` set in a params copy) -- it runs
``carryon ingest`` and ``carryon features`` each in its own child process and measures
wall seconds (cluster start and stop included: that is what a run costs). Every Dask
output is compared with the local one, file for file (the clean partitions, the
quarantine, the feature tables) and the ingest reports field for field; ``ingest.max_ts``
is pinned (2030-01-01) in every params copy, since the clock-based default is quoted in
the quarantine's details and would differ between any two runs.

Stdout is ONE JSON document: ``machine``, ``events`` (raw records ingest read), and per
engine the stage wall seconds, ``events_per_s`` (raw records / (ingest + features
seconds)), ``ratio_to_local`` (its events/s over the local engine's in this same run)
and ``equal_to_local``. Peak RSS is the driver process's (``ru_maxrss``; workers are
separate processes). Exit status 0; 1 if a stage failed; 2 if an output differs.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_path import DEFAULT_SEED, Bench, machine

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {"local": None, "dask-1": 1, "dask-2": 2}  # name -> LocalCluster workers


def log(message: str) -> None:
    print(f"[dask_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def params_for(workdir: Path, base: Path, workers: int | None) -> Path:
    """A copy of ``base`` with scale.engine and scale.workers set for one engine (and ingest.max_ts pinned)."""
    raw = yaml.safe_load(base.read_text(encoding="utf-8"))
    # Pinned: by default "in the future" is judged against the clock, whose time the quarantine's
    # details quote, so two runs would differ in those lines for no other reason.
    raw["ingest"] = {**raw["ingest"], "max_ts": "2030-01-01T00:00:00Z"}
    raw["scale"] = {**raw.get("scale", {}), "engine": "local" if workers is None else "dask",
                    "scheduler": None, "workers": workers or 1, "threads_per_worker": 1}
    path = workdir / f"params-{'local' if workers is None else f'dask-{workers}'}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def same_files(a: Path, b: Path) -> bool:
    """True if the two trees hold the same relative file names with identical bytes."""
    names_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return names_a == names_b and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names_a)


def run_engine(bench: Bench, name: str, raw: Path, catalog: Path) -> tuple[dict[str, Any], Path]:
    run_dir = bench.workdir / f"dask-scale-{name}"
    ing, ing_report, clean = bench.ingest(raw, run_dir)
    log(f"{name}: ingest {ing.wall_s:.2f} s")
    fea, _, _ = bench.features(clean, catalog, run_dir)
    log(f"{name}: features {fea.wall_s:.2f} s")
    events = int(ing_report["records_read"])
    total = ing.wall_s + fea.wall_s
    entry = {
        "ingest_wall_s": ing.wall_s,
        "features_wall_s": fea.wall_s,
        "wall_s": total,
        "events_per_s": events / total,
        "ingest_events_per_s": events / ing.wall_s,
        "features_events_per_s": int(ing_report["clean"]) / fea.wall_s,
        "driver_peak_rss_mib": max(ing.peak_rss_mib, fea.peak_rss_mib),
        "report": {k: v for k, v in ing_report.items() if k != "seconds"},
    }
    return entry, run_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ingest + features events/s: local engine vs Dask (JSON on stdout)")
    parser.add_argument("--events", type=int, default=10_000_000, help="events to simulate (default: 10000000)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".cache",
                        help="cache of simulated events and run outputs (default: benchmarks/.cache)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"simulator seed (default: {DEFAULT_SEED})")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="base params.yaml")
    args = parser.parse_args(argv)
    if args.events < 1_000:
        parser.error("--events must be >= 1000 (simulate.scale >= 0.001)")
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    base = Bench(workdir, args.seed, args.params.resolve())
    raw, catalog, sim, cached = base.simulated(args.events, "parquet")
    results: dict[str, Any] = {}
    dirs: dict[str, Path] = {}
    for name, workers in ENGINES.items():
        bench = Bench(workdir, args.seed, params_for(workdir, args.params.resolve(), workers))
        bench.env = base.env  # one pseudonymization key for every engine: outputs comparable
        try:
            results[name], dirs[name] = run_engine(bench, name, raw, catalog)
        except RuntimeError as e:
            log(f"error: {e}")
            results[name] = {"error": base.scrub(str(e).strip().splitlines()[0])}

    differs = False
    local = results.get("local", {})
    for name in ENGINES:
        entry = results[name]
        if name == "local" or "error" in entry or "error" in local:
            continue
        entry["ratio_to_local"] = entry["events_per_s"] / local["events_per_s"]
        equal = {
            "clean_events": same_files(dirs["local"] / "clean", dirs[name] / "clean"),
            "quarantine": filecmp.cmp(dirs["local"] / "quarantine.jsonl", dirs[name] / "quarantine.jsonl",
                                      shallow=False),
            "ingest_report": entry["report"] == local["report"],
            "features": same_files(dirs["local"] / "features", dirs[name] / "features"),
        }
        entry["equal_to_local"] = equal
        differs |= not all(equal.values())
    events = int(local["report"]["records_read"]) if "report" in local else None
    for entry in results.values():
        entry.pop("report", None)
    out = {
        "benchmark": "dask_scale",
        "seed": args.seed,
        "machine": machine(),
        "events_requested": args.events,
        "events": events,
        "simulate_cached": cached,
        "simulated_events": int(sim["events"]),
        "engines": results,
        "note": "wall seconds include starting and stopping the LocalCluster (each carryon call starts its own); "
                "events_per_s = raw records / (ingest + features wall seconds)",
    }
    print(json.dumps(out, indent=2, sort_keys=True))
    if any("error" in e for e in results.values()):
        return 1
    return 2 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
