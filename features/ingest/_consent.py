"""The consent ledger, exactly as DESIGN.md states it.

At the snapshot (params; "latest" = the newest valid event, never the wall clock),
only ``personalization`` consent events with ``ts <= snapshot`` count. An event
reaches the clean output only if (1) the viewer's latest action at the snapshot is
``grant``, (2) the event's ts <= snapshot, and (3) the viewer's state at the event's
ts (latest action with ts <= event ts; nothing yet = not granted) is ``grant``.
Actions of one viewer at the same instant: withdraw wins (the safe reading).
Excluded events are counted by the first rule they break, in EXCLUDED_REASONS order.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

EXCLUDED_REASONS = ("never_granted", "withdrawn_at_snapshot", "after_snapshot", "recorded_while_withdrawn")
REASON = pl.Enum(list(EXCLUDED_REASONS))
GRANTED_NOW = "_granted_now"  # the viewer's latest action at the snapshot is grant
FIRST_GRANT = "_first_grant"  # µs of the viewer's first grant at or before the snapshot
GAPS = "_gaps"  # a withdrawal follows the first grant: the state at an event needs a lookup
VID = "_vid"  # a small integer per viewer with ledger entries


@dataclass(frozen=True)
class Ledger:
    entries: pl.DataFrame  # VID, _at (µs), _grant: one row per viewer and instant, sorted
    viewers: pl.DataFrame  # viewer_id, VID, GRANTED_NOW, FIRST_GRANT, GAPS: viewers with a ledger entry


def _ts_us() -> pl.Expr:
    return pl.col("ts").dt.epoch("us")


def ledger(events: pl.DataFrame, eligible: pl.Series, snapshot_us: int) -> Ledger:
    """The personalization ledger at the snapshot, from the eligible (valid, first-copy) rows."""
    entries = (
        events.lazy()
        .select("viewer_id", "type", "purpose", "action", _ts_us().alias("_at"))
        .filter(
            eligible,
            pl.col("type") == "consent",
            pl.col("purpose") == "personalization",
            pl.col("_at") <= snapshot_us,
        )
        .group_by("viewer_id", "_at")
        .agg((pl.col("action") == "grant").all().alias("_grant"))  # a tie: withdraw wins
        .sort("viewer_id", "_at")
        .collect()
    )
    first_grant = pl.col("_at").filter(pl.col("_grant")).min()
    viewers = (
        entries.group_by("viewer_id")
        .agg(
            pl.col("_grant").last().alias(GRANTED_NOW),
            first_grant.alias(FIRST_GRANT),
            (~pl.col("_grant") & (pl.col("_at") > first_grant)).any().alias(GAPS),
        )
        .with_row_index(VID)
    )
    entries = entries.join(viewers.select("viewer_id", VID), on="viewer_id").select(VID, "_at", "_grant")
    return Ledger(entries.sort(VID, "_at"), viewers)


def exclusions(events: pl.DataFrame, looked_up: pl.DataFrame, book: Ledger, snapshot_us: int) -> pl.Series:
    """Per row, the consent rule it breaks (an EXCLUDED_REASONS Enum) or null when allowed.

    ``looked_up`` holds, row for row, the viewer's VID, GRANTED_NOW, FIRST_GRANT and GAPS.
    """
    frame = pl.concat([events.select(_ts_us().alias("_at")), looked_up], how="horizontal")
    state = pl.col("_at") >= pl.col(FIRST_GRANT)  # simple history: granted since the first grant
    if frame.get_column(GAPS).any():
        frame = frame.with_columns(_state_with_gaps(frame, book.entries, snapshot_us))
        state = pl.when(pl.col(GAPS)).then(pl.col("_state")).otherwise(state)
    reason = (
        pl.when(pl.col(FIRST_GRANT).is_null())
        .then(pl.lit("never_granted", REASON))
        .when(~pl.col(GRANTED_NOW))
        .then(pl.lit("withdrawn_at_snapshot", REASON))
        .when(pl.col("_at") > snapshot_us)
        .then(pl.lit("after_snapshot", REASON))
        .when(~state.fill_null(False))
        .then(pl.lit("recorded_while_withdrawn", REASON))
    )
    return frame.select(reason.alias("_excluded")).to_series()


def _state_with_gaps(frame: pl.DataFrame, entries: pl.DataFrame, snapshot_us: int) -> pl.Series:
    """Granted-at-event for rows of viewers whose history has gaps (as-of lookup); null elsewhere."""
    rows = (
        frame.with_row_index("_row")
        .filter(pl.col(GAPS).fill_null(False), pl.col(GRANTED_NOW).fill_null(False), pl.col("_at") <= snapshot_us)
        .select("_row", VID, "_at")
        .sort(VID, "_at")
    )
    found = rows.join_asof(entries, on="_at", by=VID, strategy="backward", check_sortedness=False)
    state = pl.repeat(None, frame.height, dtype=pl.Boolean, eager=True).alias("_state")
    return state.scatter(found.get_column("_row"), found.get_column("_grant"))
