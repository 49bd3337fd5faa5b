"""Schema v1 validation of staged rows, vectorized: every row valid or one reason.

The checks run in a fixed order and a row's reason is the first check it fails, so
a record always gets one code (``missing_field:<name>``, ``bad_timestamp``, ...).
``mark`` evaluates all checks together over the whole frame and adds ``_failed``;
``first_failures`` finds the deciding check for the (few) failed rows. Fields a type
does not carry are ignored (``_ignored`` counts such records) and nulled.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from features.ingest._columns import BAD_TS, EXTRA, WRONG_TYPE, compact, flag_name
from features.schema import (
    CHANNELS,
    COMMON_FIELDS,
    CONSENT_ACTIONS,
    CONSENT_PURPOSES,
    EVENT_TYPES,
    FIELD_KINDS,
    MAX_ID_CHARS,
    MAX_STRING_CHARS,
    TYPE_FIELDS,
)

TYPE_ENUM = pl.Enum(list(EVENT_TYPES))
FAILED = "_failed"  # the row fails at least one check
IGNORED = "_ignored"  # the row had fields outside its type's schema
CHECK = "_check"  # index of the first failed check, on failed rows
INT32_MAX = 2**31 - 1
STRING_FIELDS = tuple(f for f, k in FIELD_KINDS.items() if k == "str")
# Identifiers get the tighter limit; the rest (type, device, ...) MAX_STRING_CHARS.
ID_FIELDS = frozenset(f for f in STRING_FIELDS if f.endswith("_id")) | {"variant"}
ENUMS: dict[str, tuple[str, ...]] = {
    "channel": CHANNELS,
    "purpose": CONSENT_PURPOSES,
    "action": CONSENT_ACTIONS,
}
# Ids that stay unhashed in clean outputs must not carry the raw viewer id.
EMBED_GUARDED = ("event_id", "session_id", "slate_id")


@dataclass(frozen=True)
class Check:
    """One validation rule: the quarantine code it gives and the field it concerns."""

    code: str
    field: str
    expr: pl.Expr


@dataclass(frozen=True)
class Limits:
    min_ts_us: int
    max_ts_us: int


def carriers(field: str) -> list[str]:
    """Event types that carry ``field`` (required or optional); all types for common fields."""
    if field in COMMON_FIELDS:
        return list(EVENT_TYPES)
    return [t for t, spec in EVENT_TYPES.items() if field in spec.required + spec.optional]


def event_type() -> pl.Expr:
    """The row's type as an Enum of the schema's types (null when unknown)."""
    return pl.col("type").cast(pl.String).cast(TYPE_ENUM, strict=False)


def applies(field: str) -> pl.Expr:
    """True where the row's type (column ``_t``) carries ``field``."""
    if field in COMMON_FIELDS:
        return pl.lit(True)
    return pl.col("_t").is_in(carriers(field)).fill_null(False)


def _flag(field: str, flag: str) -> pl.Expr:
    return pl.col(flag_name(field, flag))


def _missing(field: str) -> pl.Expr:
    bad_ts = _flag(field, BAD_TS) if FIELD_KINDS[field] == "ts" else pl.lit(False)
    return pl.col(field).is_null() & ~_flag(field, WRONG_TYPE) & ~bad_ts


def _chars(field: str, bytes_only: bool = False) -> pl.Expr:
    text = pl.col(field).str
    return text.len_bytes() if bytes_only else text.len_chars()


