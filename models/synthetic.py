"""Synthetic model inputs drawn from the feature spec: never a viewer's row.

Used for MLflow input examples and signatures (and later golden vectors), so that no
artifact outside the raw zone carries real viewer data.
"""

from __future__ import annotations

import numpy as np

from features.spec import FeatureSpec


def synthetic_rows(spec: FeatureSpec, names: tuple[str, ...], n: int, seed: int = 0) -> np.ndarray:
    """``n`` plausible float32 rows: category codes within each vocabulary, small counts,
    minutes and seconds within a drop, flags 0/1, discounts and values in their ranges."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        feature = spec[name]
        if feature.dtype == "category":
            out[:, j] = rng.integers(0, len(feature.categories), size=n)
        elif name in ("local_pickup", "variant_urgency", "bonus_requires_pickup"):
            out[:, j] = rng.integers(0, 2, size=n)
        elif name == "variant_discount":
            out[:, j] = rng.choice([0.0, 0.1, 0.2, 0.3], size=n)
        elif name == "minute_in_drop":
            out[:, j] = rng.uniform(0, 60, size=n)
        elif name.startswith("secs_"):
            out[:, j] = rng.uniform(0, 1800, size=n)
        elif name == "bonus_value":
            out[:, j] = rng.uniform(5, 60, size=n).round()
        else:
            out[:, j] = rng.poisson(1.5, size=n)
    return out
