"""A loopback HTTP mirror for tests: serves a directory with Range support and misbehaves on request.

``mirror.behave(mode, match)`` makes requests whose path contains ``match`` (all when empty) ``ok``, ``error``
(503), ``stall`` (headers, then silence), ``trickle`` (one byte at a time), ``alter`` (one byte flipped),
``cut`` (half the body, then close), ``endless`` (the file, then junk without end) or ``no-range`` (Range
ignored). ``mirror.requests`` records (path, Range header, status) of every request.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

MODES = ("ok", "error", "stall", "trickle", "alter", "cut", "endless", "no-range")


class Mirror:
    """One mirror; ``url`` is its base, ``root`` the directory it serves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None, int]] = []
        self.rules: list[tuple[str, str, int | None]] = []  # (match, mode, remaining uses or None)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                mirror._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def behave(self, mode: str, match: str = "", times: int | None = None) -> None:
        """Apply ``mode`` to requests whose path contains ``match`` (the newest rule wins; ``times`` uses)."""
        assert mode in MODES, mode
        with self._lock:
            self.rules.insert(0, (match, mode, times))

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _mode(self, path: str) -> str:
        with self._lock:
            for i, (match, mode, times) in enumerate(self.rules):
                if match in path:
                    if times is not None:
                        if times <= 0:
                            continue
                        self.rules[i] = (match, mode, times - 1)
                    return mode
        return "ok"

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(handler.path).path)
        mode = self._mode(path)
        rng = handler.headers.get("Range")
        file = (self.root / path.lstrip("/")).resolve()
        if mode == "error":
            return self._reply(handler, path, rng, 503, b"busy")
        if not file.is_file() or self.root.resolve() not in file.parents:
            return self._reply(handler, path, rng, 404, b"not found")
        data = file.read_bytes()
        status, start = 200, 0
        match = re.match(r"^bytes=(\d+)-(\d*)$", rng or "")
        if match and mode != "no-range":
            start = int(match.group(1))
            if start >= len(data):
                return self._reply(handler, path, rng, 416, b"")
            status = 206
        body = data[start:]
        if mode == "alter" and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
        self.requests.append((path, rng, status))
        handler.send_response(status)
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if mode != "endless":
            handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._body(handler, mode, body)

    def _body(self, handler: BaseHTTPRequestHandler, mode: str, body: bytes) -> None:
        out = handler.wfile
        if mode == "stall":
            out.write(body[:1])
            out.flush()
            self._stop.wait(30)
        elif mode == "trickle":
            for i in range(len(body)):
                if self._stop.is_set():
                    return
                out.write(body[i:i + 1])
                out.flush()
                time.sleep(0.02)
        elif mode == "cut":
            out.write(body[: len(body) // 2])
            out.flush()
            handler.close_connection = True
        elif mode == "endless":
            out.write(body)
            junk = b"\0" * 65536
            for _ in range(2000):  # ~128 MiB: far past any cap, finite so a broken client cannot hang CI
                if self._stop.is_set():
                    return
                out.write(junk)
        else:
            out.write(body)

    def _reply(self, handler: BaseHTTPRequestHandler, path: str, rng: str | None, status: int, body: bytes) -> None:
        self.requests.append((path, rng, status))
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
