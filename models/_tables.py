"""Feature tables as model-ready arrays, checked; and the time-based train/test split."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.errors import DataError, InputUnreadableError
from features.spec import FeatureSpec

# LightGBM refuses query groups above this many rows (its ranking objectives' limit).
LIGHTGBM_MAX_GROUP = 10_000


@dataclass(frozen=True)
class Catalog:
    """Encoded item features per creator (from ``data/features/catalog.json``)."""

    variant_ids: dict[str, tuple[str, ...]]
    variant_features: dict[str, np.ndarray]  # creator -> (K, item features) float32
    bonus_ids: dict[str, tuple[str, ...]]
    bonus_features: dict[str, np.ndarray]
    raw: dict[str, Any]


@dataclass(frozen=True)
class CtaTable:
    """One row per CTA impression, features in ``spec.cta_names`` order."""

    spec: FeatureSpec
    x: np.ndarray  # (n, F) float32
    y: np.ndarray  # (n,) int8 label: click or enroll within the window
    propensity: np.ndarray  # (n,) logged probability of the shown variant
    action: np.ndarray  # (n,) index of the shown variant in its creator's catalog
    creator: np.ndarray  # (n,) creator ids
    drop: np.ndarray  # (n,) drop ids
    session: np.ndarray  # (n,) pseudonymous session keys
    ts: np.ndarray  # (n,) µs since epoch

    def subset(self, rows: np.ndarray) -> CtaTable:
        return CtaTable(self.spec, *(a[rows] for a in (
            self.x, self.y, self.propensity, self.action, self.creator, self.drop, self.session, self.ts)))


@dataclass(frozen=True)
class BonusTable:
    """One row per slate x bonus, rows of a slate contiguous; features in ``spec.bonus_names``."""

    spec: FeatureSpec
    x: np.ndarray  # (n, F) float32
    relevance: np.ndarray  # (n,) 0 shown, 1 claimed, 2 claimed and picked up
    slate: np.ndarray  # (n,) group id
    bonus: np.ndarray  # (n,) bonus ids
    creator: np.ndarray
    drop: np.ndarray
    session: np.ndarray
    ts: np.ndarray

    def subset(self, rows: np.ndarray) -> BonusTable:
        return BonusTable(self.spec, *(a[rows] for a in (
            self.x, self.relevance, self.slate, self.bonus, self.creator, self.drop, self.session, self.ts)))


def _read(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise InputUnreadableError(f"{path}: feature table is missing; run `carryon features` first")
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as e:
        raise InputUnreadableError(
            f"{path}: not a readable Parquet file ({e}); rebuild it with `carryon features`"
        ) from e


def _matrix(frame: pl.DataFrame, names: tuple[str, ...], source: str) -> np.ndarray:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"{source}: feature columns {missing} are missing; rebuild with `carryon features`")
    x = frame.select(names).to_numpy().astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        counts = {names[j]: int(bad[:, j].sum()) for j in np.flatnonzero(bad.any(axis=0))}
        raise DataError(f"{source}: NaN or infinite feature values {counts}; the feature stage writes defaults, "
                        "so the table was altered or built by another tool; rebuild it with `carryon features`")
    return np.ascontiguousarray(x)


def _ts_us(frame: pl.DataFrame) -> np.ndarray:
    return frame.get_column("ts").dt.epoch("us").to_numpy()


def load_catalog(features_dir: Path) -> Catalog:
    path = features_dir / "catalog.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputUnreadableError(f"{path}: cannot read the encoded catalog; run `carryon features` first") from e
    except json.JSONDecodeError as e:
        raise InputUnreadableError(f"{path}: not valid JSON ({e}); rebuild it with `carryon features`") from e
    variant_ids, variant_features, bonus_ids, bonus_features = {}, {}, {}, {}
    for creator in raw["creators"]:
        cid = creator["creator_id"]
        variant_ids[cid] = tuple(v["variant"] for v in creator["variants"])
        variant_features[cid] = np.array([v["features"] for v in creator["variants"]], dtype=np.float32)
        bonus_ids[cid] = tuple(b["bonus_id"] for b in creator["bonuses"])
        bonus_features[cid] = np.array([b["features"] for b in creator["bonuses"]], dtype=np.float32)
    return Catalog(variant_ids, variant_features, bonus_ids, bonus_features, raw)


def load_cta(features_dir: Path, catalog: Catalog) -> CtaTable:
    """Read ``cta.parquet``; refuse empty, single-class or non-finite tables clearly."""
    path = features_dir / "cta.parquet"
    spec = FeatureSpec.load(features_dir / "feature_spec.json")
    frame = _read(path).sort("ts", "impression_id")
    if frame.height == 0:
        raise DataError(f"{path}: no CTA impressions; the training set is empty (check consent counts in "
                        "metrics/ingest.json, or simulate more drops)")
    creators = frame.get_column("creator_id").to_numpy().astype(str)
    variants = frame.get_column("variant").to_numpy().astype(str)
    index = {c: {v: i for i, v in enumerate(ids)} for c, ids in catalog.variant_ids.items()}
    try:
        action = np.array([index[c][v] for c, v in zip(creators, variants, strict=True)], dtype=np.int64)
    except KeyError as e:
        raise DataError(f"{path}: variant or creator {e} is not in the catalog; rebuild features") from None
    return CtaTable(
        spec=spec,
        x=_matrix(frame, spec.cta_names, str(path)),
        y=frame.get_column("label").cast(pl.Int8).to_numpy(),
        propensity=frame.get_column("propensity").to_numpy().astype(np.float64),
        action=action,
        creator=creators,
        drop=frame.get_column("drop_id").to_numpy().astype(str),
        session=frame.get_column("session_key").to_numpy().astype(str),
        ts=_ts_us(frame),
    )


def load_bonus(features_dir: Path) -> BonusTable:
    """Read ``bonus.parquet`` sorted by slate; refuse empty tables and oversized slates."""
    path = features_dir / "bonus.parquet"
    spec = FeatureSpec.load(features_dir / "feature_spec.json")
    frame = _read(path)
    if frame.height == 0:
        raise DataError(f"{path}: no bonus slates; the training set is empty")
    frame = frame.sort("ts", "slate_id", "position")
    largest = int(frame.group_by("slate_id").len().get_column("len").to_numpy().max())
    if largest > LIGHTGBM_MAX_GROUP:
        raise DataError(f"{path}: a slate has {largest} bonuses, above LightGBM's limit of {LIGHTGBM_MAX_GROUP} "
                        "rows per group; split such slates at the source")
    return BonusTable(
        spec=spec,
        x=_matrix(frame, spec.bonus_names, str(path)),
        relevance=frame.get_column("relevance").cast(pl.Int64).to_numpy(),
        slate=frame.get_column("slate_id").to_numpy().astype(str),
        bonus=frame.get_column("bonus_id").to_numpy().astype(str),
        creator=frame.get_column("creator_id").to_numpy().astype(str),
        drop=frame.get_column("drop_id").to_numpy().astype(str),
        session=frame.get_column("session_key").to_numpy().astype(str),
        ts=_ts_us(frame),
    )


def time_split(creator: np.ndarray, drop: np.ndarray, ts: np.ndarray, test_fraction: float) -> np.ndarray:
    """Boolean test mask: each creator's latest drops (by first event) form the test set.

    Sessions live inside one drop, so no session straddles the split. A creator with a
    single drop stays in training.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    frame = pl.DataFrame({"creator": creator, "drop": drop, "ts": ts})
    starts = frame.group_by("creator", "drop").agg(pl.col("ts").min()).sort("creator", "ts", "drop")
    test_drops: set[str] = set()
    for _, group in starts.group_by("creator", maintain_order=True):
        drops = group.get_column("drop").to_list()
        if len(drops) < 2:
            continue
        n_test = min(len(drops) - 1, max(1, math.ceil(test_fraction * len(drops))))
        test_drops.update(drops[-n_test:])
    return np.isin(drop, np.array(sorted(test_drops), dtype=drop.dtype))
