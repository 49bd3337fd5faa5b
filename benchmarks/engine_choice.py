"""Engine choice: polars vs duckdb on the core of ``carryon features``, same data, same answer.

Usage (from the project root, with the project's venv)::

    python benchmarks/engine_choice.py                       # 10M events (generated once, cached)
    python benchmarks/engine_choice.py --events 200000       # a quick check
    python benchmarks/engine_choice.py --clean data/clean    # on ingested events instead

The core of the feature build is the point-in-time part: for every CTA impression and
bonus slate row, the session's counts of each event type strictly before it, its
distinct slates before it, its last chat before it, and the viewer's history with the
creator over sessions that ended before this session began. The benchmark computes
exactly that twice on the same clean-event partitions:

* **polars**: the engine ``features.batch`` uses (per partition: one narrow sort,
  cumulative sums, gathers, an as-of join), with the in-memory engine;
* **duckdb**: one SQL query over all partitions: window aggregates over
  ``RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING`` (strictly before, integer µs),
  per-session aggregates and an ``ASOF JOIN`` on ``start > end`` for the history.

Each engine runs in its own child process (``_measure.py``: wall time and peak RSS of
that process alone; the data are generated in another child, so the parent stays
small); the child times its own read + compute (``compute_s``, without the interpreter
start) and writes its result; the parent checks both results are equal row
for row (sorted by event id) before reporting. Data: ``tests/eventgen.py`` sessions
(fixed ``--seed``), written once under ``--workdir`` (default ``benchmarks/.cache``).

Stdout is ONE JSON document: the data size, per engine ``compute_s``, ``wall_s``,
``cpu_s`` and ``peak_rss_mib``, ``equal`` (the check), ``duckdb_over_polars`` (the ratio
of compute seconds) and ``faster``. Exit status 2 if the results differ.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

COUNTS = {"sess_chats": "chat", "sess_reactions": "reaction", "sess_cta_impressions": "cta_impression",
          "sess_cta_clicks": "cta_click", "sess_bonus_claims": "bonus_claim", "sess_enrolls": "enroll"}
RESULT = ["event_id", *COUNTS, "sess_slates", "last_chat_t", "hist_sessions", "hist_enrolls",
          "hist_claims", "hist_cta_clicks"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def data_dir(workdir: Path, events: int, seed: int) -> Path:
    return workdir / f"engine-choice-{events}-seed{seed}" / "clean"


def generate(clean: Path, events: int, seed: int) -> None:
    """Child process: write about ``events`` generated clean events to ``clean``."""
    import importlib
    import shutil

    eventgen = importlib.import_module("eventgen")  # tests/eventgen.py
    frame = eventgen.generate_events(max(100, round(events / 12.5)), seed=seed, creators=6)
    tmp = clean.with_name("clean.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    eventgen.write_clean(frame, tmp, partitions=16)
    tmp.rename(clean)


def run_polars(clean: Path) -> pl.DataFrame:
    """The features.batch engine's point-in-time core, partition by partition."""
    from features.batch._events import partition_files, scan_partition
    from features.batch._prepare import ENGINE, prepare
    from features.batch._session import decision_state, history

    parts = []
    for path in partition_files(clean):
        lazy, _ = scan_partition(path)
        prepared = prepare(lazy)
        state = decision_state(prepared.order, ("cta_impression", "bonus_impression")).collect(engine=ENGINE)
        ids = prepared.events.select(pl.col("event_id", "sid").gather(state.get_column("r")))
        rows = pl.concat([ids, state.drop("r", "type", "t")], how="horizontal")
        hist = history(prepared).collect(engine=ENGINE)
        rows = rows.join(hist, on="sid", how="left").drop("sid")
        parts.append(rows.with_columns(pl.col(c).fill_null(0) for c in hist.columns if c != "sid"))
    return pl.concat(parts)


DUCKDB_SQL = """
WITH ev AS (
    SELECT event_id, session_key, viewer_key, creator_id, type, slate_id, epoch_us(ts) AS t
    FROM read_parquet('{files}')
),
slate_starts AS (  -- a slate counts from its first showing in the session
    SELECT session_key, min(t) AS t FROM ev WHERE type = 'bonus_impression'
    GROUP BY session_key, slate_id
),
marked AS (
    SELECT event_id, session_key, type, t, 0 AS slate FROM ev
    UNION ALL
    SELECT NULL, session_key, NULL, t, 1 FROM slate_starts
),
state AS (
    SELECT event_id, session_key, type,
        {counts},
        coalesce(sum(slate) OVER before, 0) AS sess_slates,
        max(t) FILTER (WHERE type = 'chat') OVER before AS last_chat_t
    FROM marked
    WINDOW before AS (PARTITION BY session_key ORDER BY t
                      RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
sessions AS (
    SELECT session_key, any_value(viewer_key) AS viewer_key, any_value(creator_id) AS creator_id,
        min(t) AS start, max(t) AS "end",
        count(*) FILTER (WHERE type = 'enroll') AS enrolls,
        count(*) FILTER (WHERE type = 'bonus_claim') AS claims,
        count(*) FILTER (WHERE type = 'cta_click') AS clicks
    FROM ev GROUP BY session_key
),
ended AS (  -- running sums by end time; sessions ending at one instant are peers
    SELECT viewer_key, creator_id, "end",
        count(*) OVER upto AS hist_sessions, sum(enrolls) OVER upto AS hist_enrolls,
        sum(claims) OVER upto AS hist_claims, sum(clicks) OVER upto AS hist_cta_clicks
    FROM sessions
    WINDOW upto AS (PARTITION BY viewer_key, creator_id ORDER BY "end"
                    RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
history AS (
    SELECT s.session_key,
        coalesce(e.hist_sessions, 0) AS hist_sessions, coalesce(e.hist_enrolls, 0) AS hist_enrolls,
        coalesce(e.hist_claims, 0) AS hist_claims, coalesce(e.hist_cta_clicks, 0) AS hist_cta_clicks
    FROM sessions s ASOF LEFT JOIN ended e
      ON s.viewer_key = e.viewer_key AND s.creator_id = e.creator_id AND s.start > e."end"
)
SELECT state.event_id, {count_names}, state.sess_slates, state.last_chat_t,
       history.hist_sessions, history.hist_enrolls, history.hist_claims, history.hist_cta_clicks
FROM state JOIN history USING (session_key)
WHERE state.type IN ('cta_impression', 'bonus_impression')
"""


