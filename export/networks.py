"""scikit-learn candidates (one-hot + scaling + logistic regression or MLP) as standard-operator ONNX.

``sklearn_to_onnx`` turns a fitted ``Pipeline(ColumnTransformer(OneHotEncoder, StandardScaler),
LogisticRegression | MLPClassifier)`` into a graph of ``ai.onnx`` opset-21 operators only: input
``features`` float32 [N, F], output ``probability`` float32 [N] (positive class), preprocessing inside.
``float_parity`` measures it against the pipeline's ``predict_proba`` (gate: max abs diff <= 1e-5).

    >>> model = sklearn_to_onnx(pipeline, spec.cta_names, metadata={"carryon.kind": "cta"})

Why hand-built rather than skl2onnx: skl2onnx 1.20 with ``zipmap=False`` and opset 21 still emits
``ai.onnx.ml`` operators for these pipelines (``OneHotEncoder``, ``Scaler``, ``ArrayFeatureExtractor``,
and ``LinearClassifier`` for the logistic regression) and has no option to lower them to standard
operators; NNAPI/CoreML do not take them and onnxruntime's quantizer cannot quantize
``LinearClassifier``. The graph is small, so it is built here from the fitted parameters:

- category columns: one ``Gather`` (each column index repeated once per category), ``Equal`` against
  the row of category codes, ``Cast`` to float: an unknown code (or NaN) gives all zeros, as
  ``handle_unknown="ignore"`` does;
- numeric columns: ``Gather``, ``Sub`` mean, ``Div`` scale (float32; sklearn's float64 agrees within 1e-6);
- ``Concat`` in the ColumnTransformer's output order (``passthrough`` columns included);
- logistic regression: ``MatMul`` + ``Add`` + ``Sigmoid``; MLP: ``MatMul`` + ``Add`` + activation per
  hidden layer (relu, logistic, tanh or identity), then ``MatMul`` + ``Add`` + ``Sigmoid``;
- ``Squeeze`` to the 1-D ``probability``.

Anything else raises :class:`UnsupportedModelError` naming the step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from export._graph import INPUT_NAME, GraphBuilder, run
from export.checks import MIN_ONNXRUNTIME  # standard operators only: no TreeEnsemble

OUTPUT_NAME = "probability"
PARITY_TOLERANCE = 1e-5  # max abs probability difference, float ONNX vs predict_proba
_ACTIVATIONS = {"relu": "Relu", "logistic": "Sigmoid", "tanh": "Tanh", "identity": None}

__all__ = ["OUTPUT_NAME", "PARITY_TOLERANCE", "UnsupportedModelError", "float_parity", "sklearn_to_onnx"]


class UnsupportedModelError(ValueError):
    """The pipeline holds a step (or a setting of a step) the standard-operator graph cannot express."""


def sklearn_to_onnx(pipeline: Any, feature_names: Sequence[str], *, metadata: dict[str, str]) -> onnx.ModelProto:
    """The fitted pipeline as an ``ai.onnx``-only model; ``metadata`` goes to ``metadata_props``.

    ``carryon.feature_names`` (JSON list) and ``carryon.min_onnxruntime`` are filled in unless given.
    """
    names = list(feature_names)
    steps = pipeline.steps if isinstance(pipeline, Pipeline) else [("model", pipeline)]
    active = [(name, step) for name, step in steps if step is not None and step != "passthrough"]
    if not active:
        raise UnsupportedModelError("the pipeline has no steps; expected [ColumnTransformer,] classifier")
    *pre_steps, (clf_name, clf) = active
    n_in = getattr(pipeline, "n_features_in_", len(names))
    if n_in != len(names):
        raise ValueError(f"feature_names has {len(names)} names but the pipeline was fitted on {n_in} columns")

    g = GraphBuilder()
    x, width = INPUT_NAME, len(names)
    if len(pre_steps) > 1:
        raise UnsupportedModelError(
            f"steps {[n for n, _ in pre_steps]}: expected at most one ColumnTransformer before the classifier")
    for step_name, step in pre_steps:
        if not isinstance(step, ColumnTransformer):
            raise UnsupportedModelError(
                f"step {step_name!r} is {type(step).__name__}; only a ColumnTransformer may precede the classifier")
        x, width = _column_transformer(g, step_name, step, names)

    if isinstance(clf, LogisticRegression):
        logit = _logistic(g, clf_name, clf, x, width)
        family = "logreg"
    elif isinstance(clf, MLPClassifier):
        logit = _mlp(g, clf_name, clf, x, width)
        family = "mlp"
    else:
        raise UnsupportedModelError(
            f"step {clf_name!r} is {type(clf).__name__}; expected LogisticRegression or MLPClassifier")
    prob = g.op("Sigmoid", [logit], "positive_probability")
    g.op("Squeeze", [prob, g.const("squeeze_axes", np.array([1], dtype=np.int64))], "squeeze", output=OUTPUT_NAME)

    props = {"carryon.feature_names": json.dumps(names), "carryon.min_onnxruntime": MIN_ONNXRUNTIME, **metadata}
    if json.loads(props["carryon.feature_names"]) != names:
        raise ValueError("metadata['carryon.feature_names'] disagrees with feature_names; pass one or make them equal")
    return g.model(f"carryon_{family}", len(names), OUTPUT_NAME, props)


def float_parity(pipeline: Any, model: onnx.ModelProto, x: np.ndarray) -> dict[str, Any]:
    """Float ONNX vs ``predict_proba[:, 1]`` on ``x``: max abs diff and whether it is within the gate."""
    native = np.asarray(pipeline.predict_proba(np.asarray(x, dtype=np.float32)))[:, 1]
    onnx_prob = run(model, x).astype(np.float64)
    diff = float(np.max(np.abs(onnx_prob - native))) if len(native) else 0.0
    return {"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE, "rows": len(native),
            "passed": bool(diff <= PARITY_TOLERANCE)}


def _columns(columns: Any, names: list[str], where: str) -> list[int]:
    """A ColumnTransformer column selection as input indices."""
    if isinstance(columns, slice):
        return list(range(len(names)))[columns]
    cols = list(np.atleast_1d(np.asarray(columns)))
    if cols and all(isinstance(c, (bool, np.bool_)) for c in cols):
        return [i for i, keep in enumerate(cols) if keep]
    out: list[int] = []
    for c in cols:
        if isinstance(c, str | np.str_):
            if c not in names:
                raise UnsupportedModelError(f"{where}: column {c!r} is not among the feature names")
            out.append(names.index(str(c)))
        elif isinstance(c, int | np.integer) and 0 <= int(c) < len(names):
            out.append(int(c))
        else:
            raise UnsupportedModelError(f"{where}: column selection {c!r} is not a feature index or name")
    return out


def _column_transformer(g: GraphBuilder, step: str, ct: ColumnTransformer, names: list[str]) -> tuple[str, int]:
    """Each transformer's block, concatenated in the ColumnTransformer's output order."""
    blocks: list[str] = []
    width = 0
    for name, trans, columns in ct.transformers_:
        where = f"step {step!r}, transformer {name!r}"
        cols = _columns(columns, names, where)
        if trans == "drop" or not cols:
            continue
        if trans == "passthrough":
            blocks.append(g.op("Gather", [INPUT_NAME, g.const(f"{name}_index", np.array(cols, np.int64))],
                               f"{name}_columns", axis=1))
            width += len(cols)
        elif isinstance(trans, OneHotEncoder):
            block, w = _one_hot(g, where, name, trans, cols)
            blocks.append(block)
            width += w
        elif isinstance(trans, StandardScaler):
            blocks.append(_scale(g, name, trans, cols))
            width += len(cols)
        else:
            raise UnsupportedModelError(
                f"{where} is {type(trans).__name__}; expected OneHotEncoder, StandardScaler or passthrough")
    if not blocks:
        raise UnsupportedModelError(f"step {step!r} outputs no columns")
    if len(blocks) == 1:
        return blocks[0], width
    return g.op("Concat", blocks, "preprocessed", axis=1), width


def _one_hot(g: GraphBuilder, where: str, name: str, enc: OneHotEncoder, cols: list[int]) -> tuple[str, int]:
    if enc.drop_idx_ is not None:
        raise UnsupportedModelError(f"{where}: drop={enc.drop!r} is not supported; use drop=None")
    if getattr(enc, "_infrequent_enabled", False):
        raise UnsupportedModelError(f"{where}: infrequent categories are not supported; unset min_frequency")
    if enc.handle_unknown != "ignore":
        raise UnsupportedModelError(
            f"{where}: handle_unknown={enc.handle_unknown!r}; the graph maps unknown codes to zeros, set 'ignore'")
    index: list[int] = []
    codes: list[float] = []
    for col, cats in zip(cols, enc.categories_, strict=True):
        if cats.dtype.kind not in "fiub" or np.isnan(cats.astype(np.float64)).any():
            raise UnsupportedModelError(f"{where}: categories of column {col} must be numeric codes without NaN")
        index += [col] * len(cats)
        codes += [float(c) for c in cats]
    gathered = g.op("Gather", [INPUT_NAME, g.const(f"{name}_index", np.array(index, np.int64))],
                    f"{name}_columns", axis=1)
    equal = g.op("Equal", [gathered, g.const(f"{name}_codes", np.array([codes], np.float32))], f"{name}_equal")
    return g.op("Cast", [equal], f"{name}_onehot", to=onnx.TensorProto.FLOAT), len(codes)


def _scale(g: GraphBuilder, name: str, scaler: StandardScaler, cols: list[int]) -> str:
    out = g.op("Gather", [INPUT_NAME, g.const(f"{name}_index", np.array(cols, np.int64))], f"{name}_columns", axis=1)
    if scaler.mean_ is not None:
        out = g.op("Sub", [out, g.const(f"{name}_mean", np.asarray(scaler.mean_, np.float32)[None, :])],
                   f"{name}_centered")
    if scaler.scale_ is not None:
        out = g.op("Div", [out, g.const(f"{name}_scale", np.asarray(scaler.scale_, np.float32)[None, :])],
                   f"{name}_scaled")
    return out


def _dense(g: GraphBuilder, stem: str, x: str, weights: np.ndarray, bias: np.ndarray) -> str:
    mm = g.op("MatMul", [x, g.const(f"{stem}_weight", np.asarray(weights, np.float32))], f"{stem}_matmul")
    return g.op("Add", [mm, g.const(f"{stem}_bias", np.asarray(bias, np.float32)[None, :])], f"{stem}_linear")


def _logistic(g: GraphBuilder, step: str, clf: LogisticRegression, x: str, width: int) -> str:
    if len(clf.classes_) != 2:
        raise UnsupportedModelError(f"step {step!r}: {len(clf.classes_)} classes; only binary classifiers export")
    if clf.coef_.shape[1] != width:
        raise UnsupportedModelError(f"step {step!r} expects {clf.coef_.shape[1]} inputs, preprocessing gives {width}")
    return _dense(g, "logreg", x, clf.coef_.T, clf.intercept_)


def _mlp(g: GraphBuilder, step: str, clf: MLPClassifier, x: str, width: int) -> str:
    if clf.n_outputs_ != 1 or clf.out_activation_ != "logistic":
        raise UnsupportedModelError(
            f"step {step!r}: output {clf.out_activation_!r} with {clf.n_outputs_} outputs; only binary (logistic)")
    if clf.activation not in _ACTIVATIONS:
        raise UnsupportedModelError(f"step {step!r}: activation {clf.activation!r} has no standard operator here")
    if clf.coefs_[0].shape[0] != width:
        raise UnsupportedModelError(
            f"step {step!r} expects {clf.coefs_[0].shape[0]} inputs, preprocessing gives {width}")
    act = _ACTIVATIONS[clf.activation]
    last = len(clf.coefs_) - 1
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        x = _dense(g, f"layer{i}", x, w, b)
        if i < last and act is not None:
            x = g.op(act, [x], f"layer{i}_{act.lower()}")
    return x
