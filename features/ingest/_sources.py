"""Input discovery: which files ingest reads, checked before anything is written.

A source is a JSONL file (``.jsonl``, ``.ndjson``, ``.json``), a Parquet file
(``.parquet``) or a directory searched recursively for ``.jsonl``/``.ndjson``/
``.parquet`` files (``.json`` files in a directory are documents such as
``catalog.json`` and are skipped, as are hidden files and ingest's own outputs).
Anything that cannot be read at all raises :class:`InputUnreadableError` naming the
file and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from features.errors import InputUnreadableError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
DIR_SUFFIXES = (".jsonl", ".ndjson", ".parquet")
PARQUET_MAGIC = b"PAR1"
_FORMATS = "a .jsonl, .ndjson, .json or .parquet file, or a directory of them"

Format = Literal["jsonl", "parquet"]


@dataclass(frozen=True)
class Source:
    """One input file; ``name`` (never an absolute path) labels it in outputs."""

    path: Path
    name: str
    format: Format
    size: int


def discover(sources: Sequence[Path], exclude: Sequence[Path]) -> tuple[list[Source], list[str]]:
    """Resolve ``sources`` to readable input files; also return names of skipped files."""
    if not sources:
        raise InputUnreadableError(f"no input given; pass {_FORMATS}")
    excluded = {p.resolve() for p in exclude}
    found: list[Source] = []
    skipped: list[str] = []
    for source in sources:
        if source.is_dir():
            files, passed = _walk(source, excluded)
            skipped.extend(passed)
            if not files:
                raise InputUnreadableError(
                    f"{source}: directory holds no .jsonl, .ndjson or .parquet file; "
                    "point ingest at the simulator's or producer's output"
                )
            found.extend(files)
        elif source.exists():
            if _is_excluded(source.resolve(), excluded):
                raise InputUnreadableError(
                    f"{source}: is one of ingest's own outputs (the quarantine or the clean directory); "
                    "pass the raw event files instead"
                )
            found.append(_check_file(source, source.name))
        else:
            raise InputUnreadableError(f"{source}: input not found; pass {_FORMATS}")
    return found, skipped


def _walk(directory: Path, excluded: set[Path]) -> tuple[list[Source], list[str]]:
    files: list[Source] = []
    skipped: list[str] = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        name = f"{directory.resolve().name}/{rel.as_posix()}"
        if any(part.startswith(".") for part in rel.parts) or path.is_dir():
            continue
        if _is_excluded(path.resolve(), excluded):
            continue
        if path.suffix.lower() in DIR_SUFFIXES:
            files.append(_check_file(path, name))
        else:
            skipped.append(name)
    return files, skipped


def _is_excluded(resolved: Path, excluded: set[Path]) -> bool:
    return resolved in excluded or any(e in resolved.parents for e in excluded)


def _check_file(path: Path, name: str) -> Source:
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        if suffix == ".parquet":
            _check_parquet(path, size)
        elif suffix not in JSONL_SUFFIXES:
            raise InputUnreadableError(
                f"{path}: unsupported input type {suffix or '(no suffix)'!r}; pass {_FORMATS}"
            )
        with path.open("rb"):
            pass
    except OSError as e:
        raise InputUnreadableError(f"{path}: cannot read it ({e.strerror}); check permissions") from e
    if size == 0:
        raise InputUnreadableError(
            f"{path}: file is empty (0 bytes); remove it or re-export it from its producer"
        )
    return Source(path, name, "parquet" if suffix == ".parquet" else "jsonl", size)


def _check_parquet(path: Path, size: int) -> None:
    """Check the Parquet magic bytes and footer, so a corrupt file fails before any write."""
    if size == 0:
        return
    with path.open("rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise InputUnreadableError(
            f"{path}: not a Parquet file (missing PAR1 magic bytes; truncated or another format); "
            "re-export it, or rename it if it is JSONL"
        )
    try:
        pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputUnreadableError(
            f"{path}: corrupt Parquet footer ({_first_line(e)}); re-export the file"
        ) from e


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
