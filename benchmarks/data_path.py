"""Data-path benchmark: ingest + features throughput and memory, against a naive pandas baseline.

Usage (from the project root, with the project's venv)::

    python benchmarks/data_path.py --events 1000000 10000000
    python benchmarks/data_path.py --events 20000 --workdir /tmp/bench   # a quick check

For each size N in ``--events`` the benchmark

1. simulates N events once (``carryon simulate --scale N/1e6 --format parquet``, fixed
   seed) and caches them in the work directory, keyed by size, seed and a hash of the
   simulator's code; the actual event count is reported (the simulator hits N roughly);
2. runs ``carryon ingest`` and then ``carryon features`` on them, each in its own child
   process (``python -m pipeline.cli ...`` of this interpreter), and measures each
   stage's wall time and peak RSS (``os.wait4`` rusage, ``ru_maxrss``);
3. for N <= ``--baseline-max`` (default 1M; the naive path needs minutes and ~17 GiB at
   10M), runs ``benchmarks/_pandas_baseline.py`` -- a naive but correct pandas
   implementation of the same ingest and CTA context features -- in its own child
   process on the same raw file, checks that its CTA table equals the pipeline's (same
   impression ids and session pseudonyms, same context feature values,
   ``np.array_equal`` after sorting), and reports the ratio baseline seconds / carryon
   seconds (ingest + features), measured in this same run.

It also simulates the smallest size as JSONL, ingests that, and reports the JSONL ingest
throughput separately. Every run shares one pseudonymization key (a fresh random key in
``CARRYON_PSEUDONYM_KEY`` for this benchmark run), so both sides hash viewer ids alike.

``events`` is the number of raw records ingest read (the simulated events plus the few
bad copies and duplicates the simulator adds on purpose; ``simulated_events`` without
them). Throughputs: ``ingest.events_per_s`` = raw records read / ingest seconds;
``features.events_per_s`` = clean events in / features seconds;
``ingest_features.events_per_s`` = raw records / (ingest + features seconds).

Stdout is ONE JSON document: ``machine`` (cpu count, python, polars/pandas versions),
``sizes`` (one entry per size: events, per-stage wall seconds, peak RSS in MiB, events/s,
the baseline and its equality check), ``jsonl_ingest``, and ``targets`` -- issue 2's
targets (10M events ingest + features < 30 s wall, peak RSS < 4 GiB, >= 5x faster than
the pandas baseline) with the measured figure and a pass/fail boolean each (``null``
when the run did not include the size a target is defined at). Progress goes to stderr.
Paths in the output are relative. Exit status: 0; 1 if a stage failed (its stderr tail
goes to stderr, that size's entry holds an ``error`` instead of figures, the other sizes
still run); 2 if the baseline's CTA table differs from the pipeline's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measured, measure

ROOT = Path(__file__).resolve().parents[1]
BASELINE = Path(__file__).resolve().parent / "_pandas_baseline.py"
DEFAULT_SEED = 20261127
EVENTS_PER_SCALE = 1_000_000  # simulate.scale 1.0 ~ 1M events
TARGET_EVENTS = 10_000_000
TARGET_WALL_S = 30.0
TARGET_RSS_BYTES = 4 * 2**30
TARGET_SPEEDUP = 5.0
KEY_ENV = "CARRYON_PSEUDONYM_KEY"


def log(message: str) -> None:
    print(f"[data_path {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    """Paths, environment and the child-process calls of one benchmark run."""

    def __init__(self, workdir: Path, seed: int, params: Path) -> None:
        self.workdir = workdir
        self.seed = seed
        self.params = params
        self.env = dict(os.environ)
        self.env.pop(KEY_ENV + "_FILE", None)
        self.env[KEY_ENV] = secrets.token_hex(32)

    def rel(self, path: Path) -> str:
        """A path for the report: relative to the project if inside it, else to the workdir."""
        path = path.resolve()
        for base in (ROOT, self.workdir.resolve()):
            if path.is_relative_to(base):
                return path.relative_to(base).as_posix()
        return path.name

    def carryon(self, *args: str | Path) -> Measured:
        argv = [sys.executable, "-m", "pipeline.cli", *map(str, args),
                "--params", str(self.params), "--json", "--quiet"]
        return measure(argv, cwd=ROOT, env=self.env)

    def attempt(self, run: Callable[..., dict[str, Any]], size: int, *args: Any) -> dict[str, Any]:
        """``run(self, size, *args)``; a failed stage becomes an ``error`` entry, the rest still runs."""
        try:
            return run(self, size, *args)
        except RuntimeError as e:  # a stage failed: Measured.check names it, with its stderr
            log(f"error: {e}")
            last = str(e).strip().splitlines()[-1].strip()
            first = str(e).splitlines()[0].rstrip(":")
            return {"events_requested": size, "error": self.scrub(f"{first}: {last}")}

    def scrub(self, text: str) -> str:
        """Text with this machine's project and work directories made relative."""
        text = text.replace(str(self.workdir.resolve()), self.rel(self.workdir.resolve()))
        return text.replace(str(ROOT) + os.sep, "").replace(str(ROOT), ".")

    # -- simulate (cached) --------------------------------------------------------------

    def simulated(self, size: int, fmt: str) -> tuple[Path, Path, dict[str, Any], bool]:
        """Raw events file, catalog, simulate result, and whether it came from the cache."""
        stem = f"sim-{fmt}-{size}-seed{self.seed}-"
        key = stem + _simulator_hash()
        target = self.workdir / key
        for stale in self.workdir.glob(stem + "*"):  # made by an older simulator
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
        done = target / "simulate.json"
        cached = done.exists()
        if not cached:
            log(f"simulating {size:,} events as {fmt} (cached in {self.rel(target)})")
            tmp = self.workdir / f".{key}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            run = self.carryon(
                "simulate", "--out", tmp, "--format", fmt, "--scale", repr(size / EVENTS_PER_SCALE),
                "--seed", str(self.seed),
            ).check(f"carryon simulate ({size:,} events, {fmt})")
            (tmp / "simulate.json").write_text(run.stdout)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        result = json.loads(done.read_text())
        return _events_file(target, fmt), target / "catalog.json", result, cached

    # -- the measured stages ------------------------------------------------------------

    def ingest(self, raw: Path, run_dir: Path) -> tuple[Measured, dict[str, Any], Path]:
        clean = run_dir / "clean"
        for stale in (clean, run_dir / "quarantine.jsonl", run_dir / "ingest.json"):
            _remove(stale)
        run_dir.mkdir(parents=True, exist_ok=True)
        run = self.carryon(
            "ingest", raw, "--out", clean, "--quarantine", run_dir / "quarantine.jsonl",
            "--report", run_dir / "ingest.json",
        ).check(f"carryon ingest {self.rel(raw)}")
        return run, json.loads(run.stdout), clean

    def features(self, clean: Path, catalog: Path, run_dir: Path) -> tuple[Measured, dict[str, Any], Path]:
        out = run_dir / "features"
        for stale in (out, run_dir / "features.json"):
            _remove(stale)
        run = self.carryon(
            "features", "--clean", clean, "--catalog", catalog, "--out", out,
            "--report", run_dir / "features.json",
        ).check(f"carryon features {self.rel(clean)}")
        return run, json.loads(run.stdout), out

    def baseline(self, raw: Path, catalog: Path, run_dir: Path) -> tuple[Measured, dict[str, Any], Path]:
        out = run_dir / "baseline"
        _remove(out)
        argv = [sys.executable, str(BASELINE), str(raw), "--catalog", str(catalog), "--params", str(self.params),
                "--out", str(out)]
        run = measure(argv, cwd=ROOT, env=self.env).check(f"pandas baseline on {self.rel(raw)}")
        return run, json.loads(run.stdout), out


