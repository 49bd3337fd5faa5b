"""LightGBM models as compact ``ai.onnx.ml`` opset-5 ``TreeEnsemble`` graphs that route like LightGBM.

Promises: ``lightgbm_to_onnx`` builds the graph from LightGBM's own dump (categorical splits
as set indicators or ``BRANCH_MEMBER`` sets, see ``export._tree_graph``; float32 thresholds
nudged so no decision flips, NaN and
missing types as LightGBM), input ``features`` float32 [N, F], output ``probability`` (binary
classifier, logistic of the summed leaves) or ``score`` (ranker, regressor: the raw sum),
float32 [N]; ``threshold_report`` counts the decision flips that naive float32 rounding
would cause and the nudge removes; ``legacy_onnx`` is onnxmltools' older form, kept only
to compare size and load time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import onnx

from export._tree_dump import TreeExportError, booster_of, read_ensemble
from export._tree_graph import CategoricalForm, categorical_form, tree_graph
from export._tree_precision import precision_report
from export._tree_report import count_flips
from export.checks import min_runtime

__all__ = ["TreeExportError", "legacy_onnx", "lightgbm_to_onnx", "precision_report", "threshold_report"]

Kind = Literal["classifier", "ranker", "regressor"]
_OUTPUT = {"classifier": "probability", "ranker": "score", "regressor": "score"}


def lightgbm_to_onnx(model: Any, feature_names: Sequence[str], *, kind: Kind, metadata: Mapping[str, str],
                     categorical: CategoricalForm = "indicator") -> onnx.ModelProto:
    """The opset-5 ONNX model of a fitted LightGBM model (see the module docstring and ``export._tree_graph``
    for the two forms of categorical splits)."""
    if kind not in _OUTPUT:
        raise TreeExportError(f"kind: {kind!r} is not one of classifier, ranker, regressor; pass one of them")
    ens = read_ensemble(booster_of(model).dump_model())
    if len(feature_names) != ens.num_features:
        raise TreeExportError(f"feature_names: {len(feature_names)} names for a model with {ens.num_features} "
                              "features; pass the candidate's feature names in training order")
    if kind == "classifier" and not ens.objective.startswith(("binary", "cross_entropy")):
        raise TreeExportError(f"kind: 'classifier' needs a binary objective, the model has {ens.objective!r}; "
                              "pass kind='ranker' or 'regressor' for raw scores")
    out = tree_graph(ens, logistic=kind == "classifier", output=_OUTPUT[kind], categorical=categorical)
    out.graph.doc_string = f"LightGBM {kind} as ai.onnx.ml TreeEnsemble (opset 5), {len(ens.trees)} trees"
    meta = {"carryon.feature_names": json.dumps(list(feature_names)), "carryon.kind": kind,
            "carryon.min_onnxruntime": min_runtime(out), "carryon.categorical_splits": categorical_form(out),
            **dict(metadata)}
    onnx.helper.set_model_props(out, meta)
    return out


def threshold_report(model: Any, x: np.ndarray) -> dict[str, Any]:
    """Decision and leaf flips of naive vs nudged float32 thresholds, on ``x`` and at every threshold."""
    booster = booster_of(model)
    return count_flips(read_ensemble(booster.dump_model()), booster, np.asarray(x, dtype=np.float32))


def legacy_onnx(model: Any, n_features: int, *, ml_opset: int = 15) -> onnx.ModelProto:
    """onnxmltools' TreeEnsembleClassifier/Regressor form (no ZipMap), only for size and load-time comparison."""
    from onnxmltools import convert_lightgbm  # type: ignore[import-untyped]
    from onnxmltools.convert.common.data_types import FloatTensorType  # type: ignore[import-untyped]

    converted = convert_lightgbm(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                                 zipmap=False, target_opset=ml_opset)
    if not isinstance(converted, onnx.ModelProto):
        raise TreeExportError(f"model: onnxmltools returned {type(converted).__name__}, not an ONNX model")
    return converted
