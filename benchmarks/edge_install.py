"""Edge install benchmark: verify + install of the default bundle, and edge start to first decision.

Usage (from the project root, with the project's venv)::

    python benchmarks/edge_install.py                    # 7 installs, 5 cold starts
    python benchmarks/edge_install.py --runs 3 --starts 3

The bundle is the one `dvc repro` built (``data/bundle/<creator>/<version>.tar``, verified
with ``--key``, default the local development key ``.carryon/keys/dev-signing.pub``); when
there is none, `carryon bundle build --alias candidate` builds one from ``data/`` into the
workdir, signed with a key made there. Figures, each the median of the runs with every
run listed:

* ``verify_install_ms``: what `carryon edge pull` does after the download, in this process
  with its imports done first (edge.verify, model_signing, onnx: reported apart as
  ``imports_ms``, measured in a fresh interpreter): safe unpack of the tar, verification
  (key, file set, digests, OpenSSF model signature, spec, operator allowlist), then the
  atomic switch of ``current`` and ``state.json``. Target: under 200 ms.
* ``golden_child_ms``: the golden vectors in a child process (``python -m edge.golden``),
  reported separately, as the target asks.
* ``start_to_first_decision_ms``: spawn of a fresh interpreter that loads the runtime from
  the installed home and decides once for a consented session, to the decision on its
  stdout. Target: under 1 s. ``cli_decide_ms``: the same through `carryon edge decide`.

Stdout is ONE JSON document (no paths of this machine); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

TARGET_VERIFY_INSTALL_MS = 200.0
TARGET_START_TO_DECISION_MS = 1000.0
SESSION = {"consent": {"personalization": True}, "at": "2025-09-01T18:02:00Z", "session_id": "bench", "events": [
    {"type": "join", "ts": "2025-09-01T18:00:00Z", "device": "phone", "channel": "popup",
     "drop_started_at": "2025-09-01T17:55:00Z", "local_pickup": True},
    {"type": "chat", "ts": "2025-09-01T18:00:30Z"},
    {"type": "reaction", "ts": "2025-09-01T18:01:00Z"},
]}
# A fresh interpreter: load the installed bundle, decide once, print the decision (timed by the parent).
_FIRST_DECISION = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from edge.runtime import EdgeRuntime, bundle_for
t1 = time.perf_counter()
runtime = EdgeRuntime.load(bundle_for(Path(sys.argv[1]), sys.argv[2]), seed=1)
t2 = time.perf_counter()
decision = runtime.decide(json.loads(sys.argv[3]))
t3 = time.perf_counter()
print(json.dumps({"variant": decision.variant, "imports_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3,
                  "decide_ms": (t3 - t2) * 1e3}), flush=True)
"""
_IMPORTS = """
import time
t0 = time.perf_counter()
import edge.verify, model_signing.verifying, edge._unpack, edge._install
print((time.perf_counter() - t0) * 1e3)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def default_bundle(key: Path) -> tuple[Path, Path, str] | None:
    """The newest tar `dvc repro` left in data/bundle, with the public key to check it, or None."""
    tars = sorted((ROOT / "data" / "bundle").glob("*/*.tar"), key=lambda p: (p.parent.name, int(p.stem)))
    if not tars:
        return None
    if not key.is_file():
        raise SystemExit(f"edge_install: {key.name}: the public key to verify data/bundle with is missing; "
                         "pass --key PUBLIC.pub")
    return tars[-1], key, "data/bundle (dvc repro)"


def build_bundle(workdir: Path) -> tuple[Path, Path, str]:
    """`carryon bundle build --alias candidate` from data/ into the workdir, signed with a workdir key."""
    from export.bundle import generate_keys

    keys = workdir / "keys"
    if not (keys / "bench.pem").exists():
        generate_keys(keys, "bench")
    out = workdir / "bundle"
    shutil.rmtree(out, ignore_errors=True)
    log("building a bundle from data/ (carryon bundle build --alias candidate) ...")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "bundle", "build", "--alias", "candidate", "--out",
                           str(out), "--key", str(keys / "bench.pem"), "--json"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"edge_install: carryon bundle build failed: {done.stderr.strip()[-800:]}")
    return Path(json.loads(done.stdout)["tar"]).resolve(), keys / "bench.pub", "built from data/ (candidate)"


def one_install(tar: Path, home_dir: Path, trusted: dict[str, bytes], creator: str,
                version: int) -> dict[str, float]:
    """Unpack, verify, golden child (timed apart), switch: one install into an empty home."""
    from edge._install import install_bundle, run_golden_child
    from edge._unpack import safe_unpack
    from edge.home import EdgeHome, iso
    from edge.verify import verify_bundle

    home = EdgeHome(home_dir)
    stage = home.bundles(creator) / f".tmp-{version}"
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    safe_unpack(tar, stage)
    t1 = time.perf_counter()
    verify_bundle(stage, trusted, set(), now=now)
    t2 = time.perf_counter()
    report = run_golden_child(stage, 120.0)
    t3 = time.perf_counter()
    if not report.get("ok"):
        raise SystemExit(f"edge_install: golden vectors disagree on this machine: {report}")
    install_bundle(home, creator, version, stage)
    home.update_state(creator, version=version, installed_at=iso(now), last_refresh_ok=iso(now), last_error=None)
    t4 = time.perf_counter()
    return {"unpack": (t1 - t0) * 1e3, "verify": (t2 - t1) * 1e3, "install": (t4 - t3) * 1e3,
            "verify_install": (t2 - t0 + t4 - t3) * 1e3, "golden_child": (t3 - t2) * 1e3}


def first_decision(home: Path, creator: str) -> tuple[float, dict[str, float]]:
    """Wall ms from spawning a fresh interpreter to its first decision on stdout, and its own breakdown."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _FIRST_DECISION, str(home), creator, json.dumps(SESSION)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    wall = (time.perf_counter() - start) * 1e3
    _, err = proc.communicate()
    if proc.returncode != 0 or not line:
        raise SystemExit(f"edge_install: the first-decision child failed: {err.strip()[-800:]}")
    inner = json.loads(line)
    return wall, {k: inner[k] for k in ("imports_ms", "load_ms", "decide_ms")}


