"""Trees read from LightGBM's dump as one ``ai.onnx.ml`` opset-5 ``TreeEnsemble`` graph.

Promises: the graph routes every float32 row exactly as LightGBM does (``x <= t64`` via the
float32 threshold at or below ``t64``; NaN and missing types as LightGBM's ``NumericalDecision``;
categorical values truncated toward zero, negative and NaN to the right, as its
``CategoricalDecision``); with ``routing=True`` it outputs, per tree, the LightGBM leaf index
a row reaches instead of the score, which is how routing flips are counted.

Categorical splits come in two forms. ``"member"``: one ``BRANCH_MEMBER`` node holding the
set. ``"indicator"`` (the default): every distinct (feature, set) of the ensemble becomes a
0/1 column computed before the trees (Gather, LessOrEqual against the category boundaries,
Cast, MatMul by a +-1 matrix, Concat), and the split becomes ``indicator <= 0.5`` with its
branches swapped, so every node is ``BRANCH_LEQ``. onnxruntime evaluates ensembles whose
nodes share one mode on a tighter loop; measured on the default models (200 trees,
onnxruntime 1.32) the indicator form runs in about 65% of the member form's time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export._tree_dump import (
    ZERO_THRESHOLD,
    Ensemble,
    Leaf,
    Node,
    Split,
    TreeExportError,
    naive_float32,
    onnx_threshold,
    splits,
)

CategoricalForm = Literal["indicator", "member"]
BRANCH_LEQ = 0
BRANCH_MEMBER = 6
MAX_INDICATOR_CODES = 4096  # category boundaries the indicator form compares against; above: the member form
INT8_SETS_BYTES = 32 * 1024  # a float32 set matrix larger than this is stored as int8
POST_NONE = 0
AGG_AVERAGE = 0
AGG_SUM = 1
OPSETS = (helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5))
IR_VERSION = 10


@dataclass
class _Arrays:
    modes: list[int] = field(default_factory=list)
    features: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leaf: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leaf: list[int] = field(default_factory=list)
    nan_true: list[int] = field(default_factory=list)
    members: list[float] = field(default_factory=list)
    leaf_targets: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)


def _missing_goes_left(split: Split) -> bool:
    """Where NaN lands at a numeric split (after the graph's zero-to-NaN step for 'Zero' features)."""
    if split.missing_type == "None":  # LightGBM reads NaN as 0.0 here
        return split.threshold >= 0.0
    return split.default_left


def _threshold(split: Split, nudge: bool) -> float:
    return float(onnx_threshold(split.threshold) if nudge else naive_float32(split.threshold))


Indicators = dict[tuple[int, tuple[int, ...]], int]  # (feature, category set) -> its 0/1 column


def _set_key(split: Split) -> tuple[int, tuple[int, ...]]:
    return split.feature, tuple(sorted(split.categories))


def _emit(node: Node, tree: int, out: _Arrays, nudge: bool, routing: bool,
          indicators: Indicators | None) -> tuple[int, bool]:
    """Append ``node``'s subtree; return (its index, whether that index is a leaf index)."""
    if isinstance(node, Leaf):
        out.leaf_targets.append(tree if routing else 0)
        out.leaf_weights.append(float(node.index) if routing else node.value)
        return len(out.leaf_weights) - 1, True
    at = len(out.modes)
    first, second = node.left, node.right
    if not node.categorical:
        out.modes.append(BRANCH_LEQ)
        out.features.append(node.feature)
        out.splits.append(_threshold(node, nudge))
        out.nan_true.append(int(_missing_goes_left(node)))
    elif indicators is not None:  # in the set <=> indicator 1.0, so "<= 0.5" is true for the right branch
        out.modes.append(BRANCH_LEQ)
        out.features.append(indicators[_set_key(node)])
        out.splits.append(0.5)
        out.nan_true.append(0)  # an indicator is never NaN
        first, second = node.right, node.left
    else:
        out.modes.append(BRANCH_MEMBER)
        out.features.append(node.feature)
        out.splits.append(0.0)
        out.nan_true.append(0)
        out.members.extend(float(c) for c in node.categories)
        out.members.append(float("nan"))  # every set ends with NaN (onnx.reference counts sets by NaNs)
    for lst in (out.true_ids, out.true_leaf, out.false_ids, out.false_leaf):
        lst.append(0)
    out.true_ids[at], leaf = _emit(first, tree, out, nudge, routing, indicators)
    out.true_leaf[at] = int(leaf)
    out.false_ids[at], leaf = _emit(second, tree, out, nudge, routing, indicators)
    out.false_leaf[at] = int(leaf)
    return at, False


def _emit_tree(root: Node, tree: int, out: _Arrays, nudge: bool, routing: bool,
               indicators: Indicators | None) -> None:
    if isinstance(root, Leaf):
        # A tree that is one leaf: one node whose two branches reach two copies of the leaf. (The spec also
        # allows both branches on one leaf, but onnx.reference then reads the node index as the leaf index.)
        at = len(out.modes)
        first, _ = _emit(root, tree, out, nudge, routing, indicators)
        second, _ = _emit(root, tree, out, nudge, routing, indicators)
        out.modes.append(BRANCH_LEQ)
        out.features.append(0)
        out.splits.append(0.0)
        out.nan_true.append(1)
        out.true_ids.append(first)
        out.true_leaf.append(1)
        out.false_ids.append(second)
        out.false_leaf.append(1)
        out.roots.append(at)
        return
    out.roots.append(_emit(root, tree, out, nudge, routing, indicators)[0])


def _feature_kinds(ens: Ensemble) -> tuple[set[int], set[int]]:
    """(categorical features, features whose splits treat zero as missing), checked for mixing."""
    cats: set[int] = set()
    numeric: set[int] = set()
    zero: set[int] = set()
    nan: set[int] = set()
    near_zero: set[int] = set()
    for tree in ens.trees:
        for s in splits(tree):
            (cats if s.categorical else numeric).add(s.feature)
            if s.categorical:
                continue
            if s.missing_type == "Zero":
                zero.add(s.feature)
            elif s.missing_type == "NaN":
                nan.add(s.feature)
            elif -float(ZERO_THRESHOLD) <= s.threshold < float(ZERO_THRESHOLD):
                near_zero.add(s.feature)
    clash = (cats & numeric) | (zero & (nan | near_zero))
    if clash:
        raise TreeExportError(f"dump_model: feature(s) {sorted(clash)} mix categorical/'Zero'/'NaN' missing "
                              "handling across splits; re-train with one missing-value mode per feature")
    return cats, zero


def _top_categories(keys: Iterable[tuple[int, tuple[int, ...]]]) -> dict[int, int]:
    """The largest category any set of each categorical feature holds."""
    top: dict[int, int] = {}
    for feature, cats in keys:
        top[feature] = max(top.get(feature, 0), max(cats, default=0))
    return top


def _indicator_columns(ens: Ensemble) -> Indicators | None:
    """A column index past the model's features for every distinct categorical set, or None when the
    sets reach categories too large to compare against (the member form is used then)."""
    keys = sorted({_set_key(s) for tree in ens.trees for s in splits(tree) if s.categorical})
    if sum(k + 2 for k in _top_categories(keys).values()) > MAX_INDICATOR_CODES:
        return None
    return {key: ens.num_features + i for i, key in enumerate(keys)}


def _indicators(ens: Ensemble, columns: Indicators, nodes: list[onnx.NodeProto], inits: list[TensorProto],
                source: str, current: str) -> str:
    """``current`` with the 0/1 set columns appended, computed from the raw ``source`` features.

    For a categorical feature whose sets reach category K-1 the boundaries are b_0 = -1 and
    b_j = the float32 just below j (j = 1..K); s_j = [x <= b_j]. Category c (LightGBM's
    truncation toward zero, so (-1, 1) for 0 and [c, c+1) above) is s_{c+1} - s_c, a set's
    column is the sum over its categories: one MatMul by a matrix of +1 and -1. NaN, +-inf,
    x <= -1 and categories past K compare alike on both boundaries and give 0: not in the set.
    """
    top = _top_categories(columns)
    gather: list[int] = []
    bounds: list[float] = []
    offset: dict[int, int] = {}
    for feature in sorted(top):
        offset[feature] = len(bounds)
        below = [float(np.nextafter(np.float32(j), np.float32(-np.inf))) for j in range(1, top[feature] + 2)]
        gather += [feature] * (len(below) + 1)
        bounds += [-1.0, *below]
    weights = np.zeros((len(bounds), len(columns)), dtype=np.float32)
    for (feature, cats), column in columns.items():
        for c in cats:
            weights[offset[feature] + c + 1, column - ens.num_features] += 1.0
            weights[offset[feature] + c, column - ens.num_features] -= 1.0
    inits += [numpy_helper.from_array(np.asarray(gather, dtype=np.int64), "category_columns"),
              numpy_helper.from_array(np.asarray(bounds, dtype=np.float32), "category_bounds")]
    if weights.nbytes > INT8_SETS_BYTES:  # many sets: store the +-1 matrix in int8 (runtimes fold the Cast at load)
        inits.append(numpy_helper.from_array(weights.astype(np.int8), "category_sets_int8"))
        nodes.append(helper.make_node("Cast", ["category_sets_int8"], ["category_sets"], to=TensorProto.FLOAT))
    else:  # a few KiB: float32 loads faster than a Cast folded at session creation
        inits.append(numpy_helper.from_array(weights, "category_sets"))
    nodes += [
        helper.make_node("Gather", [source, "category_columns"], ["category_values"], axis=1),
        helper.make_node("LessOrEqual", ["category_values", "category_bounds"], ["category_below"]),
        helper.make_node("Cast", ["category_below"], ["category_steps"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["category_steps", "category_sets"], ["set_indicators"]),
        helper.make_node("Concat", [current, "set_indicators"], ["features_sets"], axis=1),
    ]
    return "features_sets"


def _preprocess(ens: Ensemble, nodes: list[onnx.NodeProto], inits: list[TensorProto], name: str,
                indicators: Indicators | None) -> str:
    """Standard-operator steps before the trees: categorical codes (truncated, or as set indicators),
    zero-as-missing to NaN."""
    cats, zero = _feature_kinds(ens)
    current = name
    if cats and indicators is None:
        mask = np.zeros(ens.num_features, dtype=np.bool_)
        mask[sorted(cats)] = True
        inits.append(numpy_helper.from_array(mask, "categorical_columns"))
        nodes += [
            helper.make_node("Abs", [current], ["cat_abs"]),
            helper.make_node("Floor", ["cat_abs"], ["cat_floor"]),
            helper.make_node("Sign", [current], ["cat_sign"]),
            helper.make_node("Mul", ["cat_sign", "cat_floor"], ["cat_trunc"]),
            helper.make_node("Where", ["categorical_columns", "cat_trunc", current], ["features_cat"]),
        ]
        current = "features_cat"
    if zero:
        mask = np.zeros(ens.num_features, dtype=np.bool_)
        mask[sorted(zero)] = True
        inits += [numpy_helper.from_array(mask, "zero_missing_columns"),
                  numpy_helper.from_array(np.array(ZERO_THRESHOLD, dtype=np.float32), "zero_threshold"),
                  numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan")]
        nodes += [
            helper.make_node("Abs", [current], ["zero_abs"]),
            helper.make_node("LessOrEqual", ["zero_abs", "zero_threshold"], ["zero_small"]),
            helper.make_node("And", ["zero_small", "zero_missing_columns"], ["zero_missing"]),
            helper.make_node("Where", ["zero_missing", "nan", current], ["features_zero"]),
        ]
        current = "features_zero"
    if indicators:
        current = _indicators(ens, indicators, nodes, inits, name, current)
    return current


def tree_graph(ens: Ensemble, *, logistic: bool, output: str, nudge: bool = True, routing: bool = False,
               categorical: CategoricalForm = "indicator") -> onnx.ModelProto:
    """The whole model: ``features`` float32 [N, F] -> ``output`` float32 [N] (or [N, trees] when routing)."""
    if categorical not in ("indicator", "member"):
        raise TreeExportError(f"categorical: {categorical!r} is not 'indicator' or 'member'")
    indicators = _indicator_columns(ens) if categorical == "indicator" else None
    arr = _Arrays()
    for i, tree in enumerate(ens.trees):
        _emit_tree(tree, i, arr, nudge, routing, indicators)
    weights = np.asarray(arr.leaf_weights, dtype=np.float64)
    if logistic and not routing and ens.sigmoid != 1.0:
        weights = weights * ens.sigmoid
    n_targets = len(ens.trees) if routing else 1
    attrs: dict[str, Any] = {
        "n_targets": n_targets,
        "aggregate_function": AGG_AVERAGE if ens.average_output and not routing else AGG_SUM,
        # onnxruntime 1.32 returns raw sums with post_transform LOGISTIC here: a Sigmoid node follows instead.
        "post_transform": POST_NONE,
        "tree_roots": arr.roots,
        "nodes_modes": numpy_helper.from_array(np.asarray(arr.modes, dtype=np.uint8)),
        "nodes_featureids": arr.features,
        "nodes_splits": numpy_helper.from_array(np.asarray(arr.splits, dtype=np.float32)),
        "nodes_truenodeids": arr.true_ids,
        "nodes_trueleafs": arr.true_leaf,
        "nodes_falsenodeids": arr.false_ids,
        "nodes_falseleafs": arr.false_leaf,
        "nodes_missing_value_tracks_true": arr.nan_true,
        "leaf_targetids": arr.leaf_targets,
        "leaf_weights": numpy_helper.from_array(weights.astype(np.float32)),
    }
    if arr.members:
        attrs["membership_values"] = numpy_helper.from_array(np.asarray(arr.members, dtype=np.float32))
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    x = _preprocess(ens, nodes, inits, "features", indicators)
    if routing:
        nodes.append(helper.make_node("TreeEnsemble", [x], [output], domain="ai.onnx.ml", **attrs))
        out_shape: list[str | int] = ["N", n_targets]
    else:
        inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape"))
        flat = "raw_score" if logistic else output
        nodes += [helper.make_node("TreeEnsemble", [x], ["tree_sum"], domain="ai.onnx.ml", **attrs),
                  helper.make_node("Reshape", ["tree_sum", "flat_shape"], [flat])]
        if logistic:
            nodes.append(helper.make_node("Sigmoid", [flat], [output]))
        out_shape = ["N"]
    graph = helper.make_graph(
        nodes, "lightgbm_trees",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", ens.num_features])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=list(OPSETS), ir_version=IR_VERSION,
                             producer_name="carryon")


def categorical_form(model: onnx.ModelProto) -> str:
    """How ``model`` splits categorical features: "indicator", "member" or "none" (it has no such split)."""
    if any(i.name in ("category_sets", "category_sets_int8") for i in model.graph.initializer):
        return "indicator"
    members = any(a.name == "membership_values" for n in model.graph.node for a in n.attribute)
    return "member" if members else "none"
