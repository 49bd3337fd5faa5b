"""LightGBM's own model dump read into plain trees, and the float32 threshold rule.

Promises: ``read_ensemble`` turns ``booster.dump_model()`` into immutable ``Split``/``Leaf``
trees without losing anything that affects routing (float64 thresholds, category sets,
``default_left``, ``missing_type``); ``float32_at_or_below`` gives the float32 threshold
``t32`` with ``x <= t64`` equal to ``x <= t32`` for every float32 ``x``; ``onnx_threshold`` adds
LightGBM's reading of near-zero inputs as 0.0, so routing matches LightGBM's exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from features.errors import CarryonError

# LightGBM's kZeroThreshold: |x| <= this counts as zero for missing_type "Zero".
ZERO_THRESHOLD = np.float32(1e-35)

MissingType = Literal["None", "Zero", "NaN"]


class TreeExportError(CarryonError):
    """A LightGBM model that the tree converter cannot represent exactly."""


@dataclass(frozen=True)
class Leaf:
    index: int  # LightGBM's leaf_index inside its tree (what pred_leaf reports)
    value: float


@dataclass(frozen=True)
class Split:
    feature: int
    categorical: bool
    threshold: float  # float64 threshold of a numeric split (unused for categorical ones)
    categories: tuple[int, ...]  # the set that goes left, for a categorical split
    default_left: bool
    missing_type: MissingType
    left: Node
    right: Node


Node = Split | Leaf


@dataclass(frozen=True)
class Ensemble:
    trees: tuple[Node, ...]
    num_features: int
    objective: str
    sigmoid: float  # the binary objective's sigmoid parameter (1.0 unless set)
    average_output: bool


def naive_float32(t64: float) -> np.float32:
    """Round to nearest float32; thresholds beyond float32's range (LightGBM uses +-1e300) become +-inf."""
    with np.errstate(over="ignore"):
        return np.float32(t64)


def float32_at_or_below(t64: float) -> np.float32:
    """The largest float32 that is <= t64, so ``x <= t64`` and ``x <= result`` agree on float32 x."""
    t32 = naive_float32(t64)
    if float(t32) > t64:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


def onnx_threshold(t64: float) -> np.float32:
    """The float32 threshold that routes raw float32 inputs exactly as LightGBM routes them against ``t64``.

    LightGBM reads every input with ``|x| <= ZERO_THRESHOLD`` as 0.0 before any split, so a
    threshold inside that band moves to the band's edge; elsewhere it is ``float32_at_or_below``.
    """
    t32 = float32_at_or_below(t64)
    if -ZERO_THRESHOLD <= t32 < 0:  # band values read as 0 > t: only x < -band goes left
        return np.float32(np.nextafter(-ZERO_THRESHOLD, np.float32(-np.inf)))
    if 0 <= t32 < ZERO_THRESHOLD:  # band values read as 0 <= t: everything up to +band goes left
        return ZERO_THRESHOLD
    return t32


def _node(raw: dict[str, Any], where: str) -> Node:
    if "leaf_value" in raw:
        return Leaf(index=int(raw.get("leaf_index", 0)), value=float(raw["leaf_value"]))
    decision = raw.get("decision_type")
    missing = raw.get("missing_type", "None")
    if missing not in ("None", "Zero", "NaN"):
        raise TreeExportError(f"{where}: missing_type {missing!r} is not None/Zero/NaN; re-train with LightGBM >= 4")
    left = _node(raw["left_child"], where)
    right = _node(raw["right_child"], where)
    if decision == "<=":
        return Split(int(raw["split_feature"]), False, float(raw["threshold"]), (), bool(raw["default_left"]),
                     missing, left, right)
    if decision == "==":
        cats = tuple(sorted(int(c) for c in str(raw["threshold"]).split("||")))
        return Split(int(raw["split_feature"]), True, 0.0, cats, bool(raw["default_left"]), missing, left, right)
    raise TreeExportError(f"{where}: decision_type {decision!r} is not '<=' or '=='; "
                          "only LightGBM's own splits are supported")


def _sigmoid(objective: str) -> float:
    for part in objective.split()[1:]:
        if part.startswith("sigmoid:"):
            return float(part.split(":", 1)[1])
    return 1.0


def read_ensemble(dump: dict[str, Any]) -> Ensemble:
    """The trees of ``booster.dump_model()`` (one output per row: binary, ranking, regression)."""
    if int(dump.get("num_tree_per_iteration", 1)) != 1 or int(dump.get("num_class", 1)) != 1:
        raise TreeExportError("dump_model: num_class > 1 (multiclass) is not supported; train a binary, "
                              "lambdarank or regression model")
    trees = tuple(_node(t["tree_structure"], f"dump_model tree {t.get('tree_index', i)}")
                  for i, t in enumerate(dump["tree_info"]))
    if not trees:
        raise TreeExportError("dump_model: the model has no trees; fit it before exporting")
    objective = str(dump.get("objective", ""))
    return Ensemble(trees, int(dump["max_feature_idx"]) + 1, objective, _sigmoid(objective),
                    bool(dump.get("average_output", False)))


def splits(node: Node) -> Iterator[Split]:
    """Every split of a tree, in pre-order."""
    if isinstance(node, Split):
        yield node
        yield from splits(node.left)
        yield from splits(node.right)


def booster_of(model: Any) -> Any:
    """The ``lightgbm.Booster`` of a fitted scikit-learn LightGBM model, or the booster itself."""
    booster = getattr(model, "booster_", model)
    if not hasattr(booster, "dump_model"):
        raise TreeExportError(f"model: {type(model).__name__} is not a fitted LightGBM model or Booster; "
                              "pass a fitted LGBMClassifier, LGBMRanker, LGBMRegressor or Booster")
    return booster
