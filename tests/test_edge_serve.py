"""``carryon edge serve`` over real loopback HTTP, ``carryon edge decide``, and the benchmark scripts' smoke runs."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.decisions import read_decisions
from tests.test_edge_runtime import build_bundle, session, set_manifest

ROOT = Path(__file__).resolve().parents[1]
CARRYON = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("serve"))


def _install(bundle: Path, home: Path, creator: str) -> None:
    """Lay the bundle out as an edge home does (contract B): bundles/<creator>/<v>, current/<creator> symlink."""
    import shutil

    target = home / "bundles" / creator / "3"
    shutil.copytree(bundle, target)
    (home / "current").mkdir(parents=True)
    os.symlink(f"../bundles/{creator}/3", home / "current" / creator)


def _creator(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["creator_id"])


class Server:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([*CARRYON, "edge", "serve", "--port", "0", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"server did not start: {line!r} {err}")
        self.banner = line
        self.port = int(line.split("http://127.0.0.1:")[1].split()[0])

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data)
        finally:
            conn.close()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=15)
        return err


@pytest.fixture(scope="module")
def served(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    home = tmp_path_factory.mktemp("home")
    _install(bundle, home, _creator(bundle))
    server = Server(["--home", str(home), "--creator", _creator(bundle), "--seed", "3", "--max-body", "8192"])
    yield server, home
    err = server.stop()
    assert "Traceback" not in err, err


def test_health_reports_the_installed_bundle(served: tuple[Server, Path], bundle: Path) -> None:
    server, _ = served
    status, headers, body = server.request("GET", "/health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert (body["creator_id"], body["bundle_version"], body["personalization"]) == (_creator(bundle), 3, True)
    assert body["models"]["cta"]["format"] == "ort" and body["models"]["bonus-ranker"]["version"] == 1
    assert body["loaded_at"].endswith("Z")
    assert "server" not in headers


def test_decide_answers_and_logs_consented_decisions_only(served: tuple[Server, Path], bundle: Path) -> None:
    server, home = served
    log = home / "decisions" / f"{_creator(bundle)}.jsonl"
    before = len(read_decisions(log).events) if log.exists() else 0
    status, _, body = server.request("POST", "/decide", json.dumps(session()).encode(),
                                     {"content-type": "application/json"})
    assert status == 200 and body["personalized"] is True and body["reason"] == "consent"
    assert len(body["cta"]["scores"]) == 8
    assert body["cta"]["variant"] in body["cta"]["scores"] and 0 < body["cta"]["propensity"] <= 1
    assert len(body["bonuses"]["order"]) == 20 == len(body["bonuses"]["scores"])
    assert len(read_decisions(log).events) == before + 21
    status, _, body = server.request("POST", "/decide", json.dumps(session(consent=False)).encode())
    assert status == 200 and body["personalized"] is False and body["cta"]["scores"] is None
    assert body["cta"]["propensity"] == 1.0 and body["at"] is None
    assert len(read_decisions(log).events) == before + 21  # nothing logged without consent
    assert "raw-viewer-7" not in log.read_text()


@pytest.mark.parametrize(("method", "path", "body", "status", "match"), [
    ("POST", "/decide", b"{not json", 400, "request body is not JSON"),
    ("POST", "/decide", b"\xff\xfe", 400, "request body is not JSON"),
    ("POST", "/decide", json.dumps({"consent": {"personalization": True}, "at": "noon"}).encode(), 400,
     "session at: not an ISO 8601 time"),
    ("POST", "/decide", b"[1]", 400, "session: expected a JSON object"),
    ("POST", "/decide", b"[" * 6000, 400, "nests too deeply"),
    ("POST", "/decide", b"x" * 9000, 413, "request body over 8192 bytes"),
    ("GET", "/decide", None, 405, "/decide takes POST, not GET"),
    ("POST", "/health", b"{}", 405, "/health takes GET, not POST"),
    ("GET", "/admin", None, 404, "no such endpoint"),
])
def test_bad_requests_get_a_clear_json_error(served: tuple[Server, Path], method: str, path: str, body: bytes | None,
                                              status: int, match: str) -> None:
    server, _ = served
    got, headers, answer = server.request(method, path, body)
    assert got == status and match in answer["error"], answer
    assert "Traceback" not in answer["error"]
    if status == 405:
        assert headers["allow"] in ("GET", "POST")


def test_a_body_streamed_past_the_limit_without_length_is_refused(served: tuple[Server, Path]) -> None:
    server, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("POST", "/decide")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(3):
            chunk = b"y" * 4000
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 413 and b"over 8192 bytes" in resp.read()
    finally:
        conn.close()


def test_the_listening_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    import socket

    from edge.serve import ServeError, listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # else asyncio skips TCP_NODELAY: ~40 ms per response
        with pytest.raises(ServeError, match=r"cannot listen on 127\.0\.0\.1:"):
            listen("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_serve_refuses_a_missing_bundle_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([*CARRYON, "edge", "serve", "--home", str(tmp_path), "--creator", "cr-01", "--port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("carryon: error: ") and "no bundle installed for creator 'cr-01'" in proc.stderr


def test_cli_decide_round_trip_from_file_and_stdin(bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    creator = _creator(bundle)
    _install(bundle, home, creator)
    path = tmp_path / "session.json"
    path.write_text(json.dumps(session()))
    args = ["--home", str(home), "--creator", creator, "--seed", "4"]
    out = subprocess.run([*CARRYON, "edge", "decide", str(path), *args, "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    first = json.loads(out.stdout)
    assert first["personalized"] and first["bundle_version"] == 3 and len(first["bonuses"]["order"]) == 20
    again = subprocess.run([*CARRYON, "edge", "decide", "-", *args, "--json"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, check=True, input=path.read_text())
    assert json.loads(again.stdout) == first  # same seed, same session: same decision
    assert len(read_decisions(home / "decisions" / f"{creator}.jsonl").events) == 42
    human = subprocess.run([*CARRYON, "edge", "decide", str(path), *args, "--no-log"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True)
    assert f"show {first['cta']['variant']}" in human.stdout and "(personalized)" in human.stdout
    assert len(read_decisions(home / "decisions" / f"{creator}.jsonl").events) == 42


def test_cli_decide_with_a_bundle_dir_logs_nothing_without_home(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    set_manifest(copy, personalization=False)
    path = tmp_path / "session.json"
    path.write_text(json.dumps(session()))
    out = subprocess.run([*CARRYON, "edge", "decide", str(path), "--bundle", str(copy), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout)["reason"] == "kill_switch"
    assert not list(tmp_path.rglob("*.jsonl"))


@pytest.mark.parametrize(("args", "stdin", "match"), [
    (["missing.json"], None, "missing.json: cannot read the session"),
    (["-"], "{oops", "-: not a JSON session"),
    (["-"], json.dumps({"consent": {"personalization": True}, "events": "x"}), "session events: expected a list"),
])
def test_cli_decide_refuses_bad_input_in_one_line(bundle: Path, tmp_path: Path, args: list[str], stdin: str | None,
                                                   match: str) -> None:
    proc = subprocess.run([*CARRYON, "edge", "decide", *args, "--bundle", str(bundle)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, input=stdin,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and match in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


def test_cli_needs_one_source_of_bundle(bundle: Path) -> None:
    proc = subprocess.run([*CARRYON, "edge", "decide", "-", "--bundle", str(bundle), "--creator", "cr-01"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, input="{}")
    assert proc.returncode == 1 and "not both" in proc.stderr


# --- benchmark smoke runs (tiny; no timing assertions) -----------------------------------------------------

@pytest.mark.slow
def test_serve_load_quick_prints_its_figures(bundle: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/serve_load.py", "--quick", "--bundle", str(bundle)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout)
    load = result["load"]
    assert {"offered_rps", "achieved_rps", "requests", "errors", "latency_ms", "clients"} <= set(load)
    assert {"p50", "p95", "p99"} <= set(load["latency_ms"]) and load["errors"] == 0 and load["requests"] > 0
    assert {"median_ms", "runs_ms"} <= set(result["start_to_first_decision"])
    assert set(result["targets"]) == {"p99_ms_under_10", "no_errors", "start_to_first_decision_under_1s"}


@pytest.mark.slow
def test_compare_decision_quick_prints_its_figures(bundle: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/compare_decision.py", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout)
    assert {"models", "edge_decision", "targets", "settings"} <= set(result)
    for model in result["models"]:
        assert {"kind", "family", "version", "rows", "native_us", "onnx_us"} <= set(model)
        assert {"p50", "p95", "p99"} <= set(model["native_us"])
    decision = result["edge_decision"]
    assert {"edge_runtime_us", "native_us", "speedup_p50", "speedup_p99"} <= set(decision)
