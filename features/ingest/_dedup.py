"""Repeated ``event_id``s among valid rows: the first stays, later ones are classified.

"First" is input order (file, then line or row). A later row with the same content
as the first (every schema field its type carries equal, nulls equal) is a
duplicate and dropped; one with different content is a conflict and quarantined
(``event_id_conflict``). Candidates are found by sorting 64-bit hashes of the ids,
and only they are compared, so the common case (no repeats) costs one hash and one
integer sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.ingest._columns import REC
from features.ingest._validate import FAILED
from features.schema import FIELD_KINDS

FIRST_SRC = "_first_src"
FIRST_REC = "_first_rec"
DIFFERS = "_differs"  # comma-separated fields that differ from the first row


@dataclass(frozen=True)
class Deduped:
    dropped: pl.Series | None  # Boolean per row: a later copy (duplicate or conflict); None: no repeats
    duplicates: int
    conflicts: pl.DataFrame  # _src, _rec, event_id, FIRST_SRC, FIRST_REC, DIFFERS


def dedup(frame: pl.DataFrame) -> Deduped:
    """Find later copies of valid rows' event_ids; count exact repeats, return conflicts."""
    hashes = frame.select(pl.when(~pl.col(FAILED)).then(pl.col("event_id").hash())).to_series()
    ordered = hashes.drop_nulls().sort()
    repeated_hashes = ordered.filter(ordered == ordered.shift(1)).unique()
    if repeated_hashes.is_empty():
        return Deduped(None, 0, _no_conflicts())
    candidates = hashes.is_in(repeated_hashes.implode()).fill_null(False)
    group = (
        frame.with_row_index("_row")
        .filter(candidates)
        .select("_row", "_src", REC, *FIELD_KINDS)
        .sort("_src", REC)  # input order: frame rows of a JSONL chunk are grouped by layout
        .with_row_index("_pos")
    )
    over = "event_id"
    fields = [f for f in FIELD_KINDS if f != over]
    first = {f: pl.col(f).first().over(over) for f in [*fields, "_pos", "_src", REC]}
    differs = [pl.when(~pl.col(f).eq_missing(first[f])).then(pl.lit(f)) for f in fields]
    group = group.with_columns(
        (pl.col("_pos") == first["_pos"]).alias("_first"),
        pl.concat_str(differs, separator=", ", ignore_nulls=True).alias(DIFFERS),
        first["_src"].alias(FIRST_SRC),
        first[REC].alias(FIRST_REC),
    )
    later = group.filter(~pl.col("_first"))
    dropped = np.zeros(frame.height, dtype=bool)
    dropped[later.get_column("_row").to_numpy()] = True
    conflicts = later.filter(pl.col(DIFFERS).str.len_bytes() > 0)
    return Deduped(
        pl.Series("_dropped", dropped),
        later.height - conflicts.height,
        conflicts.select("_src", REC, "event_id", FIRST_SRC, FIRST_REC, DIFFERS),
    )


def _no_conflicts() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "_src": pl.UInt32,
            REC: pl.Int64,
            "event_id": pl.String,
            FIRST_SRC: pl.UInt32,
            FIRST_REC: pl.Int64,
            DIFFERS: pl.String,
        }
    )
