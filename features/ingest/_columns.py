"""Staging: records of any origin as typed, compact columns plus wrong-type flags.

Both readers (JSONL records, Parquet columns) produce the same shape, so one
vectorized validation serves both. For every schema field ``f`` a staged frame has
column ``f`` in its typed dtype (null when absent or unusable), a Boolean ``f#wt``
(present but of the wrong type) and, for timestamps, ``f#bt`` (a string that is not
ISO 8601 with a UTC offset, or a Parquet timestamp without a time zone). ``_extra``
marks records with fields outside the schema. After validation, ``compact`` turns
string fields other than ``event_id`` into Categoricals (4 bytes a row instead of a
16-byte view), which keeps 10M events in memory at about 1.5 GB; they become plain
strings again on output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import polars as pl

from features.schema import FIELD_KINDS

UTC_US = pl.Datetime("us", "UTC")
# ISO 8601 with a UTC offset: 2026-08-03T17:00:00Z, ...T17:00:00.123456+02:00
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
WRONG_TYPE = "#wt"
BAD_TS = "#bt"
EXTRA = "_extra"
REC = "_rec"  # 1-based line number (JSONL) or row number (Parquet) in its file
ORIGINAL = "~in~"  # prefix of a Parquet file's own columns while staging
KNOWN_FIELDS = frozenset(FIELD_KINDS)
CATEGORICAL_FIELDS = frozenset(f for f, k in FIELD_KINDS.items() if k == "str" and f != "event_id")


def flag_name(field: str, flag: str) -> str:
    return f"{field}{flag}"


def _flags_of(field: str) -> tuple[str, ...]:
    kinds = (WRONG_TYPE, BAD_TS) if FIELD_KINDS[field] == "ts" else (WRONG_TYPE,)
    return tuple(flag_name(field, k) for k in kinds)


FLAGS: tuple[str, ...] = tuple(name for f in FIELD_KINDS for name in _flags_of(f))
# Every staged frame has these columns, in this order.
STAGED_COLUMNS: tuple[str, ...] = (*(c for f in FIELD_KINDS for c in (f, *_flags_of(f))), EXTRA)


def staged_dtype(field: str) -> pl.DataType:
    """The dtype of ``field`` in a staged frame."""
    kind = FIELD_KINDS[field]
    if kind == "str":
        return pl.String()
    return {"ts": UTC_US, "float": pl.Float64(), "int": pl.Int64(), "bool": pl.Boolean()}[kind]


STAGED_SCHEMA: dict[str, pl.DataType] = {f: staged_dtype(f) for f in FIELD_KINDS}

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NONE = type(None)
# Python types a JSON value may have, per kind, to be taken without a look at each value.
_FAST_TYPES: dict[str, frozenset[type]] = {
    "str": frozenset({str, _NONE}),
    "ts": frozenset({str, _NONE}),
    "float": frozenset({float, _NONE}),
    "int": frozenset(),  # always checked one by one (range, integral floats)
    "bool": frozenset({bool, _NONE}),
}


def parse_ts(text: pl.Expr) -> pl.Expr:
    """ISO 8601 strings with a UTC offset to UTC µs datetimes (null when unparseable)."""
    return text.str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)


def stage_records(records: Sequence[dict[str, Any]], numbers: Sequence[int]) -> pl.DataFrame:
    """Stage parsed JSON objects as typed columns with flags; ``numbers`` become ``_rec``.

    Records are taken in groups of the same key sequence (a producer writes each event
    type the same way), so each group's values come out by one ``itemgetter`` pass
    rather than a dictionary lookup per field and record. Rows come out grouped, not
    in input order; ``_rec`` keeps the order.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(tuple(record), []).append(i)
    values: dict[str, list[Any]] = {f: [] for f in FIELD_KINDS}
    order: list[int] = []
    extra: list[bool] = []
    for keys, members in groups.items():
        group = [records[i] for i in members]
        order += members
        extra += [not KNOWN_FIELDS.issuperset(keys)] * len(members)
        known = [k for k in keys if k in KNOWN_FIELDS]
        taken: dict[str, Sequence[Any]] = {}
        if len(known) == 1:
            taken[known[0]] = [r[known[0]] for r in group]
        elif known:
            taken = dict(zip(known, zip(*map(itemgetter(*known), group), strict=True), strict=True))
        for field, column in values.items():
            column.extend(taken.get(field, (None,) * len(members)))
    series: list[pl.Series] = []
    for field, kind in FIELD_KINDS.items():
        typed, wrong = _convert_values(field, kind, values.pop(field))
        series += [typed, wrong.alias(flag_name(field, WRONG_TYPE))]
    series.append(pl.Series(EXTRA, extra, dtype=pl.Boolean))
    series.append(pl.Series(REC, [numbers[i] for i in order], dtype=pl.Int64))
    frame = pl.DataFrame(series, height=len(records))
    ts_fields = [f for f, k in FIELD_KINDS.items() if k == "ts"]
    return frame.with_columns(
        *(parse_ts(pl.col(f)).alias(f) for f in ts_fields),
        *((pl.col(f).is_not_null() & parse_ts(pl.col(f)).is_null()).alias(flag_name(f, BAD_TS)) for f in ts_fields),
    ).select(*STAGED_COLUMNS, REC)


