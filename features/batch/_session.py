"""What a session and its viewer had done before a decision, as polars queries.

Three per-session inputs of the context features (definitions: ``features/spec.py``
and the shared brief): the running state strictly before each decision (``sess_*``
counts, slates, last chat), the session's first join, and the viewer's history with
the creator over sessions that ended before this one began. No Python row loops:
cumulative sums over the (sid, t) order, forward fills, gathers, an as-of join.
"""

from __future__ import annotations

import polars as pl

from features.batch._prepare import ENGINE, Prepared, T
from features.spec import HISTORY_COUNTS, SESSION_COUNTS

STATE_COLUMNS: tuple[str, ...] = (*SESSION_COUNTS, "sess_slates", "last_chat_t")
_BY_VIEWER = ("viewer_key", "creator_id")
_HISTORY_TYPES = {name: kind for name, kind in HISTORY_COUNTS.items() if kind != "session"}


def _exclusive_count(flag: pl.Expr) -> pl.Expr:
    """Rows with ``flag`` before this row (in frame order)."""
    as_int = flag.cast(pl.UInt32)
    return as_int.cum_sum() - as_int


def decision_state(order: pl.DataFrame, decisions: tuple[str, ...]) -> pl.LazyFrame:
    """``r``, ``type`` and ``t`` of every event of the ``decisions`` types, with its
    session's state strictly before it: sess_* counts, sess_slates and last_chat_t (null if no chat).

    ``order`` is :attr:`Prepared.order` (sorted by sid, t). Running counts read at the
    first row of the decision's instant minus at the first row of its session count the
    session's events strictly before that instant, so events at the same ts (in any
    order) are all excluded together.
    """
    sid = pl.col("sid")
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    new_session = sid.ne_missing(sid.shift(1))
    new_instant = new_session | pl.col(T).ne_missing(pl.col(T).shift(1))
    flags = {name: pl.col("type") == kind for name, kind in SESSION_COUNTS.items()}
    flags["sess_slates"] = pl.col("slate_first")
    at_instant, at_session = pl.col("instant_row"), pl.col("session_row")
    return (
        order.lazy()
        .with_columns(
            pl.when(new_instant).then(row).forward_fill().alias("instant_row"),
            pl.when(new_session).then(row).forward_fill().alias("session_row"),
            # Matching rows before this row (all sessions), and the last chat before it.
            *(_exclusive_count(flag).alias(f"_{name}") for name, flag in flags.items()),
            pl.when(pl.col("type") == "chat").then(pl.col(T)).forward_fill().shift(1)
            .alias("_last_chat_t"),
        )
        .select(
            "r", "type", T,
            *((pl.col(f"_{n}").gather(at_instant) - pl.col(f"_{n}").gather(at_session)).alias(n)
              for n in flags),
            pl.col("_last_chat_t").gather(at_instant).alias("last_chat_t"),
        )
        .filter(pl.col("type").is_in(decisions))
        .select(
            "r", "type", T, *flags,
            pl.when(pl.col("sess_chats") > 0).then(pl.col("last_chat_t")).alias("last_chat_t"),
        )
    )


def first_join(events: pl.LazyFrame) -> pl.LazyFrame:
    """Per session (sid): its first join (earliest ts, then event_id) and what it carries."""
    return (
        events.filter(pl.col("type") == "join")
        .select("sid", T, "event_id", "drop_started_at", "device", "channel", "local_pickup")
        .sort("sid", T, "event_id")
        .group_by("sid")
        .agg(
            pl.col(T).first().alias("join_t"),
            pl.col("drop_started_at").first().dt.epoch("us").alias("drop_started_us"),
            *(pl.col(c).first() for c in ("device", "channel", "local_pickup")),
        )
    )


def history(prepared: Prepared) -> pl.LazyFrame:
    """Per session (sid): hist_* sums over the viewer's sessions with the same creator
    that ended (last event) strictly before this session began (first event).

    In the (sid, t) order a session's first row gives its start, its last row its end,
    running counts its counts. Sessions sorted by (viewer-creator, end) carry running
    sums; an as-of join on ``end < start`` picks, per session, the sums over every
    session that ended earlier (sessions ending at one instant are merged first).
    """
    sid, vc, end = pl.col("sid"), pl.col("vc"), pl.col("end")
    flags = {n: pl.col("type") == kind for n, kind in _HISTORY_TYPES.items()}
    counted = prepared.order.lazy().select(
        "r", "sid", T, "type", *(flag.cast(pl.UInt32).cum_sum().alias(n) for n, flag in flags.items()),
    )
    starts = counted.filter(sid.ne_missing(sid.shift(1))).select(
        "r", "sid", pl.col(T).alias("start"),
        *((pl.col(n) - flag.cast(pl.UInt32)).alias(f"_{n}") for n, flag in flags.items()),
    )
    ends = counted.filter(sid.ne_missing(sid.shift(-1))).select(
        pl.col(T).alias("end"), *_HISTORY_TYPES,
    )
    sessions = pl.concat([starts, ends], how="horizontal").collect(engine=ENGINE)
    who = prepared.events.select(pl.col(_BY_VIEWER).gather(sessions.get_column("r")))
    sessions = pl.concat([sessions, who], how="horizontal").select(
        "sid", "start", "end",
        sid.min().over(_BY_VIEWER).alias("vc"),  # one integer per (viewer, creator)
        pl.lit(1, pl.UInt32).alias("hist_sessions"),
        *((pl.col(n) - pl.col(f"_{n}")).alias(n) for n in _HISTORY_TYPES),
    )
    new_vc = vc.ne_missing(vc.shift(1))
    ended = (
        sessions.lazy().sort("vc", "end")
        .select(
            "vc", "end",
            *((pl.col(n).cum_sum() - pl.when(new_vc).then(pl.col(n).cum_sum() - pl.col(n))
               .forward_fill()).alias(n) for n in HISTORY_COUNTS),
        )
        # Keep the last of the sessions ending at one instant: its sums include them all.
        .filter(vc.ne_missing(vc.shift(-1)) | end.ne_missing(end.shift(-1)))
        .sort("end")
    )
    return (
        sessions.lazy().select("sid", "vc", "start")
        .sort("start")
        .join_asof(
            ended, left_on="start", right_on="end", by="vc",
            strategy="backward", allow_exact_matches=False, check_sortedness=False,
        )
        .select("sid", *HISTORY_COUNTS)
    )
