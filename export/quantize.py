"""int8 quantization of the network candidates and the quantized-vs-float parity gate.

``quantize_mlp`` runs onnxruntime's static QDQ quantization (int8 weights, uint8 activations,
MinMax ranges calibrated on training feature rows, ``calibration_sample`` picks them evenly
across the training set); when no calibration rows exist at all (``calibration=None``) it
falls back to dynamic quantization (int8 weights, activation ranges computed per batch at
run time). An empty calibration array is a caller mistake and raises. ``quantize_weights``
stores only the layers' parameters as int8 (weights per output channel, biases per tensor)
behind standard ``DequantizeLinear`` nodes and leaves the activations float: no calibration,
no clipping of inputs outside the calibrated range. ``quantize_gated`` tries the recipes in
that order and keeps the first whose model passes the caller's parity gate.
``should_quantize`` keeps linear models float: a single ``MatMul`` is a few hundred bytes.
``quantization_parity`` gives the AUC drop, max abs probability difference and top-1 agreement.

    >>> result = quantize_mlp(model, calibration_sample(x_train, 2000))
    >>> quantization_parity(model, result.model, x_test, y_test, group_size=8)["passed"]
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from sklearn.metrics import roc_auc_score

from export._graph import INPUT_NAME, initializer_bytes, layer_weight_bytes, run

AUC_DROP_GATE = 0.002  # quantized AUC may be at most this much below the float AUC
TOP1_GATE = 0.99  # share of groups whose argmax row is the same in float and quantized
_BATCH = 256  # calibration rows per batch fed to the calibrator
_OP_TYPES = ["MatMul", "Add"]  # the layers; the preprocessing (Gather/Equal/Sub/Div) stays float

__all__ = ["AUC_DROP_GATE", "TOP1_GATE", "QuantResult", "calibration_sample", "int8_symmetric", "quantization_parity",
           "quantize_gated", "quantize_mlp", "quantize_weights", "should_quantize"]


class QuantizationError(ValueError):
    """The model or its calibration set cannot be quantized as asked."""


@dataclass(frozen=True)
class QuantResult:
    """The quantized model and its sizes in bytes.

    ``*_file_bytes``: the serialized model; ``*_weight_bytes``: every initializer's values (the
    brief's "weight bytes alone", preprocessing constants included); ``*_layer_bytes``: only the
    layers' weights and biases (with their int8 scales and zero points), the network's parameters.
    """

    model: onnx.ModelProto
    method: str  # "static" (QDQ, calibrated), "dynamic" or "weights" (int8 parameters, float activations)
    float_file_bytes: int
    quant_file_bytes: int
    float_weight_bytes: int
    quant_weight_bytes: int
    float_layer_bytes: int
    quant_layer_bytes: int

    @property
    def weight_ratio(self) -> float:
        return self.float_weight_bytes / self.quant_weight_bytes

    @property
    def layer_ratio(self) -> float:
        return self.float_layer_bytes / self.quant_layer_bytes

    def sizes(self) -> dict[str, Any]:
        return {"method": self.method, "float_file_bytes": self.float_file_bytes,
                "quant_file_bytes": self.quant_file_bytes, "float_weight_bytes": self.float_weight_bytes,
                "quant_weight_bytes": self.quant_weight_bytes, "weight_ratio": round(self.weight_ratio, 3),
                "float_layer_bytes": self.float_layer_bytes, "quant_layer_bytes": self.quant_layer_bytes,
                "layer_ratio": round(self.layer_ratio, 3)}


def should_quantize(model: onnx.ModelProto) -> bool:
    """True for networks (two or more ``MatMul`` layers); linear models stay float."""
    return sum(1 for node in model.graph.node if node.op_type == "MatMul") >= 2


class _Rows(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration rows to the calibrator in batches under the input name."""

    def __init__(self, rows: np.ndarray) -> None:
        self._batches = iter(np.array_split(rows, max(1, -(-len(rows) // _BATCH))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def calibration_sample(rows: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``rows`` taken evenly from first to last (training rows are stored by creator
    and drop, so the first ``n`` would calibrate on a few drops and clip the others' ranges)."""
    if n < 1:
        raise QuantizationError(f"calibration sample size must be >= 1, got {n}")
    if len(rows) <= n:
        return rows
    return rows[np.unique(np.linspace(0, len(rows) - 1, n).round().astype(np.int64))]


def quantize_mlp(model: onnx.ModelProto, calibration: np.ndarray | None, *, per_channel: bool = False) -> QuantResult:
    """int8 QDQ model calibrated on ``calibration`` (training features, float32 [N, F]); dynamic if None."""
    if not should_quantize(model):
        raise QuantizationError(f"model {model.graph.name!r} has no hidden layer; linear models stay float")
    n_features = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    if calibration is not None:
        rows = np.ascontiguousarray(calibration, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != n_features:
            raise QuantizationError(
                f"calibration must be float32 rows [N >= 1, {n_features}] of training features, got shape "
                f"{rows.shape}; pass the candidate's training matrix (or None for dynamic quantization)")
        if not np.isfinite(rows).all():
            raise QuantizationError("calibration rows contain NaN or inf; encode features with the spec defaults first")
    with tempfile.TemporaryDirectory(prefix="carryon-quant-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, src)
        if calibration is None:
            quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=per_channel,
                             weight_type=QuantType.QInt8)
            method = "dynamic"
        else:
            quantize_static(src, dst, _Rows(rows), quant_format=QuantFormat.QDQ, op_types_to_quantize=_OP_TYPES,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
            method = "static"
        quant = onnx.load_model(dst)
    _restore_identity(model, quant)
    return _measured(model, quant, method)


def int8_symmetric(values: np.ndarray, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as int8 in [-127, 127] and float32 scales, one per slice along ``axis`` (one in all
    when None), so that ``q * scale`` is within half a scale step of each value. An all-zero slice
    gets scale 1.0 and zeros; no scale is below the smallest normal float32."""
    x = np.asarray(values, dtype=np.float32)
    if not np.isfinite(x).all():
        raise QuantizationError("values to quantize contain NaN or inf; the model's parameters must be finite")
    reduce = None if axis is None else tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    top = np.max(np.abs(x), axis=reduce, keepdims=True) if x.size else np.zeros((1,) * x.ndim, np.float32)
    # Scales stay normal floats: a subnormal one loses precision (and runtimes may flush it to zero).
    scale = np.where(top > 0, np.maximum(top / np.float32(127), np.finfo(np.float32).tiny), np.float32(1))
    scale = scale.astype(np.float32)
    q = np.clip(np.rint(x / scale), -127, 127).astype(np.int8)
    return q, (scale.reshape(-1) if axis is not None else scale.reshape(()))


def _layer_parameters(model: onnx.ModelProto) -> list[tuple[str, int | None]]:
    """(initializer, channel axis) of every layer: a MatMul's weight per output column, the bias an Add
    then adds to that MatMul's output per tensor. Preprocessing constants are not layer parameters."""
    inits = {t.name: t for t in model.graph.initializer}
    found: list[tuple[str, int | None]] = []
    matmul_out: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            found.append((node.input[1], 1))
            matmul_out.add(node.output[0])
    for node in model.graph.node:
        if node.op_type == "Add" and len(node.input) == 2:
            a, b = node.input
            bias = b if a in matmul_out else a if b in matmul_out else None
            if bias is not None and bias in inits:
                found.append((bias, None))
    return found


def quantize_weights(model: onnx.ModelProto) -> QuantResult:
    """The layers' weights (per output channel) and biases (per tensor) stored as int8 behind
    ``DequantizeLinear``; activations stay float, so nothing is calibrated or clipped."""
    if not should_quantize(model):
        raise QuantizationError(f"model {model.graph.name!r} has no hidden layer; linear models stay float")
    quant = onnx.ModelProto()
    quant.CopyFrom(model)
    params = dict(_layer_parameters(quant))
    taken = {t.name for t in quant.graph.initializer} | {o for n in quant.graph.node for o in n.output}
    kept: list[TensorProto] = []
    dequantize: list[onnx.NodeProto] = []
    for tensor in quant.graph.initializer:
        if tensor.name not in params:
            kept.append(tensor)
            continue
        axis = params[tensor.name]
        q_name, s_name = f"{tensor.name}_int8", f"{tensor.name}_scale"
        if {q_name, s_name} & taken:
            raise QuantizationError(f"model {model.graph.name!r} already has a tensor named {q_name!r} or "
                                    f"{s_name!r}; rename it before quantizing")
        q, scale = int8_symmetric(numpy_helper.to_array(tensor), axis)
        kept += [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)]
        attrs: dict[str, Any] = {} if axis is None else {"axis": axis}
        dequantize.append(helper.make_node("DequantizeLinear", [q_name, s_name], [tensor.name],
                                           name=f"{tensor.name}_dequantize", **attrs))
    del quant.graph.initializer[:]
    quant.graph.initializer.extend(kept)
    nodes = [*dequantize, *quant.graph.node]
    del quant.graph.node[:]
    quant.graph.node.extend(nodes)
    return _measured(model, quant, "weights")


def _measured(model: onnx.ModelProto, quant: onnx.ModelProto, method: str) -> QuantResult:
    """``quant`` with its sizes next to the float ``model``'s."""
    return QuantResult(model=quant, method=method,
                       float_file_bytes=len(model.SerializeToString()), quant_file_bytes=len(quant.SerializeToString()),
                       float_weight_bytes=initializer_bytes(model), quant_weight_bytes=initializer_bytes(quant),
                       float_layer_bytes=layer_weight_bytes(model), quant_layer_bytes=layer_weight_bytes(quant))


Judge = Callable[[onnx.ModelProto], dict[str, Any]]  # a quantized model -> its parity figures with "passed"


def quantize_gated(model: onnx.ModelProto, calibration: np.ndarray | None,
                   judge: Judge) -> tuple[QuantResult, dict[str, Any], list[dict[str, Any]]]:
    """The first recipe whose model ``judge`` passes: ``quantize_mlp`` (static, or dynamic without
    calibration rows), then ``quantize_weights``. Returns that result, its figures and every attempt's
    figures in order; when none passes, the last recipe's (the gate then fails the candidate)."""
    attempts: list[dict[str, Any]] = []
    recipes: tuple[Callable[[], QuantResult], ...] = (lambda: quantize_mlp(model, calibration),
                                                      lambda: quantize_weights(model))
    for recipe in recipes:
        result = recipe()
        figures = judge(result.model)
        attempts.append({"method": result.method, **figures})
        if figures["passed"]:
            break
    return result, figures, attempts


def _restore_identity(source: onnx.ModelProto, quant: onnx.ModelProto) -> None:
    """Carry the metadata and names over; drop any path the quantizer wrote into doc strings."""
    del quant.metadata_props[:]
    quant.metadata_props.extend(source.metadata_props)
    quant.graph.name = source.graph.name
    quant.producer_name, quant.producer_version = source.producer_name, source.producer_version
    quant.doc_string = ""
    quant.graph.doc_string = ""
    for node in quant.graph.node:
        node.doc_string = ""


def quantization_parity(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, x: np.ndarray,
                        y: np.ndarray, *, group_size: int | None = None) -> dict[str, Any]:
    """Quantized vs float on ``x`` with labels ``y``: AUC drop, max abs diff, top-1 agreement, pass/fail.

    With ``group_size`` K, consecutive blocks of K rows are one decision (e.g. the K CTA variants of
    one impression) and top-1 agreement is the share of blocks whose argmax row is the same.
    """
    y = np.asarray(y)
    if len(np.unique(y)) != 2:
        raise ValueError(f"y must hold both classes 0 and 1 to compute an AUC, got {np.unique(y).tolist()}")
    p_float = run(float_model, x).astype(np.float64)
    p_quant = run(quant_model, x).astype(np.float64)
    auc_float, auc_quant = float(roc_auc_score(y, p_float)), float(roc_auc_score(y, p_quant))
    out: dict[str, Any] = {
        "auc_float": auc_float, "auc_quant": auc_quant, "auc_drop": auc_float - auc_quant,
        "max_abs_diff": float(np.max(np.abs(p_float - p_quant))), "rows": len(y),
    }
    passed = out["auc_drop"] <= AUC_DROP_GATE
    if group_size is not None:
        if group_size < 2 or len(y) % group_size:
            raise ValueError(f"group_size must be >= 2 and divide the {len(y)} rows, got {group_size}")
        top_float = p_float.reshape(-1, group_size).argmax(axis=1)
        top_quant = p_quant.reshape(-1, group_size).argmax(axis=1)
        out["top1_agreement"] = float(np.mean(top_float == top_quant))
        passed = passed and out["top1_agreement"] >= TOP1_GATE
    out["passed"] = bool(passed)
    return out
