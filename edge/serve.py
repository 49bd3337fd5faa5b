"""``carryon edge serve``: the runtime's ``decide`` over local HTTP, as a small raw ASGI app.

``POST /decide`` takes a session (JSON, at most ``max_body`` bytes) and answers the decision;
``GET /health`` reports the installed bundle. Served from an edge home, the app follows
``current/<creator>`` (``edge.live``): a pull's new bundle, kill switch included, takes over
within a few seconds without a restart. Errors are JSON ``{"error": message}`` with
413 (body too large), 400 (not JSON, or a malformed session), 404, 405 (with ``Allow``) or
500; a client never sees a traceback (the server logs it). Decisions run on the event loop:
they take about 0.1 ms, less than handing them to a thread would cost.

    >>> serve(make_app(EdgeRuntime.load(bundle), DecisionLog.open(home, "cr-01")), listen(port=8765))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from edge.decisions import DecisionLog
from edge.live import LiveRuntime
from edge.runtime import EdgeRuntime, SessionError
from features.errors import CarryonError

__all__ = ["MAX_BODY", "ServeError", "listen", "make_app", "serve"]

MAX_BODY = 64 * 1024  # bytes; a session is a few KiB
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("carryon.edge.serve")
_ROUTES = {"/decide": "POST", "/health": "GET"}


class ServeError(CarryonError):
    """The server cannot start (address in use, bad host)."""


class _TooLarge(Exception):
    pass


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
                   ) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send, live: LiveRuntime | None) -> None:
    watcher: asyncio.Task[None] | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if live is not None:
                watcher = asyncio.create_task(live.watch())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await send({"type": "lifespan.shutdown.complete"})
            return


def make_app(runtime: EdgeRuntime | LiveRuntime, log: DecisionLog | None = None, *, max_body: int = MAX_BODY) -> App:
    """The ASGI app deciding with ``runtime`` and logging consented decisions to ``log`` (None: no log).

    With a ``LiveRuntime`` the app follows the home's current bundle: the watcher runs from the
    lifespan startup, and each request takes the runtime current when it arrives.
    """
    live = runtime if isinstance(runtime, LiveRuntime) else None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, live)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        allowed = _ROUTES.get(path)
        if allowed is None:
            await _respond(send, 404, {"error": f"no such endpoint {path[:64]!r}; use POST /decide or GET /health"})
            return
        if method != allowed:
            await _respond(send, 405, {"error": f"{path} takes {allowed}, not {method}"},
                           [(b"allow", allowed.encode())])
            return
        current = runtime.runtime if isinstance(runtime, LiveRuntime) else runtime
        try:
            if path == "/health":
                health = current.health()
                if live is not None:
                    health["reload"] = live.status()
                await _respond(send, 200, health)
                return
            try:
                body = await _read_body(scope, receive, max_body)
            except _TooLarge:
                await _respond(send, 413, {"error": f"request body over {max_body} bytes; send one session"})
                return
            try:
                session = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                await _respond(send, 400, {"error": f"request body is not JSON ({e})"})
                return
            except RecursionError:
                await _respond(send, 400, {"error": "request body nests too deeply; send one flat session"})
                return
            try:
                decision = current.decide(session)
            except SessionError as e:
                await _respond(send, 400, {"error": str(e)})
                return
            if log is not None:
                log.append(decision)
            await _respond(send, 200, decision.to_dict(current.variants))
        except ConnectionError:
            return
        except CarryonError as e:
            _log.error("decide failed: %s", e)
            await _respond(send, 500, {"error": "the edge runtime could not decide; see the server log"})
        except Exception:
            _log.exception("unexpected error on %s %s", method, path)
            await _respond(send, 500, {"error": "internal error; see the server log"})

    return app


def listen(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A listening TCP socket (``port`` 0: any free port; read it from ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # the response's header and body segments wait out the client's delayed ACK (~40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: App, sock: socket.socket) -> None:
    """Run ``app`` with uvicorn on ``sock`` until interrupted (no access log: it would cost more than a decision)."""
    import uvicorn

    config = uvicorn.Config(app, lifespan="on", access_log=False, log_level="warning", server_header=False,
                            date_header=False, backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])
