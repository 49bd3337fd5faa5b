"""The decision log: what a consented viewer was shown, with propensities, as schema-v1 events.

One JSONL file per creator (``<home>/decisions/<creator>.jsonl``). A personalized decision
appends one ``cta_impression`` (the variant drawn and its propensity) and one
``bonus_impression`` per ranked bonus (``position`` 1 = first; ``propensity`` 1.0, because
the ranking is deterministic given the features), all sharing the decision time as ``ts``
and a fresh ``slate_id``. A decision without consent or under the kill switch writes
nothing. The log holds no raw viewer id: ``viewer_id`` is the request's opaque
``viewer_ref`` when the caller gave one, else absent (so are ``session_id`` and ``drop_id``
when the request did not carry them; ingest quarantines such rows as incomplete rather
than guessing who they belong to).

Each decision is one ``os.write`` of whole lines to a file opened with ``O_APPEND`` under
an exclusive ``flock``: a crash of this process loses nothing written; a crash of the
machine can leave a torn last line, which :func:`read_decisions` skips and counts and the
next writer cuts off before appending.

    >>> log = DecisionLog.open(home, "cr-01"); log.append(decision)
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.runtime import Decision
from features.errors import DataError, InputUnreadableError

__all__ = ["DecisionLog", "LogContents", "read_decisions"]


@dataclass(frozen=True)
class LogContents:
    """A decision log read back: its events, and whether a torn last line was skipped."""

    events: list[dict[str, Any]]
    torn_tail: int  # 0 or 1: an incomplete last line (a crash mid-write) was skipped


def decision_events(decision: Decision) -> list[dict[str, Any]]:
    """The schema-v1 events that record ``decision``; none for a decision that was not personalized."""
    return [json.loads(line) for line in _lines(decision)]


def _lines(decision: Decision) -> list[str]:
    """``decision``'s events as JSON lines (built from pre-encoded pieces: a decision logs 1 + N events)."""
    if not decision.personalized:
        return []
    dumps = json.dumps
    common = f'"ts":{dumps(decision.at)},"creator_id":{dumps(decision.creator_id)}'
    for key, value in (("drop_id", decision.drop_id), ("session_id", decision.session_id),
                       ("viewer_id", decision.viewer_ref)):
        if value is not None:
            common += f',"{key}":{dumps(value)}'
    base = uuid.uuid4().hex
    lines = [f'{{"event_id":"dec-{base}-c",{common},"type":"cta_impression","variant":{dumps(decision.variant)},'
             f'"propensity":{float(decision.propensity)!r}}}\n']
    slate = f'"slate_id":"slate-{base}"'
    lines.extend(f'{{"event_id":"dec-{base}-b{i}",{common},"type":"bonus_impression","bonus_id":{dumps(bonus)},'
                 f'{slate},"position":{i},"propensity":1.0}}\n'
                 for i, bonus in enumerate(decision.bonus_order, start=1))
    return lines


class DecisionLog:
    """Appends decisions to one creator's JSONL log (see the module docstring)."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.repaired_bytes = 0  # bytes of a torn tail cut off by the last append
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    @classmethod
    def open(cls, home: Path, creator: str, *, fsync: bool = False) -> DecisionLog:
        """The log of ``creator`` under edge home ``home``; ``fsync`` makes each append durable (slower)."""
        if not creator or "/" in creator or creator in (".", ".."):
            raise ValueError(f"creator id {creator!r} is not a plain name")
        return cls(home / "decisions" / f"{creator}.jsonl", fsync)

    def append(self, decision: Decision) -> int:
        """Log ``decision``; returns the number of events written (0 when it was not personalized)."""
        lines = _lines(decision)
        if not lines:
            return 0
        data = "".join(lines).encode()
        fd = self._file()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self.repaired_bytes = _cut_torn_tail(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return len(lines)

    def _file(self) -> int:
        """The log's descriptor, kept open; reopened when the file was moved away or deleted (rotation)."""
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._inode:
            return self._fd
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)
        return fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def _cut_torn_tail(fd: int) -> int:
    """Truncate an incomplete last line (no newline: a write cut short by a crash); returns bytes cut."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    end = size
    while end > 0:
        chunk = os.pread(fd, min(4096, end), max(0, end - 4096))
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            keep = end - len(chunk) + newline + 1
            break
        end -= len(chunk)
    else:
        keep = 0
    os.ftruncate(fd, keep)
    return size - keep


def read_decisions(path: Path) -> LogContents:
    """Every complete event in a decision log; a torn last line is skipped and counted, any other bad line refused."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputUnreadableError(f"{path}: cannot read the decision log ({e.strerror})") from e
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    events: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            event = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}: line {number} is not a JSON event ({e}); the log was edited or damaged") from e
        if not isinstance(event, dict):
            raise DataError(f"{path}: line {number} is not a JSON object")
        events.append(event)
    return LogContents(events, 1 if tail else 0)