def cli_decide(home: Path, creator: str, session: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "edge", "decide", str(session), "--home", str(home),
                           "--creator", creator, "--no-log", "--json"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"edge_install: carryon edge decide failed: {done.stderr.strip()[-800:]}")
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="installs to time (default 7)")
    parser.add_argument("--starts", type=int, default=5, help="cold starts to first decision (default 5)")
    parser.add_argument("--key", type=Path, default=ROOT / ".carryon" / "keys" / "dev-signing.pub",
                        help="public key of data/bundle (default: the local development key)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".cache" / "edge_install")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a bundle tar (<creator>/<version>.tar) to use instead of data/bundle; needs --key")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.starts < 1:
        parser.error("--runs and --starts must be >= 1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.bundle is not None:
        tar, public, source = args.bundle.resolve(), args.key, "given (--bundle)"
    else:
        tar, public, source = default_bundle(args.key) or build_bundle(args.workdir)
    creator, version = tar.parent.name, int(tar.stem)
    log(f"bundle {creator} v{version} ({tar.stat().st_size:,} bytes), {source}")

    imports = [float(subprocess.run([sys.executable, "-c", _IMPORTS], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3)]
    import model_signing.verifying  # noqa: F401  (imports excluded from the timings: done here, first)

    import edge._install
    import edge._unpack
    import edge.verify

    trusted = {edge.verify.key_id(public.read_bytes()): public.read_bytes()}
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="edge-install-") as tmp:
        for i in range(args.runs + 1):  # run 0 warms caches (first verification, file cache) and is dropped
            home = Path(tmp) / f"home-{i}"
            measured = one_install(tar, home, trusted, creator, version)
            if i:
                runs.append(measured)
            log(f"install {i}{' (warm-up, dropped)' if not i else ''}: " + ", ".join(
                f"{k} {v:.1f} ms" for k, v in measured.items()))
        home = Path(tmp) / f"home-{args.runs}"
        starts = [first_decision(home, creator) for _ in range(args.starts)]
        for wall, inner in starts:
            log(f"start to first decision: {wall:.0f} ms ({', '.join(f'{k} {v:.0f}' for k, v in inner.items())})")
        session = Path(tmp) / "session.json"
        session.write_text(json.dumps(SESSION))
        cli = [cli_decide(home, creator, session) for _ in range(args.starts)]
        installed = sorted(p.relative_to(home / "bundles").as_posix() for p in (home / "bundles").rglob("*")
                           if p.is_file())

    verify_install = stats([r["verify_install"] for r in runs])
    start = stats([wall for wall, _ in starts])
    result = {
        "schema": 1, "kind": "carryon-edge-install-bench",
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "os": platform.platform(terse=True)},
        "bundle": {"source": source, "creator": creator, "version": version, "tar_bytes": tar.stat().st_size,
                   "files": installed},
        "runs": args.runs,
        "verify_install_ms": verify_install,
        "phases_ms": {k: stats([r[k] for r in runs]) for k in ("unpack", "verify", "install")},
        "golden_child_ms": stats([r["golden_child"] for r in runs]),
        "imports_ms": stats(imports),
        "start_to_first_decision_ms": start,
        "first_decision_breakdown_ms": {k: stats([inner[k] for _, inner in starts])
                                        for k in ("imports_ms", "load_ms", "decide_ms")},
        "cli_decide_ms": stats(cli),
        "targets": {"verify_install_ms": TARGET_VERIFY_INSTALL_MS,
                    "start_to_first_decision_ms": TARGET_START_TO_DECISION_MS},
        "met": {"verify_install": verify_install["median"] < TARGET_VERIFY_INSTALL_MS,
                "start_to_first_decision": start["median"] < TARGET_START_TO_DECISION_MS},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