def compact() -> pl.Expr:
    """Cast the repetitive string fields to Categorical (after validation, which reads strings)."""
    return pl.col(*sorted(CATEGORICAL_FIELDS)).cast(pl.Categorical)


def _convert_values(field: str, kind: str, values: list[Any]) -> tuple[pl.Series, pl.Series]:
    """Typed series of ``values`` and, per value, whether its JSON type was wrong."""
    dtype = pl.Int64() if kind == "int" else STAGED_SCHEMA[field] if kind in ("float", "bool") else pl.String()
    types = set(map(type, values))
    if types <= _FAST_TYPES[kind] or (kind == "int" and types <= {int, _NONE} and _in_int64(values)):
        return pl.Series(field, values, dtype=dtype), pl.repeat(False, len(values), dtype=pl.Boolean, eager=True)
    typed: list[Any] = []
    wrong: list[bool] = []
    for value in values:
        ok, converted = _coerce(kind, value)
        typed.append(converted)
        wrong.append(not ok)
    return pl.Series(field, typed, dtype=dtype), pl.Series(wrong, dtype=pl.Boolean)


def _in_int64(values: list[int | None]) -> bool:
    present = [v for v in values if v is not None]
    return not present or (min(present) >= _INT64_MIN and max(present) <= _INT64_MAX)


def _coerce(kind: str, value: Any) -> tuple[bool, Any]:
    """(type ok, typed value) for one JSON value; None is absent, never wrong."""
    if value is None:
        return True, None
    vtype = type(value)
    if kind in ("str", "ts"):
        return (True, value) if vtype is str else (False, None)
    if kind == "bool":
        return (True, value) if vtype is bool else (False, None)
    if kind == "float":
        if vtype is float:
            return True, value
        if vtype is int:
            try:
                return True, float(value)
            except OverflowError:  # beyond float range: keep it, as a non-finite number
                return True, math.inf if value > 0 else -math.inf
        return False, None
    # kind == "int": integers, or floats with an integral value, within int64
    if vtype is float and math.isfinite(value) and value == math.floor(value):
        value = int(value)
        vtype = int
    if vtype is int and _INT64_MIN <= value <= _INT64_MAX:
        return True, value
    return False, None


def stage_scan(schema: pl.Schema) -> list[pl.Expr]:
    """Staging expressions over a Parquet file's columns, renamed with ``ORIGINAL``."""
    exprs: list[pl.Expr] = []
    for field, kind in FIELD_KINDS.items():
        if field in schema:
            value, wrong, bad_ts = _cast_column(pl.col(ORIGINAL + field), kind, schema[field])
        else:
            value, wrong, bad_ts = pl.lit(None), pl.lit(False), pl.lit(False)
        exprs.append(value.cast(STAGED_SCHEMA[field]).alias(field))
        exprs.append(wrong.alias(flag_name(field, WRONG_TYPE)))
        if kind == "ts":
            exprs.append(bad_ts.alias(flag_name(field, BAD_TS)))
    extras = [pl.col(ORIGINAL + c).is_not_null() for c in schema if c not in KNOWN_FIELDS]
    exprs.append(pl.any_horizontal(extras).alias(EXTRA) if extras else pl.lit(False).alias(EXTRA))
    return exprs


def _cast_column(col: pl.Expr, kind: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(typed value, wrong-type flag, bad-timestamp flag) for one Parquet column."""
    given = col.is_not_null()
    no, none = pl.lit(False), pl.lit(None)
    if dtype == pl.Null:
        return none, no, no
    if kind == "str":
        if dtype == pl.String:
            return col, no, no
        if isinstance(dtype, pl.Categorical | pl.Enum):
            return col.cast(pl.String), no, no
        return none, given, no
    if kind == "ts":
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:  # a timestamp without offset: not anchored to UTC
                return none, no, given
            return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us"), no, no
        if dtype == pl.Date:
            return none, no, given
        if dtype == pl.String:
            parsed = parse_ts(col)
            return parsed, no, given & parsed.is_null()
        return none, given, no
    if kind == "bool":
        return (col, no, no) if dtype == pl.Boolean else (none, given, no)
    if kind == "float":
        if dtype.is_numeric():
            cast = col.cast(pl.Float64, strict=False)
            return cast, given & cast.is_null(), no
        return none, given, no
    # kind == "int": integers, or floats with an integral value, within int64
    if dtype.is_integer():
        cast = col.cast(pl.Int64, strict=False)
        return cast, given & cast.is_null(), no
    if dtype.is_float():
        integral = col.is_finite() & (col == col.floor())
        cast = pl.when(integral).then(col.cast(pl.Int64, strict=False))
        return cast, given & cast.is_null(), no
    return none, given, no
