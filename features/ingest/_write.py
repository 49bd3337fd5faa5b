"""Clean events on disk: ``events/part=NN/data.parquet``, whole viewers per partition.

A viewer's partition is ``int(viewer_key[:8], 16) % partitions``, so any reader can
recompute it from the pseudonym alone. Every partition is written, an empty one with
the full schema; rows are sorted by (viewer_key, ts, event_id). Rows are split by
partition with one radix sort, then each partition is gathered, ordered on integers
(viewers ranked in (partition, viewer_key) order, then ts; event_id only breaks the
ties left), given its pseudonyms and written on its own (``write_partition``, the unit
both engines run), two at a time locally, so only two partitions are copied at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from features._engine import PartitionMap, thread_map
from features.clean_events import CLEAN_SCHEMA, PARTITION_DIR


def partition_of(viewer_key: pl.Expr, partitions: int) -> pl.Expr:
    """The partition of a viewer: the first 8 hex chars of its pseudonym, mod ``partitions``."""
    return viewer_key.str.slice(0, 8).str.to_integer(base=16) % partitions


def partition_path(root: Path, part: int, partitions: int) -> Path:
    width = max(2, len(str(partitions - 1)))
    return root / PARTITION_DIR / f"part={part:0{width}d}" / "data.parquet"


@dataclass(frozen=True)
class Placement:
    """Where the kept rows go.

    ``rows``: indices of kept rows; ``viewer_rank`` (row for row with ``rows``)
    indexes ``viewer_keys`` and ``viewer_part``, both in (partition, viewer_key) order.
    """

    rows: pl.Series
    viewer_rank: pl.Series
    viewer_keys: pl.Series
    viewer_part: pl.Series
    partitions: int


@dataclass(frozen=True)
class PartitionRows:
    """The kept rows of one partition, in kept-row order, ready for :func:`write_partition`.

    ``frame`` holds the schema fields (no raw viewer_id) plus ``viewer_key``; ``rank`` and
    ``at`` (row for row) are each row's viewer rank and ts in µs.
    """

    part: int
    partitions: int
    frame: pl.DataFrame
    rank: np.ndarray
    at: np.ndarray


def write_partitions(
    events: pl.DataFrame,
    place: Placement,
    session_keys: Callable[[list[str]], list[str]],
    root: Path,
    progress: Callable[[int], None],
    partition_map: PartitionMap | None = None,
) -> None:
    """Write the kept rows of ``events`` (schema fields) under ``root``, one file per partition.

    ``session_keys`` pseudonymizes a partition's distinct session ids. Each partition
    is gathered, sorted, keyed and written by :func:`write_partition`: by default in one
    of two threads (numpy sorts and polars release the GIL, so one thread's Python hashing
    overlaps the other's work), or by ``partition_map`` (the Dask engine).
    """
    rank = place.viewer_rank.to_numpy()
    at = events.get_column("ts").gather(place.rows).dt.epoch("us").to_numpy()
    part = place.viewer_part.to_numpy()[rank] if len(rank) else np.zeros(0, dtype=np.int64)
    small = np.uint16 if place.partitions <= np.iinfo(np.uint16).max else np.uint32
    by_part = np.argsort(part.astype(small), kind="stable")  # a radix sort for small ints
    starts = np.searchsorted(part[by_part], np.arange(place.partitions + 1), side="left").tolist()
    fields = events.drop("viewer_id")

    def rows_of(p: int) -> PartitionRows:
        members = by_part[starts[p] : starts[p + 1]]  # positions into place.rows
        ranks = rank[members]
        chunk = fields[place.rows.gather(pl.Series(members))]
        chunk = chunk.with_columns(place.viewer_keys.gather(pl.Series(ranks)).alias("viewer_key"))
        return PartitionRows(p, place.partitions, chunk, ranks, at[members])

    def local(p: int) -> int:  # gathered in the thread: two partitions copied at once
        return write_partition(rows_of(p), session_keys, root)

    if partition_map is None:
        written = thread_map(2)(local, range(place.partitions))
    else:  # the rows travel with each task, gathered as it is submitted
        job = partial(write_partition, session_keys=session_keys, root=root)
        written = partition_map(job, (rows_of(p) for p in range(place.partitions)))
    for done, _ in enumerate(written, 1):
        progress(done)


def write_partition(rows: PartitionRows, session_keys: Callable[[list[str]], list[str]], root: Path) -> int:
    """Sort one partition by (viewer, ts, event_id), pseudonymize its sessions, write its file."""
    order = pl.Series(_viewer_time_order(rows.rank, rows.at, rows.frame.get_column("event_id")))
    chunk = rows.frame[order]
    sessions = chunk.get_column("session_id").unique()
    hashed = pl.Series("session_key", session_keys(sessions.cast(pl.String).to_list()), dtype=pl.String)
    chunk = chunk.join(pl.DataFrame([sessions, hashed]), on="session_id", how="left", maintain_order="left")
    path = partition_path(root, rows.part, rows.partitions)
    path.parent.mkdir(parents=True)
    chunk.select(pl.col(n).cast(t) for n, t in CLEAN_SCHEMA.items()).write_parquet(
        path, compression="zstd", statistics=True
    )
    return rows.part


def _viewer_time_order(rank: np.ndarray, at: np.ndarray, event_ids: pl.Series) -> np.ndarray:
    """The order of one partition's rows by (viewer rank, ts, event_id).

    One sort of a 64-bit (rank, ts offset) key when both fit, else two stable sorts
    (ts, then rank); rows still tied are then reordered by event_id among themselves.
    """
    if len(rank) == 0:
        return np.zeros(0, dtype=np.int64)
    offset = (at - at.min()).astype(np.uint64)
    wide = rank.astype(np.uint64)
    rank_bits = int(rank.max()).bit_length()
    if rank_bits + int(offset.max()).bit_length() <= 64:
        order = np.argsort((wide << np.uint64(64 - rank_bits)) | offset if rank_bits else offset, kind="stable")
    else:
        by_ts = np.argsort(at, kind="stable")
        order = by_ts[np.argsort(wide[by_ts], kind="stable")]
    ranks, times = rank[order], at[order]
    same = (ranks[1:] == ranks[:-1]) & (times[1:] == times[:-1])  # same[i]: position i+1 ties i
    if same.any():
        group = np.cumsum(np.concatenate([[True], ~same]))  # one id per run of equal (rank, ts)
        tied = np.flatnonzero(np.concatenate([same, [False]]) | np.concatenate([[False], same]))
        ties = pl.DataFrame(
            {
                "group": group[tied],
                "event_id": event_ids.gather(pl.Series(order[tied])),
                "pos": order[tied],
            }
        ).sort("group", "event_id")
        order[tied] = ties.get_column("pos").to_numpy()
    return order
