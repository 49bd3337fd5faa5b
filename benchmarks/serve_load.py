"""``carryon edge serve`` under load over loopback, and the edge process's start-to-first-decision time.

Usage (from the project root, with the project's venv)::

    python benchmarks/serve_load.py                        # bundle of the project's candidates, 10 s at 500/s
    python benchmarks/serve_load.py --bundle DIR --rate 500 --clients 20 --duration 10
    python benchmarks/serve_load.py --quick                # 2 s, checks the script works

Starts ``carryon edge serve`` (decision log on, in a temp home) as a subprocess on
127.0.0.1, then a second process (this script with ``--client``) offers ``rate`` requests
per second from ``clients`` concurrent keep-alive connections (asyncio streams, HTTP/1.1)
for ``duration`` seconds: an open-loop schedule, request ``i`` due at ``i / rate``; each
client takes the next due request, waits for its time, sends it and reads the answer.
Bounded in count (rate x duration) and time (duration + 10 s). Sessions cycle through
generated consented ones, with every fifth one without consent. Latency is measured from
sending to the whole answer (``latency_ms``) and from the request's due time
(``latency_from_due_ms``: includes waiting for a free client, so a saturated server shows
up there). Errors are non-200 answers, broken connections and requests not sent in time.

Then ``start_to_first_decision``: spawn ``python -c`` that imports the runtime, loads the
bundle and decides once, timed from spawn to its answer on stdout (median of ``--starts``).
Without ``--bundle``/``--home`` the bundle is a directory built from the project's
candidates as ``compare_decision.py`` builds it. Stdout is ONE JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 3)}


def request_bodies(n: int, seed: int) -> list[bytes]:
    from benchmarks.compare_decision import make_sessions

    sessions = make_sessions(n, seed)
    for i, s in enumerate(sessions):
        if i % 5 == 4:
            s["consent"] = {"personalization": False}
        s["session_id"] = f"s-{i}"
        s["drop_id"] = "d-1"
    return [json.dumps(s).encode() for s in sessions]


# --- the load generator (runs in its own process) ---------------------------------------------------------

async def _client(port: int, bodies: list[bytes], due: list[float], next_index: list[int], start: float,
                  deadline: float, out: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    try:
        while True:
            i = next_index[0]
            if i >= len(due):
                return
            next_index[0] += 1
            wait = start + due[i] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if loop.time() > deadline:
                out["not_sent"] += 1
                continue
            body = bodies[i % len(bodies)]
            head = (f"POST /decide HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            sent = loop.time()
            try:
                writer.write(head + body)
                await writer.drain()
                header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
                status = int(header.split(b" ", 2)[1])
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await asyncio.wait_for(reader.readexactly(length), 5.0)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                out["errors"] += 1
                out["error_kinds"][type(e).__name__] = out["error_kinds"].get(type(e).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            done = loop.time()
            if status != 200:
                out["errors"] += 1
                out["error_kinds"][f"http_{status}"] = out["error_kinds"].get(f"http_{status}", 0) + 1
            out["latency_ms"].append((done - sent) * 1e3)
            out["from_due_ms"].append((done - start - due[i]) * 1e3)
    finally:
        writer.close()


async def _load(port: int, rate: float, clients: int, duration: float, bodies: list[bytes]) -> dict[str, Any]:
    count = int(rate * duration)
    due = [i / rate for i in range(count)]
    out: dict[str, Any] = {"errors": 0, "not_sent": 0, "error_kinds": {}, "latency_ms": [], "from_due_ms": []}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2  # connections open first
    deadline = start + duration + 10.0
    shared = [0]
    tasks = [asyncio.create_task(_client(port, bodies, due, shared, start, deadline, out)) for _ in range(clients)]
    await asyncio.wait_for(asyncio.gather(*tasks), duration + 15.0)
    elapsed = loop.time() - start
    done = len(out["latency_ms"])
    return {
        "offered_rps": rate, "clients": clients, "duration_s": duration, "requests": count, "answered": done,
        "achieved_rps": round(done / elapsed, 1), "errors": out["errors"] + out["not_sent"],
        "error_kinds": {**out["error_kinds"], **({"not_sent_in_time": out["not_sent"]} if out["not_sent"] else {})},
        "latency_ms": percentiles(out["latency_ms"]), "latency_from_due_ms": percentiles(out["from_due_ms"]),
    }


def client_main(args: argparse.Namespace) -> int:
    bodies = request_bodies(200, args.seed)
    result = asyncio.run(_load(args.port, args.rate, args.clients, args.duration, bodies))
    print(json.dumps(result))
    return 0


# --- the orchestrator ----------------------------------------------------------------------------------

def start_server(bundle: Path, home: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "edge", "serve", "--bundle", str(bundle),
                             "--home", str(home), "--port", "0", "--seed", "1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise SystemExit(f"edge serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, int(line.split("http://127.0.0.1:")[1].split()[0])


def start_to_first_decision(bundle: Path, runs: int) -> dict[str, Any]:
    session = json.loads(request_bodies(1, 7)[0])
    code = (
        "import json, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from edge.runtime import EdgeRuntime\n"
        "t1 = time.perf_counter()\n"
        "runtime = EdgeRuntime.load(sys.argv[1])\n"
        "t2 = time.perf_counter()\n"
        "decision = runtime.decide(json.loads(sys.argv[2]))\n"
        "t3 = time.perf_counter()\n"
        "print(json.dumps({'variant': decision.variant, 'import_ms': (t1 - t0) * 1e3, 'load_ms': (t2 - t1) * 1e3,"
        " 'decide_ms': (t3 - t2) * 1e3}), flush=True)\n"
    )
    walls, parts = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, str(bundle), json.dumps(session)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        walls.append((time.perf_counter() - start) * 1e3)
        proc.wait(timeout=30)
        parts.append(json.loads(line))
    return {"runs_ms": [round(w, 1) for w in walls], "median_ms": round(statistics.median(walls), 1),
            "in_process_median_ms": {k: round(statistics.median(p[k] for p in parts), 2)
                                     for k in ("import_ms", "load_ms", "decide_ms")}}


def default_bundle(work: Path) -> Path:
    from benchmarks.compare_decision import bundle_dir, project_source

    return bundle_dir(project_source(), work / "bundle")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle directory [default: built from the project's candidates]")
    parser.add_argument("--rate", type=float, default=500.0, help="requests offered per second")
    parser.add_argument("--clients", type=int, default=20, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of offered load")
    parser.add_argument("--starts", type=int, default=5, help="runs of the start-to-first-decision measurement")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--quick", action="store_true", help="2 s at 100/s, 2 starts: checks the script works")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    if args.quick:
        args.rate, args.duration, args.starts = 100.0, 2.0, 2

    with tempfile.TemporaryDirectory(prefix="carryon-serve-load-") as tmp:
        work = Path(tmp)
        bundle = args.bundle if args.bundle is not None else default_bundle(work)
        log("starting edge serve ...")
        server, port = start_server(bundle, work / "home")
        try:
            log(f"offering {args.rate:g} requests/s from {args.clients} clients for {args.duration:g} s ...")
            client = subprocess.run(
                [sys.executable, __file__, "--client", "--port", str(port), "--rate", str(args.rate), "--clients",
                 str(args.clients), "--duration", str(args.duration), "--seed", str(args.seed)],
                cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 60)
            if client.returncode != 0:
                raise SystemExit(f"load client failed: {client.stderr[-2000:]}")
            load = json.loads(client.stdout)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                _, server_err = server.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server_err = "(killed)"
        logged = sum(1 for _ in (work / "home" / "decisions").glob("*.jsonl"))
        log("start to first decision ...")
        starts = start_to_first_decision(bundle, args.starts)
    result = {
        "machine": {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count()},
        "load": load, "server_stderr_tail": server_err[-500:], "decision_logs": logged,
        "start_to_first_decision": starts,
        "targets": {"p99_ms_under_10": load["latency_ms"]["p99"] < 10.0, "no_errors": load["errors"] == 0,
                    "start_to_first_decision_under_1s": starts["median_ms"] < 1000.0},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
