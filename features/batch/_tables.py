"""The CTA and bonus-ranking tables of one set of whole viewers, as polars lazy queries.

CTA: one row per cta_impression with its context, the shown variant's item features
and the label (a click on that variant or an enroll within ``(t, t + window]``).
Bonus: one row per slate x bonus with its context, the bonus's item features and the
graded relevance (2 claimed and picked up, 1 claimed, 0 otherwise). Labels come from
forward as-of joins and a per-session aggregate; no row loops. No per-viewer id leaves
here (session_key stays, for splits).
"""

from __future__ import annotations

import polars as pl

from features.batch._context import add_context
from features.batch._prepare import T
from features.spec import Feature, FeatureSpec

CTA_KEYS = ("impression_id", "ts", "creator_id", "drop_id", "session_key", "variant", "propensity")
CTA_LABELS = ("clicked", "enrolled", "label")
BONUS_KEYS = ("slate_id", "ts", "creator_id", "drop_id", "session_key", "bonus_id", "position",
              "propensity")
BONUS_LABELS = ("claimed", "picked_up", "relevance")


def _of_type(events: pl.LazyFrame, kind: str) -> pl.LazyFrame:
    return events.filter(pl.col("type") == kind)


def _first_after(
    left: pl.LazyFrame, right: pl.LazyFrame, *, on: str, by: list[str], inclusive: bool,
) -> pl.LazyFrame:
    """Join the first time ``right_on`` after ``on`` (``>=`` if inclusive, else ``>``) per ``by``.

    ``left`` must be in time order within each ``by`` group (``decision_rows`` are in
    (sid, t) order and ``by`` starts with sid); ``right`` is sorted here.
    """
    right_on = right.collect_schema().names()[-1]
    return left.join_asof(
        right.sort(right_on), left_on=on, right_on=right_on, by=by, strategy="forward",
        allow_exact_matches=inclusive, check_sortedness=False,
    )


def _items(
    points: pl.LazyFrame, items: pl.DataFrame, key: str, features: tuple[Feature, ...],
) -> pl.LazyFrame:
    """Join an item's encoded features; an item missing from the catalog gets defaults."""
    return points.join(items.lazy(), on=["creator_id", key], how="left").with_columns(
        pl.col(f.name).fill_null(f.default).cast(pl.Float32) for f in features
    )


def cta_table(
    events: pl.LazyFrame, rows: pl.LazyFrame, sessions: pl.DataFrame, niches: pl.DataFrame,
    variants: pl.DataFrame, spec: FeatureSpec,
) -> pl.LazyFrame:
    """One row per CTA impression: keys, context, shown-variant features, labels.

    ``rows`` are ``_context.decision_rows`` of ``events``; ``sessions`` and ``niches``
    are what ``_context.add_context`` needs.
    """
    window_us = round(spec.label_window_s * 1_000_000)
    points = _of_type(rows, "cta_impression").rename({"event_id": "impression_id"})
    clicks = _of_type(events, "cta_click").select("sid", "variant", pl.col(T).alias("click_t"))
    enrolls = _of_type(events, "enroll").select("sid", pl.col(T).alias("enroll_t"))
    in_window = pl.col(T) + window_us
    labelled = (
        _first_after(points, clicks, on=T, by=["sid", "variant"], inclusive=False)
        .pipe(_first_after, enrolls, on=T, by=["sid"], inclusive=False)
        .with_columns(
            (pl.col("click_t") <= in_window).fill_null(False).alias("clicked"),
            (pl.col("enroll_t") <= in_window).fill_null(False).alias("enrolled"),
        )
        .with_columns((pl.col("clicked") | pl.col("enrolled")).cast(pl.Int8).alias("label"))
    )
    table = _items(add_context(labelled, sessions, niches, spec), variants, "variant", spec.cta_item)
    return table.select(*CTA_KEYS, *spec.cta_names, *CTA_LABELS)


def bonus_table(
    events: pl.LazyFrame, rows: pl.LazyFrame, sessions: pl.DataFrame, niches: pl.DataFrame,
    bonuses: pl.DataFrame, spec: FeatureSpec,
) -> pl.LazyFrame:
    """One row per slate x bonus: keys, context, bonus features, graded relevance.

    Claimed: a claim of this bonus in this slate at or after the showing; picked up: a
    pickup_select of the bonus at or after that (first) claim, i.e. the session's last
    pickup of it is not before the claim.
    """
    points = _of_type(rows, "bonus_impression")
    claims = _of_type(events, "bonus_claim").select(
        "sid", "slate_id", "bonus_id", pl.col(T).alias("claim_t"))
    last_pickup = (
        _of_type(events, "pickup_select").group_by("sid", "bonus_id")
        .agg(pl.col(T).max().alias("last_pickup_t"))
    )
    labelled = (
        _first_after(points, claims, on=T, by=["sid", "slate_id", "bonus_id"], inclusive=True)
        .join(last_pickup, on=["sid", "bonus_id"], how="left")
        .with_columns(
            pl.col("claim_t").is_not_null().alias("claimed"),
            (pl.col("last_pickup_t") >= pl.col("claim_t")).fill_null(False).alias("picked_up"),
        )
        .with_columns(
            (pl.col("claimed").cast(pl.Int8) + pl.col("picked_up").cast(pl.Int8)).alias("relevance")
        )
    )
    table = _items(add_context(labelled, sessions, niches, spec), bonuses, "bonus_id", spec.bonus_item)
    return table.select(*BONUS_KEYS, *spec.bonus_names, *BONUS_LABELS)
