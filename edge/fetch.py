"""HTTP for the TUF client: mirrors tried in order, connect/read timeouts, a minimum rate, resumable targets.

``MirrorFetcher`` implements python-tuf's ``FetcherInterface`` with the standard library only. A URL under the
primary repository is tried on every mirror in turn (the same relative path); a mirror that refuses the
connection, stalls past the read timeout, trickles below the minimum rate or breaks mid-way hands over to the
next one, which continues from the byte reached (HTTP Range) where it allows it. Files under ``targets/`` are
also written to ``<part_dir>/*.part`` as they arrive, so an interrupted download resumes in the next process.
Sizes are capped by the caller (python-tuf's ``download_file`` with the length from signed metadata).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface

__all__ = ["FetchSettings", "MirrorFetcher"]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class FetchSettings:
    """Network limits of one request to one mirror."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0  # longest silence between two reads
    min_rate_bytes_s: float = 4096.0  # average since the request started, judged after the grace period
    rate_grace_s: float = 5.0
    deadline_s: float = 900.0  # whole request, however fast it trickles
    chunk_bytes: int = 65536

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "read_timeout_s", "deadline_s", "chunk_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FetchSettings.{name} must be > 0, got {getattr(self, name)}")


class _MirrorFailed(Exception):
    """One mirror failed one request (network, timeout, too slow, bad reply)."""


class MirrorFetcher(FetcherInterface):
    """Fetch from the first mirror that answers; ``mirrors[0]`` is the base the updater builds URLs from."""

    def __init__(self, mirrors: list[str], settings: FetchSettings | None = None, part_dir: Path | None = None,
                 resumable_prefix: str = "targets/") -> None:
        if not mirrors:
            raise ValueError("MirrorFetcher needs at least one mirror URL")
        for url in mirrors:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"mirror URL must start with http:// or https://, got {url!r}")
        self.primary = mirrors[0].rstrip("/") + "/"
        self.order = [m.rstrip("/") + "/" for m in mirrors]
        self.settings = settings or FetchSettings()
        self.part_dir = part_dir
        self.resumable_prefix = resumable_prefix
        self.failures: list[str] = []  # one line per mirror failure, for the pull's report
        self.resumed_bytes = 0
        self.last_part: Path | None = None

    def rotate(self) -> None:
        """Try the next mirror first from now on (after it served bytes that failed verification)."""
        self.order = self.order[1:] + self.order[:1]

    def discard_part(self) -> None:
        """Forget the bytes kept for the last resumable download (done, or failed verification)."""
        if self.last_part is not None:
            self.last_part.unlink(missing_ok=True)

    def part_path(self, url: str) -> Path | None:
        """Where a resumable URL's bytes are kept while they arrive (None for metadata)."""
        relative = self._relative(url)
        if self.part_dir is None or relative is None or not relative.startswith(self.resumable_prefix):
            return None
        return self.part_dir / f"{hashlib.sha256(relative.encode()).hexdigest()[:24]}.part"

    def _relative(self, url: str) -> str | None:
        return url[len(self.primary):] if url.startswith(self.primary) else None

    def _fetch(self, url: str) -> Iterator[bytes]:
        relative = self._relative(url)
        urls = [url] if relative is None else [base + relative for base in self.order]
        part = self.part_path(url)
        if part is None:
            return self._stream(urls, 0)
        self.last_part = part
        return self._resumable(urls, part)

    def _resumable(self, urls: list[str], part: Path) -> Iterator[bytes]:
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        self.resumed_bytes = have
        if have:
            with open(part, "rb") as f:
                while chunk := f.read(self.settings.chunk_bytes):
                    yield chunk
        with open(part, "ab") as out:
            for chunk in self._stream(urls, have):
                out.write(chunk)
                out.flush()
                yield chunk

    def _stream(self, urls: list[str], start: int) -> Iterator[bytes]:
        """Bytes from offset ``start`` on, from the first mirror that delivers; hands over mid-way on failure."""
        sent = start
        statuses: list[int] = []
        errors: list[str] = []
        for url in urls:
            try:
                for chunk in self._get(url, sent):
                    sent += len(chunk)
                    yield chunk
                self.failures.extend(errors)
                return
            except tuf_errors.DownloadHTTPError as e:
                statuses.append(e.status_code)
                errors.append(f"{_where(url)}: HTTP {e.status_code}")
            except (_MirrorFailed, OSError, http.client.HTTPException) as e:
                errors.append(f"{_where(url)}: {_describe(e)}")
        summary = "; ".join(errors)
        absent = [code for code in statuses if code in (403, 404)]
        if absent and sent == start:
            # A mirror that answers "not there" is authoritative (e.g. no newer root), even if another is down.
            self.failures.extend(e for e in errors if not e.endswith((" 403", " 404")))
            raise tuf_errors.DownloadHTTPError(f"{_path(urls[0])}: {summary}", absent[0])
        self.failures.extend(errors)
        raise tuf_errors.DownloadError(f"{_path(urls[0])}: every mirror failed ({summary})")

    def _get(self, url: str, start: int) -> Iterator[bytes]:
        settings = self.settings
        parts = urlsplit(url)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=settings.connect_timeout_s,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=settings.connect_timeout_s)
        began = time.monotonic()
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(settings.read_timeout_s)
            headers = {"User-Agent": "carryon-edge", "Accept-Encoding": "identity"}
            if start:
                headers["Range"] = f"bytes={start}-"
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path or "/", headers=headers)
            response = conn.getresponse()
            skip = self._check_status(response, start)
            got = 0
            while chunk := response.read1(settings.chunk_bytes):
                got += len(chunk)
                elapsed = time.monotonic() - began
                if elapsed > settings.deadline_s:
                    raise _MirrorFailed(f"request took over {settings.deadline_s:g} s")
                if elapsed > settings.rate_grace_s and got / elapsed < settings.min_rate_bytes_s:
                    raise _MirrorFailed(f"trickling at {got / elapsed:.0f} B/s, under the minimum "
                                        f"{settings.min_rate_bytes_s:.0f} B/s")
                if skip:
                    dropped = min(skip, len(chunk))
                    skip -= dropped
                    chunk = chunk[dropped:]
                    if not chunk:
                        continue
                yield chunk
            if skip:
                raise _MirrorFailed("reply ended before the offset to resume from")
            if response.length:  # http.client reports an early close as a clean end: check the declared length
                raise _MirrorFailed(f"connection closed with {response.length} declared bytes missing")
        finally:
            conn.close()

    @staticmethod
    def _check_status(response: http.client.HTTPResponse, start: int) -> int:
        """Bytes to drop from the body: 0 for a 206 at ``start``, ``start`` when the mirror ignored Range."""
        if response.status == 206 and start:
            match = _CONTENT_RANGE.match(response.getheader("Content-Range") or "")
            if match is None or int(match.group(1)) != start:
                raise _MirrorFailed(f"206 reply with Content-Range {response.getheader('Content-Range')!r}, "
                                    f"expected bytes {start}-")
            return 0
        if response.status == 200:
            return start
        if response.status == 416 and start:
            raise _MirrorFailed(f"range from byte {start} not satisfiable (the file is shorter)")
        raise tuf_errors.DownloadHTTPError(f"HTTP {response.status}", response.status)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc


def _path(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def _describe(error: BaseException) -> str:
    if isinstance(error, _MirrorFailed):
        return str(error)
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
