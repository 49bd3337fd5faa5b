"""Trees read from LightGBM's dump as one ``ai.onnx.ml`` opset-5 ``TreeEnsemble`` graph.

Promises: the graph routes every float32 row exactly as LightGBM does (``x <= t64`` via the
float32 threshold at or below ``t64``; NaN and missing types as LightGBM's ``NumericalDecision``;
categorical values truncated toward zero, negative and NaN to the right, as its
``CategoricalDecision``); with ``routing=True`` it outputs, per tree, the LightGBM leaf index
a row reaches instead of the score, which is how routing flips are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

BRANCH_LEQ = 0
BRANCH_MEMBER = 6
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


def _emit(node: Node, tree: int, out: _Arrays, nudge: bool, routing: bool) -> tuple[int, bool]:
    """Append ``node``'s subtree; return (its index, whether that index is a leaf index)."""
    if isinstance(node, Leaf):
        out.leaf_targets.append(tree if routing else 0)
        out.leaf_weights.append(float(node.index) if routing else node.value)
        return len(out.leaf_weights) - 1, True
    at = len(out.modes)
    out.modes.append(BRANCH_MEMBER if node.categorical else BRANCH_LEQ)
    out.features.append(node.feature)
    out.splits.append(0.0 if node.categorical else _threshold(node, nudge))
    out.nan_true.append(0 if node.categorical else int(_missing_goes_left(node)))
    if node.categorical:
        out.members.extend(float(c) for c in node.categories)
        out.members.append(float("nan"))  # every set ends with NaN (onnx.reference counts sets by NaNs)
    for lst in (out.true_ids, out.true_leaf, out.false_ids, out.false_leaf):
        lst.append(0)
    out.true_ids[at], leaf = _emit(node.left, tree, out, nudge, routing)
    out.true_leaf[at] = int(leaf)
    out.false_ids[at], leaf = _emit(node.right, tree, out, nudge, routing)
    out.false_leaf[at] = int(leaf)
    return at, False


def _emit_tree(root: Node, tree: int, out: _Arrays, nudge: bool, routing: bool) -> None:
    if isinstance(root, Leaf):
        # A tree that is one leaf: one node whose two branches reach two copies of the leaf. (The spec also
        # allows both branches on one leaf, but onnx.reference then reads the node index as the leaf index.)
        at = len(out.modes)
        first, _ = _emit(root, tree, out, nudge, routing)
        second, _ = _emit(root, tree, out, nudge, routing)
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
    out.roots.append(_emit(root, tree, out, nudge, routing)[0])


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


def _preprocess(ens: Ensemble, nodes: list[onnx.NodeProto], inits: list[TensorProto], name: str) -> str:
    """Standard-operator steps before the trees: truncate categorical codes, zero-as-missing to NaN."""
    cats, zero = _feature_kinds(ens)
    current = name
    if cats:
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
    return current


def tree_graph(ens: Ensemble, *, logistic: bool, output: str, nudge: bool = True,
               routing: bool = False) -> onnx.ModelProto:
    """The whole model: ``features`` float32 [N, F] -> ``output`` float32 [N] (or [N, trees] when routing)."""
    arr = _Arrays()
    for i, tree in enumerate(ens.trees):
        _emit_tree(tree, i, arr, nudge, routing)
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
    x = _preprocess(ens, nodes, inits, "features")
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