def run_duckdb(clean: Path, threads: int) -> pl.DataFrame:
    """The same core as one duckdb SQL query over all partitions."""
    import duckdb

    counts = ",\n        ".join(
        f"count(*) FILTER (WHERE type = '{kind}') OVER before AS {name}" for name, kind in COUNTS.items()
    )
    sql = DUCKDB_SQL.format(files=str(clean / "events" / "part=*" / "data.parquet"), counts=counts,
                            count_names=", ".join(f"state.{n}" for n in COUNTS))
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET preserve_insertion_order = false")
    return pl.from_arrow(con.sql(sql).to_arrow_table())  # type: ignore[return-value]


def normalized(frame: pl.DataFrame) -> pl.DataFrame:
    """Integer columns in RESULT order, sorted by event id; no last chat stays null."""
    return frame.select(pl.col("event_id"), pl.all().exclude("event_id").cast(pl.Int64)).select(RESULT).sort(
        "event_id")


def worker(engine: str, clean: Path, result: Path, threads: int) -> None:
    """Child process: time one engine's read + compute, write its result."""
    start, cpu = time.perf_counter(), time.process_time()
    frame = run_polars(clean) if engine == "polars" else run_duckdb(clean, threads)
    compute_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    normalized(frame).write_parquet(result)
    print(json.dumps({"compute_s": round(compute_s, 3), "compute_cpu_s": round(cpu_s, 3),
                      "rows": frame.height}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="about how many events to generate")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--clean", type=Path, help="use these clean events (part=NN/data.parquet) instead")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".cache")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="duckdb threads")
    parser.add_argument("--worker", choices=("generate", "polars", "duckdb"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "generate":
        generate(args.clean, args.events, args.seed)
        return 0
    if args.worker:
        worker(args.worker, args.clean, args.result, args.threads)
        return 0

    from _measure import measure

    clean = args.clean or data_dir(args.workdir, args.events, args.seed)
    if not args.clean and not (clean / "events").is_dir():
        # In a child: its memory must not count in the engines' peak RSS (Linux carries a
        # parent's high-water mark into its children).
        log(f"generating about {args.events:,} events (seed {args.seed}) ...")
        measure([sys.executable, __file__, "--worker", "generate", "--clean", str(clean),
                 "--events", str(args.events), "--seed", str(args.seed)]).check("generate")
    files = sorted((clean / "events").glob("part=*/data.parquet"))
    events = pl.scan_parquet(files).select(pl.len()).collect().item()
    out: dict[str, Any] = {"events": events, "partitions": len(files), "threads": args.threads,
                           "cpu_count": os.cpu_count(), "polars_version": pl.__version__}
    results = {}
    for engine in ("polars", "duckdb"):
        log(f"{engine} on {events:,} events ...")
        result = args.workdir / f"engine-choice-result-{engine}.parquet"
        run = measure([sys.executable, __file__, "--worker", engine, "--clean", str(clean),
                       "--result", str(result), "--threads", str(args.threads)]).check(engine)
        figures = json.loads(run.stdout)
        out[engine] = {**figures, "wall_s": round(run.wall_s, 3), "cpu_s": round(run.user_s + run.sys_s, 3),
                       "peak_rss_mib": round(run.peak_rss_mib)}
        results[engine] = pl.read_parquet(result)
        result.unlink()
    import duckdb

    out["duckdb_version"] = duckdb.__version__
    out["decisions"] = results["polars"].height
    out["equal"] = results["polars"].equals(results["duckdb"])
    ratio = out["duckdb"]["compute_s"] / out["polars"]["compute_s"]
    out["duckdb_over_polars"] = round(ratio, 2)
    out["faster"] = "polars" if ratio > 1 else "duckdb"
    print(json.dumps(out, indent=2))
    return 0 if out["equal"] else 2


if __name__ == "__main__":
    sys.exit(main())
