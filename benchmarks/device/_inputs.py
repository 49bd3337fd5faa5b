"""Realistic model inputs for the real call shapes, made from the feature spec (never real rows).

One decision is one viewer's context row repeated over K CTA variants or N bonuses, with
each item's own features: from the bundle's catalog when there is one, else drawn from the
spec's vocabularies. A fixed seed makes every run feed the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.device._errors import BenchError
from features.spec import BONUS_KINDS, CTA_STYLES, Feature, FeatureSpec

DEFAULT_ROWS = {"cta": 8, "bonus-ranker": 20}  # variants of one CTA decision; bonuses of one slate
POOL = 64  # distinct decisions cycled through while measuring
SEED = 20261127


def default_spec() -> FeatureSpec:
    """The spec's shape with the built-in vocabularies, for models measured without their spec."""
    return FeatureSpec.build(("ceramics", "cooking", "fitness", "music", "photography"), CTA_STYLES, BONUS_KINDS,
                             120.0)


def load_spec(path: Path) -> FeatureSpec:
    try:
        return FeatureSpec.load(path)
    except Exception as e:  # InputUnreadableError and anything a hand-edited file raises
        raise BenchError(f"{path}: cannot use the feature spec ({e}); copy feature_spec.json again") from e


def find_spec(root: Path | None, spec_path: Path | None = None) -> FeatureSpec:
    """``spec_path``, else the spec beside the models (a bundle's, or data/features/ beside data/export)."""
    if spec_path is not None:
        return load_spec(spec_path)
    if root is not None:
        for candidate in (root / "feature_spec.json", root.parent / "features" / "feature_spec.json"):
            if candidate.is_file():
                return load_spec(candidate)
    return default_spec()


def load_catalog(path: Path) -> dict[str, Any]:
    """A bundle's catalog.json (contract A): one creator's variants and bonuses."""
    try:
        catalog = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(catalog.get("variants"), list) or not isinstance(catalog.get("bonuses"), list):
            raise ValueError("variants or bonuses is not a list")
    except OSError as e:
        raise BenchError(f"{path}: cannot read the catalog ({e.strerror})") from e
    except (ValueError, AttributeError) as e:
        raise BenchError(f"{path}: not a bundle catalog ({e}); rebuild the bundle") from e
    return dict(catalog)


def _draw(feature: Feature, rng: np.random.Generator) -> float:
    """One plausible value: a vocabulary code, a small count, a flag, seconds or money."""
    name = feature.name
    if feature.dtype == "category":
        return float(rng.integers(0, len(feature.categories)))
    if name.startswith("secs_"):
        return float(rng.choice([-1.0, float(rng.integers(0, 3600))]))
    if name.startswith("minute_"):
        return float(rng.integers(0, 120))
    if name.startswith(("sess_", "hist_")):
        return float(rng.poisson(1.5))
    if name.endswith(("_urgency", "_requires_pickup")) or name == "local_pickup":
        return float(rng.integers(0, 2))
    if name.endswith("_discount"):
        return float(rng.choice([0.0, 0.1, 0.2, 0.3]))
    if name.endswith("_value"):
        return float(rng.integers(5, 100))
    return feature.default


def _catalog_items(catalog: dict[str, Any], kind: str, width: int) -> np.ndarray | None:
    entries = catalog["variants"] if kind == "cta" else catalog["bonuses"]
    rows = [e.get("features") for e in entries if isinstance(e, dict)]
    if not rows or any(not isinstance(r, list) or len(r) != width for r in rows):
        return None
    return np.asarray(rows, dtype=np.float32)


def decision_pool(
    kind: str, spec: FeatureSpec, catalog: dict[str, Any] | None = None, rows: int | None = None,
    pool: int = POOL, seed: int = SEED,
) -> np.ndarray:
    """``pool`` decisions of shape (rows, features): context repeated, items varying."""
    rng = np.random.default_rng(seed)
    item_features = spec.cta_item if kind == "cta" else spec.bonus_item
    items = _catalog_items(catalog, kind, len(item_features)) if catalog is not None else None
    n = rows or (len(items) if items is not None else DEFAULT_ROWS[kind])
    if n < 1:
        raise BenchError(f"call rows must be >= 1, got {n}")
    out = np.empty((pool, n, len(spec.context) + len(item_features)), dtype=np.float32)
    for d in range(pool):
        out[d, :, : len(spec.context)] = [_draw(f, rng) for f in spec.context]
        if items is not None:
            out[d, :, len(spec.context):] = items[np.arange(n) % len(items)]
        else:
            out[d, :, len(spec.context):] = [[_draw(f, rng) for f in item_features] for _ in range(n)]
    return out


def load_golden(path: Path, kind: str) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A bundle's golden vectors for ``kind``: (inputs, expected, atol), or None when it has none."""
    if not path.is_file():
        return None
    try:
        golden = json.loads(path.read_text(encoding="utf-8"))
        cases = [c for c in golden["cases"] if c["model"] == kind]
        atol = float(golden.get("atol", 1e-5))
        if not cases:
            return None
        inputs = np.concatenate([np.asarray(c["inputs"], dtype=np.float32).reshape(len(c["inputs"]), -1)
                                 for c in cases])
        expected = np.concatenate([np.asarray(c["expected"], dtype=np.float64).ravel() for c in cases])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{path}: not valid golden vectors ({e}); rebuild the bundle") from e
    if len(inputs) != len(expected):
        raise BenchError(f"{path}: {kind} cases have {len(inputs)} input rows but {len(expected)} expected values")
    return inputs, expected, atol
