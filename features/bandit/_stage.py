"""The columns of a logged-bandit table, typed, whatever the file format gave.

``layout`` sorts the file's columns into the documented ones, the context columns
(``ctx_<name>``: numeric, or a category when some non-empty value is not a number),
the consent column and the ignored rest. ``stage`` gives each documented column its
type plus a ``#wt`` flag (present but of the wrong type), so CSV strings and Parquet
types meet the same checks. Empty strings count as absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from features.bandit._source import REC, RawTable
from features.bandit._spec import BanditSpec
from features.errors import ConfigError, DataError
from features.ingest._columns import UTC_US, parse_ts

REQUIRED = ("timestamp", "session_key", "action", "reward", "propensity")
OPTIONAL = ("position",)
CTX_PREFIX = "ctx_"
WRONG = "#wt"  # suffix: the value is present but of the wrong type
CONSENT = "_consent"  # staged consent: True, False, or null (absent); CONSENT + WRONG: unreadable
TRUE_TEXT = ("true", "t", "yes", "y", "1")
FALSE_TEXT = ("false", "f", "no", "n", "0")

Kind = Literal["numeric", "category"]


@dataclass(frozen=True)
class Layout:
    """Which file columns play which part."""

    context: tuple[tuple[str, Kind], ...]  # ctx columns in model order, with their kind
    consent_column: str | None
    has_position: bool
    ignored: tuple[str, ...]  # columns outside the format: never read, never written


def wrong(name: str) -> str:
    return name + WRONG


def layout(table: RawTable, consent_column: str | None, reuse: BanditSpec | None) -> Layout:
    """Sort the columns; raise DataError/ConfigError on a layout the format does not allow."""
    columns = [c for c in table.frame.columns if c != REC]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(f"{table.name}: required column(s) {', '.join(missing)} missing (found: "
                        f"{', '.join(columns)}); a bandit log needs {', '.join(REQUIRED)} and ctx_<name> columns")
    if consent_column is not None:
        if consent_column in REQUIRED + OPTIONAL or consent_column.startswith(CTX_PREFIX):
            raise ConfigError(f"consent_column {consent_column!r} names a data column of the format; name the "
                              "column that holds each row's consent (true/false)")
        if consent_column not in columns:
            raise ConfigError(f"{table.name}: consent column {consent_column!r} is not in the file (found: "
                              f"{', '.join(columns)}); fix the name, or declare consent_basis instead")
    bare = [c for c in columns if c == CTX_PREFIX]
    if bare:
        raise DataError(f"{table.name}: a context column is named just {CTX_PREFIX!r}; name it ctx_<name>")
    ctx = sorted(c for c in columns if c.startswith(CTX_PREFIX))
    if reuse is None:
        context = tuple((c, _infer_kind(table, c)) for c in ctx)
    else:
        wanted = reuse.context_names
        if sorted(wanted) != ctx:
            raise DataError(f"{table.name}: context columns {ctx} differ from the spec's {sorted(wanted)}; "
                            "a log evaluated with a model's spec needs the same ctx_ columns")
        context = tuple((f.name, "category" if f.dtype == "category" else "numeric") for f in reuse.context)
    known = {*REQUIRED, *OPTIONAL, *ctx, *([consent_column] if consent_column else [])}
    return Layout(context, consent_column, "position" in columns, tuple(c for c in columns if c not in known))


def _infer_kind(table: RawTable, name: str) -> Kind:
    dtype = table.frame.schema[name]
    if dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null:
        return "numeric"
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return "category"
    if dtype == pl.String:
        col = pl.col(name).str.strip_chars()
        parsed = table.frame.select((col.is_not_null() & (col != "") & col.cast(pl.Float64, strict=False).is_null())
                                    .any()).item()
        return "category" if parsed else "numeric"
    raise DataError(f"{table.name}: context column {name!r} has type {dtype}; context columns must hold "
                    "numbers or strings: convert it (e.g. a date to a number of days)")


def stage(table: RawTable, lay: Layout) -> pl.DataFrame:
    """Typed documented columns, each with its wrong-type flag, plus ``_rec`` and the consent."""
    schema = table.frame.schema
    exprs: list[pl.Expr] = [pl.col(REC)]
    ts, ts_wrong = _timestamp(schema["timestamp"])
    exprs += [ts.alias("timestamp"), ts_wrong.alias(wrong("timestamp"))]
    for name in ("session_key", "action"):
        value, bad = _text(name, schema[name], integers=True)
        exprs += [value.alias(name), bad.alias(wrong(name))]
    for name in ("reward", "propensity"):
        value, bad = _number(name, schema[name], booleans=name == "reward")
        exprs += [value.alias(name), bad.alias(wrong(name))]
    if lay.has_position:
        value, bad = _number("position", schema["position"], booleans=False, integral=True)
    else:
        value, bad = pl.lit(None, pl.Float64), pl.lit(False)
    exprs += [value.alias("position"), bad.alias(wrong("position"))]
    for name, kind in lay.context:
        if kind == "numeric":
            value, bad = _number(name, schema[name], booleans=True)
        else:
            value, bad = _text(name, schema[name], integers=True)
        exprs += [value.alias(name), bad.alias(wrong(name))]
    if lay.consent_column is not None:
        value, bad = _consent(lay.consent_column, schema[lay.consent_column])
    else:
        value, bad = pl.lit(True), pl.lit(False)
    exprs += [value.alias(CONSENT), bad.alias(wrong(CONSENT))]
    return table.frame.select(exprs)


def _given(name: str) -> pl.Expr:
    return pl.col(name).is_not_null()


def _timestamp(dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(UTC µs datetime, present-but-unusable flag): ISO 8601 text with an offset, or an aware timestamp."""
    col = pl.col("timestamp")
    none = pl.lit(None, UTC_US)
    if dtype == pl.String:
        parsed = parse_ts(col.str.strip_chars())
        return parsed, _given("timestamp") & parsed.is_null()
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us"), pl.lit(False)
    if dtype == pl.Null:
        return none, pl.lit(False)
    return none, _given("timestamp")  # naive timestamps (no offset), dates, numbers: not anchored to UTC