# -- one size ------------------------------------------------------------------------------


def bench_size(bench: Bench, size: int, baseline_max: int) -> dict[str, Any]:
    raw, catalog, sim, cached = bench.simulated(size, "parquet")
    run_dir = bench.workdir / f"run-{size}"

    log(f"{size:,}: carryon ingest of {int(sim['records']):,} records")
    ing, ing_report, clean = bench.ingest(raw, run_dir)
    events = _records_read(ing_report)
    clean_events = int(ing_report["clean"])
    log(f"{size:,}: ingest {ing.wall_s:.2f} s, {ing.peak_rss_mib:,.0f} MiB; carryon features")
    fea, fea_report, features_dir = bench.features(clean, catalog, run_dir)
    log(f"{size:,}: features {fea.wall_s:.2f} s, {fea.peak_rss_mib:,.0f} MiB")
    total_s = ing.wall_s + fea.wall_s

    entry: dict[str, Any] = {
        "events_requested": size,
        "events": events,
        "simulated_events": int(sim["events"]),
        "scale": size / EVENTS_PER_SCALE,
        "raw_file": bench.rel(raw),
        "raw_file_mib": raw.stat().st_size / 2**20,
        "simulate_cached": cached,
        "ingest": {
            **_stage(ing),
            "events_per_s": events / ing.wall_s,
            "counts": _ingest_counts(ing_report),
        },
        "features": {
            **_stage(fea),
            "events_per_s": clean_events / fea.wall_s,
            "clean_events_in": clean_events,
            "summary": _features_summary(fea_report),
        },
        "ingest_features": {
            "wall_s": total_s,
            "peak_rss_mib": max(ing.peak_rss_mib, fea.peak_rss_mib),
            "events_per_s": events / total_s,
        },
    }
    if size > baseline_max:
        entry["baseline"] = {
            "skipped": f"{size:,} events > --baseline-max {baseline_max:,}: the naive pandas path walks every "
            "session in Python; its time and memory grow linearly with the events (see the smaller sizes)",
        }
        return entry

    log(f"{size:,}: naive pandas baseline")
    base, base_report, base_dir = bench.baseline(raw, catalog, run_dir)
    log(f"{size:,}: baseline {base.wall_s:.2f} s, {base.peak_rss_mib:,.0f} MiB; comparing CTA tables")
    check = compare_cta(_cta_table(features_dir), base_dir / "cta.parquet")
    entry["baseline"] = {
        **_stage(base),
        "events_per_s": events / base.wall_s,
        "phases_s": base_report.get("phases_s"),
        "counts": base_report.get("counts"),
        "speedup": base.wall_s / total_s,
        "speedup_note": "baseline wall seconds / carryon (ingest + features) wall seconds, same run",
        "cta_equal": check,
    }
    return entry


