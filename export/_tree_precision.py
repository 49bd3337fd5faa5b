"""How far LightGBM trees can drop below float32: float16 and bfloat16 thresholds and leaf values.

Promises: ``precision_report`` measures, for float16 and bfloat16, against LightGBM on the
original float32 inputs:

- thresholds. An ``ai.onnx.ml`` TreeEnsemble compares inputs of its own type with
  ``nodes_splits`` of that type, so a low-precision model also takes low-precision inputs. What
  is measured: inputs read as LightGBM reads them (``|x| <= 1e-35`` as 0.0), then rounded to
  nearest (ties to even) at the precision, compared with every numeric threshold nudged to the
  largest representable value <= its float64 threshold (the float32 rule, one precision lower).
  Decisions are counted per numeric split and value (every non-missing value of the split's
  feature, whether or not its row reaches that split, as ``_tree_report`` counts), on ``x``
  (``..._data``), at float32 probes: the float32 values at and one float32 ulp either side of
  each threshold (``..._boundary``), and at representable probes: the values of the precision
  at and one step of it either side of the nudged threshold and of the threshold's nearest
  value (``..._boundary_representable``). Leaf flips: per row and tree, the leaf reached by
  routing the rounded inputs through the dumped trees (numpy, thresholds nudged, categorical
  codes truncated as LightGBM does) against ``booster.predict(pred_leaf=True)``.
- leaf values, rounded to nearest at the precision (classifier leaves after the sigmoid
  factor, as the graph stores them): the max abs change of the output on ``x`` (probability
  for binary models, raw score otherwise) over LightGBM's leaves as ``pred_leaf`` reports them,
  summed in float64; with ``groups``, how many groups change their top-1 or their order.

``decisions_unchanged`` means: no flip on ``x``, none at representable probes, no leaf flip.
Float32 probes show how many thresholds cannot separate float32 inputs closer to them than
half a step of the precision. The ONNX type constraint allows float16 (not bfloat16); the
onnxruntime seen with this project (1.32) refuses a float16 TreeEnsemble at session creation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import numpy_helper

from export._tree_dump import (
    ZERO_THRESHOLD,
    Ensemble,
    Leaf,
    Node,
    Split,
    TreeExportError,
    booster_of,
    float32_at_or_below,
    read_ensemble,
    splits,
)
from export._tree_graph import tree_graph

F32 = np.float32
Arr = np.ndarray


@dataclass(frozen=True)
class _Precision:
    name: str
    nearest: Callable[[Arr], Arr]  # float32 -> nearest value of the precision (ties to even), as float32
    directed: Callable[[Arr, bool], Arr]  # float32 -> next value of the precision at or above (True) / below
    onnx_type: bool  # allowed by ai.onnx.ml TreeEnsemble's type constraint


def _f16_nearest(a: Arr) -> Arr:
    with np.errstate(over="ignore"):
        out: Arr = a.astype(np.float16).astype(F32)
    return out


def _f16_directed(a: Arr, up: bool) -> Arr:
    r = _f16_nearest(a)
    wrong = (r < a) if up else (r > a)
    with np.errstate(over="ignore"):
        step = np.nextafter(r.astype(np.float16), np.float16(np.inf if up else -np.inf)).astype(F32)
    out: Arr = np.where(wrong, step, r)
    return out


def _bf16_nearest(a: Arr) -> Arr:
    bits = np.ascontiguousarray(a, dtype=F32).view(np.uint32).astype(np.uint64)
    one = np.uint64(1)
    bits = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & one)) & np.uint64(0xFFFF0000)
    out: Arr = np.where(np.isnan(a), a, bits.astype(np.uint32).view(F32))
    return out


def _bf16_directed(a: Arr, up: bool) -> Arr:
    bits = np.ascontiguousarray(a, dtype=F32).view(np.uint32)
    trunc = bits & np.uint32(0xFFFF0000)
    negative = (bits >> 31) == 1
    away = (trunc != bits) & (negative != up)  # truncation moves toward zero: the wrong way here
    out: Arr = np.where(away, trunc + np.uint32(0x10000), trunc).astype(np.uint32).view(F32)
    return np.where(np.isnan(a), a, out)


PRECISIONS = (_Precision("float16", _f16_nearest, _f16_directed, True),
              _Precision("bfloat16", _bf16_nearest, _bf16_directed, False))


def at_or_below(p: _Precision, t64: Arr) -> Arr:
    """The largest value of ``p`` that is <= each float64 threshold (every such value is a float32)."""
    with np.errstate(over="ignore"):
        t32 = t64.astype(F32)
    t32 = np.where(t32.astype(np.float64) > t64, np.nextafter(t32, F32(-np.inf)), t32)
    return p.directed(t32, False)


def _step(p: _Precision, v: Arr, up: bool) -> Arr:
    """The neighbour of each value of ``p`` one step of ``p`` up or down."""
    return p.directed(np.nextafter(v, F32(np.inf if up else -np.inf)), up)


def nearest64(p: _Precision, v: Arr) -> Arr:
    """Float64 values rounded to nearest at ``p``, as float64 (a tie is a float32 value: ``p.nearest`` breaks it)."""
    a = np.abs(v)
    lo = at_or_below(p, a).astype(np.float64)
    hi = _step(p, lo.astype(F32), True).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        # past the largest finite value, the rounding cut sits half a step (of the last binade) above it
        gap = np.where(np.isinf(hi), lo - _step(p, lo.astype(F32), False).astype(np.float64), hi - lo)
        tie = p.nearest(a.astype(F32)).astype(np.float64)
        out = np.where(a - lo < lo + gap - a, lo, np.where(a - lo > lo + gap - a, hi, tie))
        out = np.where(np.isnan(v) | np.isinf(v), v, np.copysign(out, v))
    result: Arr = out
    return result


def read_as_lightgbm(x: Arr) -> Arr:
    """Inputs as LightGBM reads them: the zero band as 0.0."""
    return np.where(np.abs(x) <= ZERO_THRESHOLD, F32(0.0), x).astype(F32)


def _flips(values: Arr, zero_missing: bool, t64: float, tp: float, p: _Precision) -> tuple[int, int]:
    """(decisions that flip, values compared) for one split: float64 truth vs rounded input and nudged threshold."""
    v = read_as_lightgbm(values[~np.isnan(values)])
    if zero_missing:
        v = v[v != 0.0]  # routed as missing both ways
    flips = (v.astype(np.float64) <= t64) != (p.nearest(v) <= tp)
    return int(np.count_nonzero(flips)), len(v)


def _f32_probes(t64: float) -> Arr:
    """Float32 values at the nearest and at the at-or-below float32 threshold, and one float32 ulp either side."""
    with np.errstate(over="ignore"):
        base = np.asarray([t64, float32_at_or_below(t64)], dtype=F32)
        vals = np.concatenate([np.nextafter(base, F32(-np.inf)), base, np.nextafter(base, F32(np.inf))])
    arr = np.unique(vals)
    finite: Arr = arr[np.isfinite(arr)]
    return finite


def _p_probes(p: _Precision, t64: float, tp: float) -> Arr:
    with np.errstate(over="ignore"):
        near = p.nearest(np.asarray([t64], dtype=F32))
    base = np.concatenate([np.asarray([tp], dtype=F32), near])
    arr = np.unique(np.concatenate([_step(p, base, False), base, _step(p, base, True)]))
    finite: Arr = arr[np.isfinite(arr)]
    return finite


def _route(node: Node, x: Arr, rows: Arr, out: Arr, tree: int, thresholds: dict[int, float]) -> None:
    """Write the LightGBM leaf index each of ``rows`` reaches (``x`` already read and rounded)."""
    if isinstance(node, Leaf):
        out[rows, tree] = node.index
        return
    v = x[rows, node.feature]
    if node.categorical:
        ok = np.isfinite(v) & (v > -1.0)  # NaN and negative codes go right; int() truncates toward zero
        codes = np.where(ok, np.trunc(np.nan_to_num(v)), -1.0)
        left = ok & np.isin(codes, np.asarray(node.categories, dtype=np.float64))
    else:
        if node.missing_type != "NaN":
            v = np.where(np.isnan(v), F32(0.0), v)
        missing = np.isnan(v) if node.missing_type == "NaN" else (v == 0.0) if node.missing_type == "Zero" else None
        with np.errstate(invalid="ignore"):
            left = v <= thresholds[id(node)]
        if missing is not None:
            left = np.where(missing, node.default_left, left)
    _route(node.left, x, rows[left], out, tree, thresholds)
    _route(node.right, x, rows[~left], out, tree, thresholds)


def route_leaves(ens: Ensemble, x: Arr, thresholds: dict[int, float]) -> Arr:
    """Leaf index per row and tree for inputs ``x`` and numeric thresholds keyed by ``id(split)``."""
    out = np.zeros((len(x), len(ens.trees)), dtype=np.int64)
    for i, tree in enumerate(ens.trees):
        _route(tree, x, np.arange(len(x)), out, i, thresholds)
    return out


def _leaf_table(ens: Ensemble) -> Arr:
    """Leaf value by (tree, LightGBM leaf index)."""
    leaves = [_leaves(t) for t in ens.trees]
    table = np.zeros((len(ens.trees), max(leaf.index for tree in leaves for leaf in tree) + 1))
    for i, tree in enumerate(leaves):
        for leaf in tree:
            table[i, leaf.index] = leaf.value
    return table


def _leaves(node: Node) -> list[Leaf]:
    return [node] if isinstance(node, Leaf) else _leaves(node.left) + _leaves(node.right)


def _output(ens: Ensemble, table: Arr, leaves: Arr, logistic: bool) -> Arr:
    raw = table[np.arange(len(ens.trees))[None, :], leaves].sum(axis=1)
    if ens.average_output:
        raw = raw / len(ens.trees)
    out: Arr = 1.0 / (1.0 + np.exp(-raw)) if logistic else raw
    return out


def _group_changes(ref: Arr, new: Arr, groups: Sequence[int] | None) -> tuple[int | None, int | None]:
    if groups is None:
        return None, None
    top1 = order = 0
    start = 0
    for size in groups:
        a, b = ref[start:start + size], new[start:start + size]
        start += size
        if size == 0:
            continue
        top1 += int(np.argmax(a) != np.argmax(b))
        order += int(not np.array_equal(np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")))
    return top1, order


def _tensor_sizes(ens: Ensemble) -> int:
    """Number of float32 values in nodes_splits, membership_values and leaf_weights of the exported graph."""
    graph = tree_graph(ens, logistic=False, output="score")
    node = next(n for n in graph.graph.node if n.op_type == "TreeEnsemble")
    sizes = [numpy_helper.to_array(a.t).size for a in node.attribute
             if a.name in ("nodes_splits", "membership_values", "leaf_weights")]
    return int(sum(sizes))


def numeric_splits(ens: Ensemble) -> list[Split]:
    return [s for tree in ens.trees for s in splits(tree) if not s.categorical]


def _one(p: _Precision, ens: Ensemble, x: Arr, truth: Arr, table64: Arr, logistic: bool,
         groups: Sequence[int] | None, n_values: int) -> dict[str, Any]:
    numeric = numeric_splits(ens)
    t64 = np.asarray([s.threshold for s in numeric], dtype=np.float64)
    tp = at_or_below(p, t64)
    data = bound = rep = n_bound = n_rep = keep = exact32 = 0
    flipping: set[int] = set()
    for s, t, q in zip(numeric, t64, tp, strict=True):
        zero = s.missing_type == "Zero"
        d, _ = _flips(x[:, s.feature], zero, float(t), float(q), p)
        b, nb = _flips(_f32_probes(float(t)), zero, float(t), float(q), p)
        r, nr = _flips(_p_probes(p, float(t), float(q)), zero, float(t), float(q), p)
        data, bound, rep, n_bound, n_rep = data + d, bound + b, rep + r, n_bound + nb, n_rep + nr
        keep += int(d == 0 and r == 0)
        if d:
            flipping.add(s.feature)
        exact32 += int(d == 0 and r == 0 and b == 0)
    nudged = {id(s): float(q) for s, q in zip(numeric, tp, strict=True)}
    leaves_p = route_leaves(ens, p.nearest(read_as_lightgbm(x)), nudged)
    table_p = nearest64(p, table64)
    ref = _output(ens, table64, truth, logistic)
    leaf_only = _output(ens, table_p, truth, logistic)
    both = _output(ens, table_p, leaves_p, logistic)
    leaf_flips = int(np.count_nonzero(leaves_p != truth))
    top1, order = _group_changes(ref, leaf_only, groups)
    t32 = np.asarray([float32_at_or_below(float(t)) for t in t64], dtype=F32)
    representable = int(np.count_nonzero(tp == t32))
    return {
        "onnx_tree_ensemble_type": p.onnx_type,
        "numeric_thresholds": len(numeric),
        "thresholds_keeping_every_decision": keep,
        "thresholds_exact_for_float32_inputs": exact32,
        "thresholds_representable": representable,
        "threshold_decision_flips_data": data,
        "features_with_data_flips": sorted(flipping),
        "threshold_decision_flips_boundary": bound,
        "boundary_probe_values": n_bound,
        "threshold_decision_flips_boundary_representable": rep,
        "representable_probe_values": n_rep,
        "leaf_flips_data": leaf_flips,
        "leaf_max_abs_output_change": float(np.max(np.abs(leaf_only - ref), initial=0.0)),
        "max_abs_output_change_thresholds_and_leaves": float(np.max(np.abs(both - ref), initial=0.0)),
        "top1_changes": top1,
        "rank_order_changes": order,
        "decisions_unchanged": data == 0 and rep == 0 and leaf_flips == 0,
        "bytes_saved_estimate": 2 * n_values,
    }


def _verdict(rows: int, report: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, r in report.items():
        if r["decisions_unchanged"]:
            head = (f"{name} inputs and thresholds keep every tree decision on the {rows} rows and on every {name} "
                    f"input ({r['numeric_thresholds'] - r['thresholds_exact_for_float32_inputs']} of "
                    f"{r['numeric_thresholds']} thresholds cannot separate float32 inputs within half a {name} step)")
        else:
            head = (f"{name} inputs and thresholds change {r['threshold_decision_flips_data']} decisions on the "
                    f"{rows} rows ({r['leaf_flips_data']} leaves reached change; features "
                    f"{r['features_with_data_flips']})")
        parts.append(f"{head}, and {name} leaf values alone move the output by at most "
                     f"{r['leaf_max_abs_output_change']:.2g}")
    keep = report["float16"]["decisions_unchanged"]
    tail = ("a float16 model fed float16 inputs would route these rows like LightGBM, on a runtime that "
            "implements float16 trees" if keep else
            "no lower precision keeps every decision and the trees stay float32")
    return ("; ".join(parts) + ". Only float16 is an ai.onnx.ml TreeEnsemble type, with inputs, thresholds and "
            f"leaf weights of one type: {tail}.")


def precision_report(model: Any, x: np.ndarray, *, groups: Sequence[int] | None = None) -> dict[str, Any]:
    """Decision flips and output change of float16/bfloat16 thresholds and leaves (see the module docstring).

    ``groups``: optional sizes of consecutive row groups of ``x`` (slates, CTA contexts) for top-1/order changes.
    """
    booster = booster_of(model)
    ens = read_ensemble(booster.dump_model())
    x = np.ascontiguousarray(x, dtype=F32)
    if x.ndim != 2 or x.shape[1] != ens.num_features or len(x) == 0:
        raise TreeExportError(f"x: shape {x.shape} does not match the model's {ens.num_features} features; "
                              "pass at least one float32 row [N, features]")
    if groups is not None and sum(groups) != len(x):
        raise TreeExportError(f"groups: sizes sum to {sum(groups)}, x has {len(x)} rows; pass sizes covering x")
    logistic = ens.objective.startswith(("binary", "cross_entropy"))
    truth = np.asarray(booster.predict(x, pred_leaf=True), dtype=np.int64).reshape(len(x), -1)
    table64 = _leaf_table(ens) * (ens.sigmoid if logistic else 1.0)
    n_values = _tensor_sizes(ens)
    report = {p.name: _one(p, ens, x, truth, table64, logistic, groups, n_values) for p in PRECISIONS}
    ref32 = _output(ens, table64.astype(F32).astype(np.float64), truth, logistic)
    ref64 = _output(ens, table64, truth, logistic)
    return {
        **report,
        "float32": {"leaf_max_abs_output_change": float(np.max(np.abs(ref32 - ref64), initial=0.0)),
                    "tensor_bytes": 4 * n_values},
        "rows": len(x),
        "verdict": _verdict(len(x), report),
    }