def checks(limits: Limits) -> list[Check]:
    """Every check, in precedence order, as expressions over a staged frame with ``_t``."""
    out: list[Check] = []
    for name in COMMON_FIELDS:
        out.append(Check(f"missing_field:{name}", name, _missing(name)))
        out.append(Check(f"wrong_type:{name}", name, _flag(name, WRONG_TYPE)))
    out.append(Check("unknown_type", "type", pl.col("_t").is_null()))
    for name in TYPE_FIELDS:
        requirers = [t for t, spec in EVENT_TYPES.items() if name in spec.required]
        out.append(Check(f"missing_field:{name}", name, pl.col("_t").is_in(requirers) & _missing(name)))
    for name in TYPE_FIELDS:
        out.append(Check(f"wrong_type:{name}", name, applies(name) & _flag(name, WRONG_TYPE)))
    for name in STRING_FIELDS:
        limit = MAX_ID_CHARS if name in ID_FIELDS else MAX_STRING_CHARS
        # len_bytes is cheap and bounds len_chars from above: count chars only past it.
        long = (_chars(name, bytes_only=True) > limit) & (_chars(name) > limit)
        out.append(Check("string_too_long", name, applies(name) & long))
    for name in ("ts", "drop_started_at"):
        out.append(Check("bad_timestamp", name, applies(name) & _flag(name, BAD_TS)))
    for name in STRING_FIELDS:
        out.append(Check(f"bad_value:{name}", name, applies(name) & (_chars(name, bytes_only=True) == 0)))
    for name, allowed in ENUMS.items():
        col = pl.col(name)
        out.append(Check(f"bad_value:{name}", name, applies(name) & col.is_not_null() & ~col.is_in(allowed)))
    for name in ("propensity", "amount"):
        out.append(Check(f"bad_value:{name}", name, applies(name) & ~pl.col(name).is_finite()))
    amount, propensity, position = pl.col("amount"), pl.col("propensity"), pl.col("position")
    out.append(Check("negative_amount", "amount", applies("amount") & (amount < 0)))
    out.append(
        Check("bad_propensity", "propensity", applies("propensity") & ((propensity <= 0) | (propensity > 1)))
    )
    out.append(Check("bad_position", "position", applies("position") & ((position < 1) | (position > INT32_MAX))))
    ts_us = pl.col("ts").dt.epoch("us")
    out.append(Check("ts_before_min", "ts", ts_us < limits.min_ts_us))
    out.append(Check("ts_in_future", "ts", ts_us > limits.max_ts_us))
    viewer = pl.col("viewer_id")
    for name in EMBED_GUARDED:
        embeds = pl.col(name).str.contains(viewer, literal=True)
        out.append(Check("id_embeds_viewer_id", name, applies(name) & embeds))
    # A null (unknown) outcome is never a failure: each check states its own condition.
    return [Check(c.code, c.field, c.expr.fill_null(False)) for c in out]


def ignored_fields() -> pl.Expr:
    """True where a record carries fields outside the schema or outside its type."""
    foreign = [
        ~applies(n) & (pl.col(n).is_not_null() | _flag(n, WRONG_TYPE) | (_flag(n, BAD_TS) if FIELD_KINDS[n] == "ts"
                                                                          else pl.lit(False)))
        for n in TYPE_FIELDS
    ]
    return (pl.any_horizontal(foreign) | pl.col(EXTRA)).fill_null(False)


def mark(staged: pl.LazyFrame, limits: Limits) -> pl.LazyFrame:
    """Add ``_failed`` (fails some check) and ``_ignored`` (carries ignored fields).

    Then null the fields the row's type does not carry and compact the strings; the
    checks only ever read fields the type carries, so they give the same answers after.
    """
    rules = checks(limits)
    return (
        staged.with_columns(event_type().alias("_t"))
        .with_columns(pl.any_horizontal([c.expr for c in rules]).alias(FAILED), ignored_fields().alias(IGNORED))
        .with_columns(pl.when(applies(n)).then(pl.col(n)).alias(n) for n in TYPE_FIELDS)
        .drop("_t")
        .with_columns(compact())
    )


def first_failures(failed: pl.DataFrame, limits: Limits) -> tuple[pl.DataFrame, list[Check]]:
    """Add ``_check``: the index (into the returned rules) of each failed row's first failed check."""
    rules = checks(limits)
    first = pl.coalesce([pl.when(c.expr).then(pl.lit(i, pl.UInt16)) for i, c in enumerate(rules)])
    tagged = (
        failed.with_columns(pl.col(pl.Categorical).cast(pl.String))
        .with_columns(event_type().alias("_t"))
        .with_columns(first.alias(CHECK))
        .drop("_t")
    )
    return tagged, rules
