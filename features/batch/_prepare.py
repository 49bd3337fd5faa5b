"""One partition's events, read and indexed for the point-in-time queries.

``prepare`` reads a partition once and returns two frames: the events in file order
with integer keys added, and a narrow copy sorted by session and time (the order every
"strictly before" count runs in). Sorting only the narrow copy keeps the strings out
of the sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import polars as pl

# The polars engine for every query here: sorts, cumulative sums and as-of joins do not
# stream, and the in-memory engine measured faster on them.
ENGINE: Final[Literal["in-memory"]] = "in-memory"
T = "t"  # event time as integer UTC µs


@dataclass(frozen=True)
class Prepared:
    """A partition's events, indexed.

    ``events``: every event in file order, plus ``r`` (row number), ``t`` and ``sid``
    (the session as an integer: the row number of its first row).
    ``order``: ``r``, ``sid``, ``t``, ``type`` and ``slate_first`` (the first
    bonus_impression of its slate in the session), sorted by (sid, t).
    """

    events: pl.DataFrame
    order: pl.DataFrame


def prepare(lazy: pl.LazyFrame) -> Prepared:
    """Read one partition (whole viewers) and index it; see :class:`Prepared`.

    Ingest writes rows sorted by (viewer, ts), so a stable sort by ``sid`` alone usually
    leaves each session in time order; that is checked, and a full (sid, t) sort done
    when it does not hold.
    """
    events = (
        lazy.with_row_index("r")
        .with_columns(
            pl.col("ts").dt.epoch("us").alias(T),
            pl.col("r").min().over("session_key").alias("sid"),
        )
        .collect(engine=ENGINE)
    )
    order = events.select("r", "sid", T, "type", "slate_id").sort("sid", maintain_order=True)
    sid = pl.col("sid")
    in_time_order = (pl.col(T) >= pl.col(T).shift(1)) | sid.ne_missing(sid.shift(1))
    if not order.select(in_time_order.all()).item():
        order = order.sort("sid", T)
    bonus = pl.col("type") == "bonus_impression"
    firsts = (  # group_by keeps row order within a group: first() is the first showing
        order.lazy().filter(bonus).group_by("sid", "slate_id").agg(pl.col("r").first())
        .collect(engine=ENGINE).get_column("r")
    )
    order = order.select(
        "r", "sid", T, "type", (bonus & pl.col("r").is_in(firsts.implode())).alias("slate_first"),
    )
    return Prepared(events, order)
