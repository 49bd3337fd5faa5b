"""Decision flips of float32 thresholds against LightGBM's float64 ones, counted two ways.

Promises: ``count_flips`` compares naive float32 rounding of every numeric threshold and the
corrected one (``onnx_threshold``: at or below t64, LightGBM's zero band) with LightGBM's own
routing, per decision (the comparison
itself, on every data value and on boundary probes) and per leaf (onnxruntime's leaf per
tree against ``booster.predict(pred_leaf=True)``), on the given rows and on probe rows that
put values exactly at, and one float32 ulp either side of, every threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from export._tree_dump import ZERO_THRESHOLD, Ensemble, Split, naive_float32, onnx_threshold, splits
from export._tree_graph import tree_graph

_BASE_ROWS = 4


def onnx_leaves(ens: Ensemble, x: np.ndarray, *, nudge: bool) -> np.ndarray:
    """The LightGBM leaf index every row reaches in every tree, as onnxruntime routes it."""
    model = tree_graph(ens, logistic=False, output="leaves", nudge=nudge, routing=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(["leaves"], {"features": np.ascontiguousarray(x, dtype=np.float32)})[0]
    leaves: np.ndarray = np.rint(np.asarray(out)).astype(np.int64)
    return leaves


def _numeric_splits(ens: Ensemble) -> list[Split]:
    return [s for tree in ens.trees for s in splits(tree) if not s.categorical]


def _probe_values(t64: float) -> np.ndarray:
    """Float32 values at the naive and the corrected threshold, and one ulp either side of each."""
    up, down = np.float32(np.inf), np.float32(-np.inf)
    vals = []
    with np.errstate(over="ignore"):  # one ulp beyond float32's largest value is inf, dropped below
        for t in (naive_float32(t64), onnx_threshold(t64)):
            vals += [np.nextafter(t, down), t, np.nextafter(t, up)]
    arr = np.unique(np.asarray(vals, dtype=np.float32))
    return arr[np.isfinite(arr)]


def _decision_flips(values: np.ndarray, t64: float) -> tuple[int, int]:
    v = values[~np.isnan(values)].astype(np.float64)
    truth = np.where(np.abs(v) <= ZERO_THRESHOLD, 0.0, v) <= t64  # LightGBM reads the zero band as 0.0
    naive = v <= float(naive_float32(t64))
    nudged = v <= float(onnx_threshold(t64))
    return int(np.count_nonzero(truth != naive)), int(np.count_nonzero(truth != nudged))


def probe_rows(ens: Ensemble, x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (a few, cycled) with one feature set to a boundary probe of one threshold."""
    base = np.asarray(x[:_BASE_ROWS], dtype=np.float32)
    if len(base) == 0:
        base = np.zeros((1, ens.num_features), dtype=np.float32)
    rows = []
    for s in _numeric_splits(ens):
        for v in _probe_values(s.threshold):
            for b in base:
                row = b.copy()
                row[s.feature] = v
                rows.append(row)
    if not rows:
        return np.empty((0, ens.num_features), dtype=np.float32)
    return np.stack(rows)


def _leaf_flips(ens: Ensemble, booster: Any, rows: np.ndarray) -> tuple[int, int]:
    if len(rows) == 0:
        return 0, 0
    truth = np.asarray(booster.predict(rows, pred_leaf=True)).reshape(len(rows), -1)
    naive = onnx_leaves(ens, rows, nudge=False)
    nudged = onnx_leaves(ens, rows, nudge=True)
    return int(np.count_nonzero(truth != naive)), int(np.count_nonzero(truth != nudged))


def count_flips(ens: Ensemble, booster: Any, x: np.ndarray) -> dict[str, Any]:
    """The flip counts of naive vs nudged float32 thresholds (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    numeric = _numeric_splits(ens)
    t64 = np.asarray([s.threshold for s in numeric], dtype=np.float64)
    naive32 = np.array([naive_float32(t) for t in t64], dtype=np.float64)
    data_naive = data_nudged = probe_naive = probe_nudged = probes = 0
    for s in numeric:
        a, b = _decision_flips(x[:, s.feature], s.threshold)
        data_naive, data_nudged = data_naive + a, data_nudged + b
        p = _probe_values(s.threshold)
        probes += len(p)
        a, b = _decision_flips(p, s.threshold)
        probe_naive, probe_nudged = probe_naive + a, probe_nudged + b
    rows = probe_rows(ens, x)
    leaf_data = _leaf_flips(ens, booster, x)
    leaf_probe = _leaf_flips(ens, booster, rows)
    return {
        "trees": len(ens.trees),
        "numeric_splits": len(numeric),
        "thresholds_not_float32": int(np.count_nonzero(naive32 != t64)),
        "thresholds_rounded_up": int(np.count_nonzero(naive32 > t64)),
        "data": {
            "rows": len(x),
            "decision_flips_naive": data_naive,
            "decision_flips_nudged": data_nudged,
            "leaf_flips_naive": leaf_data[0],
            "leaf_flips_nudged": leaf_data[1],
        },
        "boundary": {
            "probe_values": probes,
            "probe_rows": len(rows),
            "decision_flips_naive": probe_naive,
            "decision_flips_nudged": probe_nudged,
            "leaf_flips_naive": leaf_probe[0],
            "leaf_flips_nudged": leaf_probe[1],
        },
    }
