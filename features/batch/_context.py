"""The context features of every decision, encoded by the spec, as polars queries.

A decision is a CTA impression or a bonus slate row at time ``t``. Its context joins
the session's state strictly before ``t`` (``_session``), the session's first join if
it is before ``t``, the viewer's history with the creator and the creator's niche, and
encodes each value exactly as :meth:`features.spec.Feature.encode` does. Arithmetic
matches the online runtime bit for bit: integer µs differences divided as float64,
then cast to float32.
"""

from __future__ import annotations

import polars as pl

from features.batch._prepare import ENGINE, Prepared, T
from features.batch._session import STATE_COLUMNS, decision_state, first_join, history
from features.spec import HISTORY_COUNTS, SESSION_COUNTS, Feature, FeatureSpec

DECISIONS = ("cta_impression", "bonus_impression")
# Event columns a decision row keeps (beside its context).
DECISION_KEYS = ("sid", "event_id", "ts", "creator_id", "drop_id", "session_key", "variant",
                 "propensity", "bonus_id", "slate_id", "position")
_FROM_JOIN = ("local_pickup", "device", "channel")  # what the join carries: encoded per session


def _number(expr: pl.Expr, feature: Feature) -> pl.Expr:
    """Feature.encode for a number: null or NaN -> default; then float32."""
    return expr.cast(pl.Float64).fill_nan(None).fill_null(feature.default).cast(pl.Float32)


def _category(expr: pl.Expr, feature: Feature) -> pl.Expr:
    """Feature.encode for a category: code in the vocabulary, unknown -> 0, null -> default."""
    codes = {value: float(i) for i, value in enumerate(feature.categories)}
    return (
        expr.replace_strict(codes, default=0.0, return_dtype=pl.Float64)
        .fill_null(feature.default).cast(pl.Float32)
    )


def _context_exprs(spec: FeatureSpec) -> list[pl.Expr]:
    """One expression per context feature, in spec order."""
    t = pl.col(T)
    joined = pl.col("join_t").is_not_null() & (pl.col("join_t") < t)

    def from_join(column: str) -> pl.Expr:  # encoded per session (session_inputs)
        return pl.when(joined).then(pl.col(column))

    values: dict[str, pl.Expr] = {
        "minute_in_drop": pl.when(joined).then((t - pl.col("drop_started_us")) / 60e6),
        "secs_since_join": pl.when(joined).then((t - pl.col("join_t")) / 1e6),
        "secs_since_last_chat": (t - pl.col("last_chat_t")) / 1e6,
        **{name: pl.col(name) for name in (*SESSION_COUNTS, "sess_slates", *HISTORY_COUNTS)},
        "local_pickup": from_join("local_pickup"),
        "device": from_join("device"),
        "channel": from_join("channel"),
        "creator_niche": pl.col("creator_niche"),
    }
    exprs = []
    for feature in spec.context:
        if feature.name not in values:
            raise ValueError(f"feature spec has context feature {feature.name!r} the batch engine "
                             "does not compute")
        raw = values[feature.name]
        exprs.append(_number(raw, feature).alias(feature.name))  # categories come encoded
    return exprs


def _encode(expr: pl.Expr, feature: Feature) -> pl.Expr:
    return _category(expr, feature) if feature.dtype == "category" else _number(expr, feature)


def decision_rows(prepared: Prepared) -> pl.DataFrame:
    """Every CTA impression and bonus slate row: its keys and its session's state strictly
    before it, in (sid, t) order (the order the label as-of joins rely on)."""
    state = decision_state(prepared.order, DECISIONS).collect(engine=ENGINE)
    keys = prepared.events.select(pl.col(DECISION_KEYS).gather(state.get_column("r")))
    return pl.concat([keys, state.select("type", T, *STATE_COLUMNS)], how="horizontal")


def session_inputs(prepared: Prepared, spec: FeatureSpec) -> pl.DataFrame:
    """Per session (sid): its first join (what it carries encoded by the spec) and its
    viewer's hist_* counts."""
    joins = first_join(prepared.events.lazy()).with_columns(
        _encode(pl.col(name), spec[name]).alias(name) for name in _FROM_JOIN
    )
    return history(prepared).join(joins, on="sid", how="left").collect(engine=ENGINE)


def add_context(
    rows: pl.LazyFrame, sessions: pl.DataFrame, niches: pl.DataFrame, spec: FeatureSpec,
) -> pl.LazyFrame:
    """Add every context feature (spec order, float32) to ``decision_rows``.

    ``sessions`` is :func:`session_inputs` of the same partition; ``niches`` maps
    creator_id to the encoded creator_niche (every category arrives encoded: the niche
    from the catalog, device and channel per session).
    """
    internal = ["join_t", "drop_started_us", "last_chat_t", *_FROM_JOIN,
                *SESSION_COUNTS, "sess_slates", *HISTORY_COUNTS, "creator_niche"]
    return (
        rows.join(sessions.lazy(), on="sid", how="left")
        .join(niches.lazy(), on="creator_id", how="left")
        .with_columns(_context_exprs(spec))
        .drop([c for c in internal if c not in spec.context_names])
    )
