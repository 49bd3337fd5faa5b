"""Encoding of the clean rows' context columns as float32, and the action list.

Numeric columns stay as they are; a missing or NaN value becomes the column's
default, the median of its finite values in the clean rows (0 when there is none).
String columns become category codes (:meth:`Feature.encode`: index in the
vocabulary, ``unknown`` = 0). A value enters the vocabulary only if it occurs in at
least ``MIN_CATEGORY_SESSIONS`` distinct sessions and is not itself a session key,
the ``MAX_CATEGORIES`` most common first: the spec travels with models, so it must
not carry an identifier of one person. With a reused spec, its vocabularies, defaults
and actions apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from features.bandit._spec import BanditSpec
from features.bandit._stage import Layout
from features.errors import DataError
from features.spec import UNKNOWN, Feature

MIN_CATEGORY_SESSIONS = 5
MAX_CATEGORIES = 100
MAX_ACTIONS = 256


@dataclass(frozen=True)
class Encoding:
    context: tuple[Feature, ...]
    actions: tuple[str, ...]
    columns: list[pl.Series]  # the encoded ctx columns, float32, row for row
    stats: dict[str, dict[str, Any]]  # per column: kind, filled_with_default, mapped_to_unknown


def encode(clean: pl.DataFrame, lay: Layout, raw_keys: pl.Series, source: str,
           reuse: BanditSpec | None) -> Encoding:
    """Encode the context columns of ``clean``; ``raw_keys`` are every session key read."""
    if reuse is not None:
        actions = reuse.actions
        features = {f.name: f for f in reuse.context}
    else:
        actions = tuple(sorted(clean.get_column("action").unique().to_list()))
        if len(actions) > MAX_ACTIONS:
            raise DataError(f"{source}: {len(actions)} distinct actions, above the limit of {MAX_ACTIONS}; "
                            "a CTA log has a handful of variants: check the action column")
        features = {}
    columns: list[pl.Series] = []
    stats: dict[str, dict[str, Any]] = {}
    context: list[Feature] = []
    for name, kind in lay.context:
        values = clean.get_column(name)
        if kind == "numeric":
            feature = features.get(name) or _numeric(name, values)
            missing = int((values.is_null() | values.is_nan()).sum())
            column = clean.select(pl.col(name).fill_nan(None).fill_null(feature.default).cast(pl.Float32)).to_series()
            stats[name] = {"kind": kind, "filled_with_default": missing}
        else:
            feature = features.get(name) or _category(name, values, clean.get_column("session_key"), raw_keys)
            codes = {v: float(i) for i, v in enumerate(feature.categories)}
            column = values.replace_strict(codes, default=0.0, return_dtype=pl.Float32).alias(name)
            known = values.is_in(list(feature.categories[1:])).fill_null(False)
            stats[name] = {"kind": kind, "filled_with_default": int(values.is_null().sum()),
                           "mapped_to_unknown": int((values.is_not_null() & ~known).sum())}
        context.append(feature)
        columns.append(column)
    return Encoding(tuple(context), actions, columns, stats)


def _numeric(name: str, values: pl.Series) -> Feature:
    finite = values.filter(values.is_finite())
    median = finite.median() if finite.len() else None
    default = float(np.float32(median)) if isinstance(median, int | float) else 0.0
    return Feature(name, "float32", default, description="numeric context column of the log; "
                                                         "missing or NaN -> default (median)")


def _category(name: str, values: pl.Series, sessions: pl.Series, raw_keys: pl.Series) -> Feature:
    frame = pl.DataFrame({"v": values, "s": sessions}).drop_nulls("v")
    counts = (
        frame.group_by("v").agg(pl.col("s").n_unique().alias("n"))
        .filter(pl.col("n") >= MIN_CATEGORY_SESSIONS, pl.col("v") != UNKNOWN, ~pl.col("v").is_in(raw_keys.implode()))
        .sort(["n", "v"], descending=[True, False])
        .head(MAX_CATEGORIES)
    )
    vocab = sorted(counts.get_column("v").to_list())
    return Feature(name, "category", 0.0, (UNKNOWN, *vocab),
                   f"string context column of the log; values seen in >= {MIN_CATEGORY_SESSIONS} sessions, "
                   "others -> unknown")
