"""Checks of staged bandit rows, in precedence order: a bad row gets its first failure.

Consent comes first: an unreadable consent value quarantines the row; a row without
consent (false, or no value) is excluded and counted, never validated further and
never kept. Codes follow ingest's quarantine: ``missing_field:<col>``,
``wrong_type:<col>``, ``bad_value:<col>``, ``bad_timestamp``, ``bad_propensity``,
``bad_position``, ``string_too_long``, ``unknown_action`` (an action a reused spec does
not know), and ``malformed_row`` for a CSV row with the wrong number of fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from features.bandit._stage import CONSENT, Layout, wrong
from features.schema import MAX_ID_CHARS, MAX_STRING_CHARS

INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
STATE = "_state"  # per row: "clean", "quarantined", "no_consent", "consent_missing"
CHECK = "_check"  # index of the first failed check (quarantined rows)
EXCLUDED_REASONS = ("no_consent", "consent_missing")

_KIND_TEXT = {
    "timestamp": "an ISO 8601 time with a UTC offset (e.g. 2026-08-03T17:00:00Z) or a Parquet timestamp with "
                 "a time zone",
    "session_key": "a string (or an integer)",
    "action": "a string (or an integer)",
    "reward": "a finite number",
    "propensity": "a number in (0, 1]",
    "position": "an integer >= 1",
}


@dataclass(frozen=True)
class Check:
    code: str
    column: str
    expr: pl.Expr


def _missing(name: str) -> pl.Expr:
    return pl.col(name).is_null() & ~pl.col(wrong(name))


def checks(lay: Layout, actions: tuple[str, ...] | None) -> list[Check]:
    """Every check of a consented row, in precedence order; ``actions``: the reused spec's, if any."""
    out = [
        Check("missing_field:timestamp", "timestamp", _missing("timestamp")),
        Check("bad_timestamp", "timestamp", pl.col(wrong("timestamp"))),
    ]
    for name in ("session_key", "action"):
        out += [
            Check(f"missing_field:{name}", name, _missing(name)),
            Check(f"wrong_type:{name}", name, pl.col(wrong(name))),
            Check("string_too_long", name, pl.col(name).str.len_chars() > MAX_ID_CHARS),
        ]
    if actions is not None:
        out.append(Check("unknown_action", "action", ~pl.col("action").is_in(list(actions))))
    reward, propensity, position = pl.col("reward"), pl.col("propensity"), pl.col("position")
    out += [
        Check("missing_field:reward", "reward", _missing("reward")),
        Check("wrong_type:reward", "reward", pl.col(wrong("reward"))),
        Check("bad_value:reward", "reward", ~reward.is_finite()),
        Check("missing_field:propensity", "propensity", _missing("propensity")),
        Check("wrong_type:propensity", "propensity", pl.col(wrong("propensity"))),
        Check("bad_propensity", "propensity", ~propensity.is_finite() | (propensity <= 0) | (propensity > 1)),
        Check("wrong_type:position", "position", pl.col(wrong("position"))),
        Check("bad_position", "position", (position < 1) | (position > INT32_MAX)),
    ]
    for name, kind in lay.context:
        out.append(Check(f"wrong_type:{name}", name, pl.col(wrong(name))))
        if kind == "numeric":
            value = pl.col(name)
            out.append(Check(f"bad_value:{name}", name, ~value.is_nan() & (value.abs() > FLOAT32_MAX)))
        else:
            out.append(Check("string_too_long", name, pl.col(name).str.len_chars() > MAX_STRING_CHARS))
    return [Check(c.code, c.column, c.expr.fill_null(False)) for c in out]


def judge(staged: pl.DataFrame, lay: Layout, actions: tuple[str, ...] | None) -> tuple[pl.DataFrame, list[Check]]:
    """Add STATE and CHECK to ``staged``; CHECK indexes the returned checks (-1: the consent value)."""
    rules = checks(lay, actions)
    first = pl.coalesce([pl.when(c.expr).then(pl.lit(i, pl.Int32)) for i, c in enumerate(rules)])
    consent, unreadable = pl.col(CONSENT), pl.col(wrong(CONSENT))
    check = pl.when(unreadable).then(pl.lit(-1, pl.Int32)).when(consent.fill_null(False)).then(first)
    state = (
        pl.when(unreadable).then(pl.lit("quarantined"))
        .when(consent.is_null()).then(pl.lit("consent_missing"))
        .when(~consent).then(pl.lit("no_consent"))
        .when(pl.col(CHECK).is_not_null()).then(pl.lit("quarantined"))
        .otherwise(pl.lit("clean"))
    )
    return staged.with_columns(check.alias(CHECK)).with_columns(state.alias(STATE)), rules


def reason(rules: list[Check], index: int, consent_column: str | None) -> tuple[str, str]:
    """(code, column) of check ``index`` (-1: the consent column's value)."""
    if index < 0:
        assert consent_column is not None
        return f"bad_value:{consent_column}", consent_column
    rule = rules[index]
    return rule.code, rule.column


def detail(code: str, column: str, value: Any, shown: Any) -> str:
    """A sentence naming the column, what it held and what it must hold.

    ``value`` is the staged (typed) value, ``shown`` the value as read from the file.
    """
    if code == "malformed_row":
        return str(shown)
    if code.startswith("missing_field:"):
        return f"required column '{column}' is empty or null"
    if code.startswith("wrong_type:"):
        kind = _KIND_TEXT.get(column, "a number" if column.startswith("ctx_") else "a value of its type")
        return f"column '{column}' must be {kind}, got {_show(shown)}"
    if code == "bad_timestamp":
        return f"column 'timestamp' = {_show(shown)} is not {_KIND_TEXT['timestamp']}"
    if code == "string_too_long":
        limit = MAX_ID_CHARS if column in ("session_key", "action") else MAX_STRING_CHARS
        return f"column '{column}' has {len(str(value))} characters, over the limit of {limit}"
    if code == "unknown_action":
        return (f"action {_show(shown)} is not in the reused spec's action list; a model cannot score it: "
                "evaluate with a spec that has it, or import without reusing a spec")
    if code == "bad_propensity":
        return (f"column 'propensity' = {_show(shown)} is outside (0, 1]; log the logging policy's probability "
                "of the shown action")
    if code == "bad_position":
        return f"column 'position' = {_show(shown)} is outside [1, {INT32_MAX}]; positions count from 1"
    if code == f"bad_value:{column}" and column.startswith("ctx_"):
        return f"column '{column}' = {_show(shown)} is infinite or beyond float32 range; use a finite number"
    if code == "bad_value:reward":
        return f"column 'reward' = {_show(shown)} is not a finite number"
    if code.startswith("bad_value:"):  # the consent column
        return (f"consent column '{column}' = {_show(shown)} is not one of true/false, yes/no, t/f, y/n, 1/0 "
                "(or empty for no consent)")
    raise AssertionError(f"no detail for check {code}")  # every code above is handled


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
