"""A local S3-compatible store for tests: ``moto_server`` in a subprocess on 127.0.0.1, behind a TCP gate.

    server = S3Server(tmp / "s3").launch()      # clients use server.url
    server.stop()                               # the store becomes unreachable (connections refused)
    server.start()                              # reachable again on the same port, with the same objects
    server.close()

moto keeps its objects in memory, so a real restart would empty every bucket; stopping the gate instead
cuts the network path as an outage would, and the data is still there when the store comes back. Every
request moto served is in ``server.log`` (werkzeug's access log), in the order it arrived.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (/[^ ]*) HTTP/[0-9.]+" (\d{3})')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Gate:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target that can refuse connections and cut open ones."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._thread is not None:
            self._thread.join()
        listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


class S3Server:
    """moto's S3 in server mode on loopback (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "moto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._gate: _Gate | None = None
        self._markers = 0

    @property
    def url(self) -> str:
        assert self._gate is not None, "launch() first"
        return f"http://127.0.0.1:{self._gate.port}"

    def launch(self, timeout_s: float = 30.0) -> S3Server:
        """Start moto on a free port, wait until it answers, open the gate in front of it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self._answers(port):
            if self._process.poll() is not None:
                tail = self.log.read_text()[-2000:]
                raise RuntimeError(f"moto_server exited with {self._process.returncode}: {tail}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"moto_server did not answer on port {port} within {timeout_s:g} s")
            time.sleep(0.1)
        self._gate = _Gate(port)
        self._gate.open()
        return self

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """The store becomes unreachable: new connections are refused, open ones are cut. Objects are kept."""
        assert self._gate is not None
        self._gate.close()

    def start(self) -> None:
        """Reachable again, on the same port."""
        assert self._gate is not None
        self._gate.open()

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def env(self) -> dict[str, str]:
        """Environment for a client process: dummy credentials and this endpoint."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def client(self) -> Any:
        boto3 = importlib.import_module("boto3")

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_DEFAULT_REGION"])

    def public_bucket(self, bucket: str, prefix: str = "") -> str:
        """Create ``bucket`` with anonymous GET allowed under ``prefix``; return its plain-HTTP base URL."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        resource = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
        policy = {"Version": "2012-10-17", "Statement": [{"Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
                                                          "Action": "s3:GetObject", "Resource": resource}]}
        client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        return f"{self.url}/{bucket}" + (f"/{prefix}" if prefix else "")

    def log_mark(self) -> int:
        return len(self.log.read_bytes())

    def requests_since(self, mark: int, method: str = "PUT") -> list[tuple[str, int]]:
        """(path, status) of each ``method`` request moto logged after ``mark``, in arrival order.

        A marker request goes last and is waited for, so every earlier request's line is in the log.
        """
        self._markers += 1
        marker = f"/log-marker-{os.getpid()}-{self._markers}"
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(self.url + marker, timeout=5).close()
        deadline = time.monotonic() + 10
        while f"GET {marker} " not in (text := self.log.read_bytes()[mark:].decode("utf-8", "replace")):
            assert time.monotonic() < deadline, f"moto never logged {marker}"
            time.sleep(0.02)
        return [(m.group(2), int(m.group(3))) for m in _REQUEST.finditer(text) if m.group(1) == method]