def _text(name: str, dtype: pl.DataType, integers: bool) -> tuple[pl.Expr, pl.Expr]:
    col = pl.col(name)
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        text = col.cast(pl.String)
        return pl.when(text != "").then(text), pl.lit(False)
    if integers and dtype.is_integer():
        return col.cast(pl.String), pl.lit(False)
    if dtype == pl.Null:
        return pl.lit(None, pl.String), pl.lit(False)
    return pl.lit(None, pl.String), _given(name)


def _number(name: str, dtype: pl.DataType, booleans: bool, integral: bool = False) -> tuple[pl.Expr, pl.Expr]:
    """(Float64 value, wrong-type flag); non-finite numbers stay as they are for the checks."""
    col = pl.col(name)
    none = pl.lit(None, pl.Float64)
    if dtype == pl.String:
        text = col.str.strip_chars()
        value = text.cast(pl.Float64, strict=False)
        bad = text.is_not_null() & (text != "") & value.is_null()
    elif dtype.is_numeric() or (booleans and dtype == pl.Boolean):
        value = col.cast(pl.Float64, strict=False)
        bad = _given(name) & value.is_null()
    elif dtype == pl.Null:
        return none, pl.lit(False)
    else:
        return none, _given(name)
    if integral:
        whole = value.is_finite() & (value == value.floor())
        bad = bad | (value.is_not_null() & ~whole)
        value = pl.when(whole).then(value)
    return value, bad.fill_null(False)


def _consent(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(True/False/null, unreadable flag): booleans, 1/0, or true/false/yes/no/t/f/y/n text."""
    col = pl.col(name)
    if dtype == pl.Boolean:
        return col, pl.lit(False)
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        text = col.cast(pl.String).str.strip_chars().str.to_lowercase()
        value = (pl.when(text.is_in(TRUE_TEXT)).then(pl.lit(True))
                 .when(text.is_in(FALSE_TEXT)).then(pl.lit(False)))
        return value, (text.is_not_null() & (text != "") & value.is_null()).fill_null(False)
    if dtype.is_numeric():
        value = pl.when(col == 1).then(pl.lit(True)).when(col == 0).then(pl.lit(False))
        return value, (_given(name) & value.is_null()).fill_null(False)
    if dtype == pl.Null:
        return pl.lit(None, pl.Boolean), pl.lit(False)
    return pl.lit(None, pl.Boolean), _given(name)