def bench_jsonl(bench: Bench, size: int) -> dict[str, Any]:
    raw, _, sim, cached = bench.simulated(size, "jsonl")
    log(f"jsonl {size:,}: carryon ingest of {int(sim['records']):,} records")
    ing, report, _ = bench.ingest(raw, bench.workdir / f"run-jsonl-{size}")
    events = _records_read(report)
    log(f"jsonl {size:,}: ingest {ing.wall_s:.2f} s, {ing.peak_rss_mib:,.0f} MiB")
    return {
        "events_requested": size,
        "events": events,
        "simulated_events": int(sim["events"]),
        "raw_file": bench.rel(raw),
        "raw_file_mib": raw.stat().st_size / 2**20,
        "simulate_cached": cached,
        "ingest": {
            **_stage(ing),
            "events_per_s": events / ing.wall_s,
            "counts": _ingest_counts(report),
        },
    }


# -- verification --------------------------------------------------------------------------

ID_COLUMN = "impression_id"  # the impression's event_id, in both CTA tables


def compare_cta(pipeline_cta: Path, baseline_cta: Path) -> dict[str, Any]:
    """Same impression ids, session pseudonyms and bit-identical float32 context features, sorted by id."""
    from features.spec import context_features

    names = [f.name for f in context_features(())]
    real = pl.read_parquet(pipeline_cta).sort(ID_COLUMN)
    base = pl.read_parquet(baseline_cta).sort(ID_COLUMN)
    ids_equal = real.height == base.height and bool(np.array_equal(
        real[ID_COLUMN].to_numpy(), base[ID_COLUMN].to_numpy()))
    mismatched: list[str] = []
    nondefault: dict[str, int] = {}  # rows off the default: shows the comparison is not vacuous
    missing = [n for n in names if n not in real.columns or n not in base.columns]
    # Same pseudonyms: the two sides hashed the raw session ids with the same key alike.
    keys_equal = ids_equal and bool(np.array_equal(real["session_key"].to_numpy(), base["session_key"].to_numpy()))
    if ids_equal:
        for feature in context_features(()):
            if feature.name in missing:
                continue
            a = real[feature.name].cast(pl.Float32).to_numpy()
            b = base[feature.name].cast(pl.Float32).to_numpy()
            if not np.array_equal(a, b):
                mismatched.append(feature.name)
            nondefault[feature.name] = int(np.count_nonzero(a != np.float32(feature.default)))
    return {
        "passed": ids_equal and keys_equal and not mismatched and not missing,
        "rows": real.height,
        "baseline_rows": base.height,
        "ids_equal": ids_equal,
        "session_keys_equal": keys_equal,
        "features_compared": len(names) - len(missing),
        "mismatched_features": mismatched,
        "missing_features": missing,
        "nondefault_rows": nondefault,
    }


