"""The per-creator bundle version counter, kept outside DVC outputs (``.carryon/bundle_versions.json``).

DVC deletes a stage's outputs before re-running it; a counter kept there would restart and look like
a rollback to every edge node. A shipping build reserves the next number under a file lock and
persists it before building (a failed build leaves a gap, never a repeat); a rehearsal only peeks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from features._fsutil import atomic_write_text
from features.errors import ConfigError

SCHEMA: Final = 1


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"schema": SCHEMA, "creators": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{path.name}: cannot read the bundle version counter ({e}); restore it from a backup, or set it to "
            f'{{"schema": 1, "creators": {{"<creator>": <last published version>}}}}'
        ) from e
    creators = data.get("creators") if isinstance(data, dict) else None
    if data.get("schema") != SCHEMA or not isinstance(creators, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in creators.values()):
        raise ConfigError(f"{path.name}: field 'creators' must map creator ids to non-negative integers "
                          f"(schema {SCHEMA}); fix the file")
    return {"schema": SCHEMA, "creators": dict(creators)}


def peek_version(path: Path, creator: str) -> int:
    """The version the next shipping build of ``creator`` will take (not reserved)."""
    with _locked(path):
        return int(_read(path)["creators"].get(creator, 0)) + 1


def reserve_version(path: Path, creator: str) -> int:
    """Take the next version of ``creator`` and persist it (atomic write under a lock)."""
    with _locked(path):
        data = _read(path)
        version = int(data["creators"].get(creator, 0)) + 1
        data["creators"][creator] = version
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return version
