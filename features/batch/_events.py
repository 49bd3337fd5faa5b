"""Find and check the clean event partitions that ``carryon ingest`` wrote.

Each partition (``events/part=NN/data.parquet``) holds whole viewers, so every feature,
history included, can be computed per partition; the scans here are lazy and read only
the columns the features need.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.clean_events import CLEAN_SCHEMA
from features.errors import DataError, InputUnreadableError

# The clean-event columns the features read, with their dtypes.
NEEDED: dict[str, pl.DataType] = {
    name: CLEAN_SCHEMA[name] for name in (
        "event_id", "ts", "creator_id", "drop_id", "session_key", "viewer_key", "type", "variant", "propensity",
        "bonus_id", "slate_id", "position", "device", "channel", "local_pickup", "drop_started_at",
    )
}
_FIX = "run `carryon ingest` to write it"


def partition_files(clean_dir: Path) -> list[Path]:
    """The partition files under ``clean_dir/events``, in partition order."""
    events_dir = clean_dir / "events"
    if not events_dir.is_dir():
        raise InputUnreadableError(
            f"{clean_dir}: no clean events (missing {events_dir.name}/ directory); {_FIX}"
        )
    files = sorted(events_dir.glob("part=*/data.parquet"))
    if not files:
        raise InputUnreadableError(
            f"{events_dir}: no partitions (part=NN/data.parquet); {_FIX}"
        )
    return files


def scan_partition(path: Path) -> tuple[pl.LazyFrame, int]:
    """A lazy scan of one partition's needed columns, and its row count.

    Checks the columns and dtypes from the Parquet footer; raises ``DataError`` naming
    the file and the column.
    """
    name = f"{path.parent.name}/{path.name}"
    try:
        lazy = pl.scan_parquet(path, hive_partitioning=False)
        schema = lazy.collect_schema()
        rows = int(lazy.select(pl.len()).collect().item())
    except (OSError, pl.exceptions.PolarsError) as e:
        raise InputUnreadableError(f"{name}: not a readable Parquet file ({e}); {_FIX}") from e
    for column, dtype in NEEDED.items():
        if column not in schema:
            raise DataError(f"{name}: column {column!r} is missing; {_FIX}")
        if schema[column] != dtype:
            raise DataError(
                f"{name}: column {column!r} must be {dtype}, got {schema[column]}; {_FIX}"
            )
    return lazy.select(list(NEEDED)), rows
