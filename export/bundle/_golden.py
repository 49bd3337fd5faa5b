"""Golden test vectors: synthetic inputs drawn from the feature spec, and the outputs expected for them.

Inputs never come from real viewers: context values are drawn (seeded) from each feature's
vocabulary or range, or set to its default; item columns are the creator's own catalog items
(catalog data, not viewer data), so each case is one realistic call — one context scored over
the creator's variants or bonuses. Expected outputs come from onnxruntime on the build machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from features.spec import Feature, FeatureSpec

ATOL: Final = 1e-5
DEFAULT_SHARE: Final = 0.25  # share of context values left at their default (missing-value paths)
MAX_ROWS_PER_CASE: Final = 8

# Plausible ranges for float features, by name (the spec states dtypes and defaults, not ranges).
_RANGES: Final[dict[str, tuple[float, float, bool]]] = {  # name -> (low, high, integer)
    "minute_in_drop": (0.0, 180.0, False),
    "local_pickup": (0.0, 1.0, True),
    "variant_discount": (0.0, 1.0, False),
    "variant_urgency": (0.0, 1.0, True),
    "bonus_value": (0.0, 200.0, False),
    "bonus_requires_pickup": (0.0, 1.0, True),
}
_PREFIX_RANGES: Final[tuple[tuple[str, tuple[float, float, bool]], ...]] = (
    ("secs_", (0.0, 7200.0, False)),
    ("sess_", (0.0, 30.0, True)),
    ("hist_", (0.0, 30.0, True)),
)
_FALLBACK: Final = (0.0, 100.0, False)


def feature_range(feature: Feature) -> tuple[float, float, bool]:
    """(low, high, integer) a synthetic value of ``feature`` lies in (its default aside)."""
    if feature.dtype == "category":
        return 0.0, float(len(feature.categories) - 1), True
    if feature.name in _RANGES:
        return _RANGES[feature.name]
    for prefix, bounds in _PREFIX_RANGES:
        if feature.name.startswith(prefix):
            return bounds
    return _FALLBACK


def _draw(feature: Feature, rng: np.random.Generator) -> float:
    if rng.random() < DEFAULT_SHARE:
        return feature.default
    low, high, integer = feature_range(feature)
    if integer:
        return float(rng.integers(int(low), int(high) + 1))
    return round(float(rng.uniform(low, high)), 3)


def synthetic_rows(features: Sequence[Feature], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of synthetic values for ``features`` (float32, no NaN)."""
    rows = np.empty((n, len(features)), dtype=np.float32)
    for i in range(n):
        rows[i] = [_draw(f, rng) for f in features]
    return rows


def _case_inputs(spec: FeatureSpec, item_features: Sequence[Feature], items: np.ndarray, cases: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """One matrix per case: a context (the first all defaults) repeated over up to 8 catalog items."""
    contexts = synthetic_rows(spec.context, cases, rng)
    contexts[0] = [f.default for f in spec.context]
    out = []
    for context in contexts:
        if len(items):
            take = min(len(items), MAX_ROWS_PER_CASE)
            chosen = items[rng.choice(len(items), size=take, replace=False)]
        else:
            chosen = synthetic_rows(item_features, MAX_ROWS_PER_CASE, rng)
        out.append(np.hstack([np.repeat(context[None, :], len(chosen), axis=0), chosen]).astype(np.float32))
    return out


def _run(model_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(output, dtype=np.float32).reshape(-1)


def golden_cases(spec: FeatureSpec, kind: str, model_path: Path, items: np.ndarray, cases: int,
                 seed: int) -> list[dict[str, Any]]:
    """``cases`` golden cases for one model (kind ``cta`` or ``bonus-ranker``) with expected outputs."""
    item_features = spec.cta_item if kind == "cta" else spec.bonus_item
    rng = np.random.default_rng([seed, 0 if kind == "cta" else 1])
    out = []
    for x in _case_inputs(spec, item_features, np.asarray(items, dtype=np.float32).reshape(-1, len(item_features)),
                          cases, rng):
        expected = _run(model_path, x)
        out.append({"model": kind, "inputs": [[float(v) for v in row] for row in x],
                    "expected": [float(v) for v in expected]})
    return out
