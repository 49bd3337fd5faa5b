"""The ingest stage end to end: read, validate, dedup, consent, pseudonymize, write.

Everything is read and decided in memory first, as one frame of staged rows and
Boolean masks over it (never a filtered copy of the whole); only then are the clean
directory and the quarantine written, each atomically. An input that cannot be read
raises before anything on disk changes.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

from features._engine import PartitionMap
from features._fsutil import atomic_dir, atomic_file
from features.config import ConsentConfig, IngestConfig, ProgressFn, no_progress
from features.errors import ConfigError, InputUnreadableError
from features.ingest._columns import FLAGS
from features.ingest._dedup import Deduped, dedup
from features.ingest._keys import Pseudonymizer, PseudonymKey
from features.ingest._placement import decide
from features.ingest._quarantine import TimeLimits, collect_entries, write_quarantine
from features.ingest._readers import ByteProgress, Loaded, read_jsonl, read_parquet
from features.ingest._report import ConsentSummary, IngestReport, KeySummary
from features.ingest._sources import Source, discover
from features.ingest._validate import FAILED, IGNORED, Check, Limits, first_failures, mark
from features.ingest._write import write_partitions
from features.schema import FIELD_KINDS, ts_to_us, us_to_iso


def ingest(
    sources: Sequence[Path],
    out_dir: Path,
    quarantine_path: Path,
    config: IngestConfig,
    consent: ConsentConfig,
    *,
    key: PseudonymKey,
    progress: ProgressFn = no_progress,
    partition_map: PartitionMap | None = None,
) -> IngestReport:
    """Turn raw event files into clean, consented, pseudonymized events plus a quarantine.

    ``partition_map`` (the Dask engine) reads and checks each input file, and sorts, keys
    and writes each output partition, as tasks; what needs every record at once (repeated
    event_ids in input order, the "latest" snapshot, the consent ledger) is decided here.
    """
    started = time.perf_counter()
    if config.partitions < 1:
        raise ValueError(f"config.partitions must be >= 1, got {config.partitions}")
    limits, limit_text = _limits(config)
    snapshot_us = _snapshot(consent)
    found, skipped = discover(sources, exclude=[out_dir, quarantine_path])
    loaded = _read_all(found, config, limits, progress, partition_map)

    progress("validate", 0, 1)
    checked = _check(loaded, limits)
    progress("validate", 1, 1)

    progress("consent", 0, 1)
    frame, eligible = checked.frame, checked.eligible
    if snapshot_us is None and eligible.any():
        snapshot_us = int(frame.get_column("ts").filter(eligible).dt.epoch("us").max())  # type: ignore[arg-type]
    pseudonyms = Pseudonymizer(key)
    decision = decide(frame, eligible, snapshot_us, pseudonyms, config.partitions)
    progress("consent", 1, 1)

    entries = collect_entries(loaded, checked.failed, checked.rules, checked.deduped.conflicts, limit_text)
    snapshot_iso = us_to_iso(snapshot_us) if snapshot_us is not None else None
    with atomic_dir(out_dir) as tmp_out, atomic_file(quarantine_path) as tmp_quarantine:
        write_quarantine(tmp_quarantine, entries, loaded)
        progress("write", 0, config.partitions)
        write_partitions(
            frame.select(FIELD_KINDS.keys()),
            decision.placement,
            pseudonyms.many,
            tmp_out,
            lambda n: progress("write", n, config.partitions),
            partition_map,
        )
        per_type = frame.get_column("type").filter(decision.kept).cast(pl.String).value_counts()
        # Built inside the atomic blocks: counts that do not add up leave no output behind.
        return IngestReport(
            inputs=tuple(s.name for s in found),
            skipped_inputs=tuple(skipped),
            records_read=sum(item.records for item in loaded),
            clean=int(decision.kept.sum()),
            quarantined=len(entries),
            duplicates=checked.deduped.duplicates,
            excluded_no_consent=sum(decision.excluded.values()),
            quarantine_reasons=dict(sorted(Counter(e.reason for e in entries).items())),
            excluded_reasons=decision.excluded,
            blank_lines=sum(item.blank_lines for item in loaded),
            extra_fields_ignored=checked.extra_fields,
            events_per_type=dict(sorted((str(t), int(n)) for t, n in per_type.iter_rows())),
            consent=ConsentSummary(
                snapshot=snapshot_iso,
                snapshot_id=_snapshot_id(snapshot_iso, decision.viewer_keys),
                consented_viewers=len(decision.viewer_keys),
                excluded_viewers=decision.excluded_viewers,
            ),
            pseudonym_key=KeySummary(key.source, key.key_id, key.path),
            partitions=config.partitions,
            seconds=time.perf_counter() - started,
        )


def _no_bytes(done: int) -> None:
    """A byte-progress callback that shows nothing (tasks on a Dask worker)."""


@dataclass(frozen=True)
class _Checked:
    frame: pl.DataFrame  # every staged record of every input, marked; no flags
    failed: pl.DataFrame  # records that failed a check, with the first one (CHECK)
    rules: list[Check]  # the checks CHECK indexes
    deduped: Deduped
    eligible: pl.Series  # valid, and the first copy of its event_id
    extra_fields: int  # valid records that carried ignored fields


def _check(loaded: Sequence[Loaded], limits: Limits) -> _Checked:
    """Join every input's marked rows, find each failure's reason, and repeated event_ids."""
    frame = pl.concat(
        [p.with_columns(pl.lit(i, pl.UInt32).alias("_src")) for i, item in enumerate(loaded) for p in item.pieces]
    )
    for item in loaded:
        item.pieces.clear()
    failed, rules = first_failures(frame.filter(pl.col(FAILED)), limits)
    frame = _rechunk(frame.drop(*FLAGS))
    deduped = dedup(frame)
    valid = ~frame.get_column(FAILED)
    eligible = valid if deduped.dropped is None else valid & ~deduped.dropped
    extra_fields = int((valid & frame.get_column(IGNORED)).sum())
    return _Checked(frame, failed, rules, deduped, eligible, extra_fields)


def _rechunk(frame: pl.DataFrame) -> pl.DataFrame:
    """Make each column one contiguous chunk (gathers on chunked columns are several times
    slower), a column at a time so that only one column is ever held twice."""
    for name in frame.columns:
        frame = frame.with_columns(frame.get_column(name).rechunk())
    return frame


def _limits(config: IngestConfig) -> tuple[Limits, TimeLimits]:
    try:
        min_us = ts_to_us(config.min_ts)
        if config.max_ts is not None:
            max_us = ts_to_us(config.max_ts)
            max_text = f"ingest.max_ts ({config.max_ts})"
        else:
            # The one use of the wall clock: reject events stamped later than they could be.
            max_us = time.time_ns() // 1000 + config.max_clock_skew_s * 1_000_000
            max_text = f"the ingest clock plus ingest.max_clock_skew_s ({us_to_iso(max_us)})"
    except (TypeError, ValueError) as e:
        raise ConfigError(f"ingest.min_ts/max_ts: {e}; use ISO 8601 with a UTC offset") from e
    return Limits(min_us, max_us), TimeLimits(f"ingest.min_ts ({config.min_ts})", max_text)


def _snapshot(consent: ConsentConfig) -> int | None:
    """The configured snapshot in µs, or None for "latest" (decided from the data)."""
    if consent.snapshot == "latest":
        return None
    try:
        return ts_to_us(consent.snapshot)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"consent.snapshot: {e}; use 'latest' or ISO 8601 with a UTC offset") from e


def _read_all(
    found: Sequence[Source], config: IngestConfig, limits: Limits, progress: ProgressFn,
    partition_map: PartitionMap | None,
) -> list[Loaded]:
    total = sum(s.size for s in found)
    done = 0
    loaded = []
    if partition_map is not None:
        job = partial(read_source, max_record_bytes=config.max_record_bytes, limits=limits)
        for source, item in zip(found, partition_map(job, found), strict=True):
            done += source.size
            progress("read", done, total)
            loaded.append(item)
        return loaded
    for source in found:

        def report(n: int, before: int = done) -> None:
            progress("read", before + n, total)

        loaded.append(read_source(source, config.max_record_bytes, limits, report))
        done += source.size
        progress("read", done, total)
    return loaded


def read_source(source: Source, max_record_bytes: int, limits: Limits, progress: ByteProgress = _no_bytes) -> Loaded:
    """Read one input file into marked rows and early rejects (the per-file unit of both engines)."""
    marker = partial(mark, limits=limits)
    if source.format == "jsonl":
        item = read_jsonl(source, max_record_bytes, marker, progress)
    else:
        item = read_parquet(source, marker)
    if item.records == 0:
        raise InputUnreadableError(
            f"{source.path}: holds no records (only blank lines, or no rows); "
            "remove it or re-export it from its producer"
        )
    return item


def _snapshot_id(snapshot_iso: str | None, viewer_keys: Sequence[str]) -> str:
    """sha256 over the snapshot time and the sorted consented viewer_keys, hex[:16]."""
    body = "\n".join([snapshot_iso or "none", *sorted(viewer_keys)])
    return hashlib.sha256(body.encode("ascii")).hexdigest()[:16]
