"""Who is kept and where they go: the consent ledger applied, then pseudonyms.

``decide`` applies the ledger (``_consent``) to the eligible rows, hashes the ids of
the consented viewers (each distinct id once), ranks them by (partition,
viewer_key) and returns a :class:`Placement` for the writer, which hashes session
ids partition by partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from features.ingest._consent import EXCLUDED_REASONS, FIRST_GRANT, GAPS, GRANTED_NOW, VID, exclusions, ledger
from features.ingest._keys import Pseudonymizer
from features.ingest._write import Placement, partition_of

RANK = "_rank"
VPART = "_vpart"


@dataclass(frozen=True)
class Decision:
    kept: pl.Series  # Boolean per row: reaches the clean output
    excluded: dict[str, int]  # excluded rows per EXCLUDED_REASONS
    viewer_keys: list[str]  # pseudonyms of the viewers granted at the snapshot
    excluded_viewers: int  # viewers with valid events who are not granted at the snapshot
    placement: Placement


def decide(
    frame: pl.DataFrame, eligible: pl.Series, snapshot_us: int | None, pseudonyms: Pseudonymizer, partitions: int
) -> Decision:
    """Apply the consent ledger to the eligible rows and place the kept ones."""
    if snapshot_us is None:  # no valid event at all: nobody to keep
        kept = pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
        return Decision(kept, dict.fromkeys(EXCLUDED_REASONS, 0), [], 0, _empty_placement(partitions))
    book = ledger(frame, eligible, snapshot_us)
    granted = book.viewers.filter(pl.col(GRANTED_NOW)).get_column("viewer_id")
    viewers = (
        pl.DataFrame([granted, pl.Series("viewer_key", pseudonyms.many(granted.cast(pl.String).to_list()), pl.String)])
        .with_columns(partition_of(pl.col("viewer_key"), partitions).alias(VPART))
        .sort(VPART, "viewer_key")
        .with_row_index(RANK)
    )
    table = book.viewers.join(viewers.select("viewer_id", RANK), on="viewer_id", how="left")
    looked_up = frame.select("viewer_id").join(table, on="viewer_id", how="left", maintain_order="left")
    reasons = exclusions(frame, looked_up.select(VID, GRANTED_NOW, FIRST_GRANT, GAPS), book, snapshot_us)
    kept = eligible & reasons.is_null()
    counts = dict(reasons.filter(eligible).drop_nulls().cast(pl.String).value_counts().iter_rows())

    rows = kept.arg_true()
    viewer_rank = looked_up.get_column(RANK).gather(rows)
    placement = Placement(rows, viewer_rank, viewers.get_column("viewer_key"), viewers.get_column(VPART), partitions)
    viewers_seen = frame.get_column("viewer_id").filter(eligible).n_unique()
    return Decision(
        kept,
        {r: int(counts.get(r, 0)) for r in EXCLUDED_REASONS},
        viewers.get_column("viewer_key").to_list(),
        viewers_seen - viewers.height,
        placement,
    )


def _empty_placement(partitions: int) -> Placement:
    none = pl.Series([], dtype=pl.UInt32)
    return Placement(none, none, pl.Series([], dtype=pl.String), pl.Series([], dtype=pl.Int64), partitions)