# -- targets -------------------------------------------------------------------------------


def targets(all_sizes: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = [s for s in all_sizes if "error" not in s]
    if not sizes:
        return {"note": "every size failed: no target judged"}
    at_target = [s for s in sizes if s["events_requested"] >= TARGET_EVENTS]
    largest = max(sizes, key=lambda s: s["events_requested"])
    measured = at_target[0] if at_target else largest
    ok = bool(at_target)
    total = measured["ingest_features"]
    with_baseline = [s for s in sizes if "speedup" in s.get("baseline", {})]
    speed = max(with_baseline, key=lambda s: s["events_requested"]) if with_baseline else None
    out: dict[str, Any] = {
        "ingest_features_wall_s": {
            "target": f"< {TARGET_WALL_S:g} s at {TARGET_EVENTS:,} events",
            "measured": total["wall_s"],
            "measured_at_events": measured["events"],
            "pass": (total["wall_s"] < TARGET_WALL_S) if ok else None,
        },
        "peak_rss": {
            "target": f"< {TARGET_RSS_BYTES / 2**30:g} GiB at {TARGET_EVENTS:,} events (max over the stages)",
            "measured_mib": total["peak_rss_mib"],
            "measured_at_events": measured["events"],
            "pass": (total["peak_rss_mib"] * 2**20 < TARGET_RSS_BYTES) if ok else None,
        },
        "speedup_vs_pandas": {
            "target": f">= {TARGET_SPEEDUP:g}x (baseline seconds / carryon ingest + features seconds)",
            "measured": speed["baseline"]["speedup"] if speed else None,
            "measured_at_events": speed["events"] if speed else None,
            "pass": (speed["baseline"]["speedup"] >= TARGET_SPEEDUP) if speed else None,
            "note": "measured at the largest size the baseline ran at (--baseline-max)",
        },
    }
    if not ok:
        out["note"] = f"no size >= {TARGET_EVENTS:,} events in this run: wall and RSS targets not judged"
    return out


# -- helpers -------------------------------------------------------------------------------


def _stage(run: Measured) -> dict[str, Any]:
    return {
        "wall_s": run.wall_s,
        "peak_rss_mib": run.peak_rss_mib,
        "cpu_user_s": run.user_s,
        "cpu_sys_s": run.sys_s,
    }


def _records_read(report: dict[str, Any]) -> int:
    return int(report["records_read"])


def _ingest_counts(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("records_read", "clean", "quarantined", "duplicates", "excluded_no_consent")
    return {k: report.get(k) for k in keys}


def _features_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}


def _events_file(raw_dir: Path, fmt: str) -> Path:
    suffix = ".parquet" if fmt == "parquet" else ".jsonl"
    preferred = raw_dir / f"events{suffix}"
    if preferred.exists():
        return preferred
    found = sorted(p for p in raw_dir.iterdir() if p.name.startswith("events"))
    if not found:
        raise RuntimeError(f"carryon simulate wrote no events file in {raw_dir.name}")
    return found[0]


def _cta_table(features_dir: Path) -> Path:
    for name in ("cta.parquet", "cta_train.parquet"):
        if (features_dir / name).exists():
            return features_dir / name
    found = sorted(features_dir.rglob("cta*.parquet"))
    if not found:
        raise RuntimeError(f"no CTA table (cta*.parquet) in the features output {features_dir.name}")
    return found[0]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _simulator_hash() -> str:
    """Short hash of the simulator's code: a changed simulator invalidates the cache."""
    digest = hashlib.sha256()
    sources = [*sorted((ROOT / "features" / "simulate").rglob("*.py")), ROOT / "features" / "schema.py"]
    for path in sources:
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "polars": pl.__version__,
        "pandas": _version("pandas"),
        "pyarrow": _version("pyarrow"),
        "numpy": np.__version__,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Data-path benchmark: carryon ingest + features vs a naive pandas baseline (JSON on stdout).",
    )
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="event counts to benchmark (default: 1000000 10000000)")
    parser.add_argument("--baseline-max", type=int, default=1_000_000,
                        help="run the pandas baseline only up to this many events (default: 1000000)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".cache",
                        help="cache of simulated events and run outputs (default: benchmarks/.cache)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"simulator seed (default: {DEFAULT_SEED})")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                        help="params.yaml for the stages (default: the project's)")
    args = parser.parse_args(argv)
    if any(n < 1_000 for n in args.events):
        parser.error("--events: each size must be >= 1000 (simulate.scale >= 0.001)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(workdir, args.seed, args.params.resolve())
    sizes = sorted(set(args.events))
    started = time.perf_counter()

    results = [bench.attempt(bench_size, size, args.baseline_max) for size in sizes]
    jsonl = bench.attempt(bench_jsonl, sizes[0])
    report = {
        "benchmark": "data_path",
        "seed": args.seed,
        "workdir": bench.rel(workdir) if workdir.is_relative_to(ROOT) else workdir.name,
        "machine": machine(),
        "baseline_max_events": args.baseline_max,
        "baseline_note": (
            "naive pandas: read_parquet, per-type required-field validation, drop_duplicates(event_id), "
            "consent ledger per viewer, hmac pseudonymization per row, then groupby(session).apply of a "
            "Python walk over each session's events; run only up to --baseline-max events because it is "
            "slow at 10M. It computes only the CTA context features; carryon features also builds the "
            "labels, item features and the bonus table, so the ratio is conservative"
        ),
        "sizes": results,
        "jsonl_ingest": jsonl,
        "targets": targets(results),
        "total_benchmark_s": time.perf_counter() - started,
    }
    print(json.dumps(report, indent=2))
    if any("error" in entry for entry in [*results, jsonl]):
        return 1
    failed = [s["events_requested"] for s in results if not s["baseline"].get("cta_equal", {"passed": True})["passed"]]
    if failed:
        log(f"baseline CTA table differs from the pipeline's at {failed}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
