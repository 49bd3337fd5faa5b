"""int8 quantization of the MLP candidate and the quantized-vs-float parity gate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.networks import sklearn_to_onnx
from export.quantize import (
    AUC_DROP_GATE,
    QuantizationError,
    QuantResult,
    quantization_parity,
    quantize_mlp,
    should_quantize,
)
from features.spec import CTA_STYLES, FeatureSpec
from models.candidates import make_classifier
from models.config import TrainConfig
from models.synthetic import synthetic_rows

SPEC = FeatureSpec.build(["cooking", "fitness", "music"], CTA_STYLES, ["workbook"], 60.0)
NAMES = SPEC.cta_names
CONFIG = TrainConfig()  # the real MLP shape: hidden (32, 16)


def _labels(x: np.ndarray, seed: int) -> np.ndarray:
    logit = ((x[:, 0] - 30) / 10 + 1.5 * (x[:, NAMES.index("variant_style")] % 3 == 1)
             - 0.3 * x[:, NAMES.index("sess_chats")] + 3 * x[:, NAMES.index("variant_discount")])
    return (np.random.default_rng(seed).random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x_train = synthetic_rows(SPEC, NAMES, 2000, seed=0)
    x_test = synthetic_rows(SPEC, NAMES, 2000, seed=1)
    return {"x_train": x_train, "y_train": _labels(x_train, 2), "x_test": x_test, "y_test": _labels(x_test, 3)}


def _model(family: str, data: dict[str, np.ndarray]) -> onnx.ModelProto:
    pipeline = make_classifier(family, SPEC, NAMES, CONFIG).fit(data["x_train"], data["y_train"])
    return sklearn_to_onnx(pipeline, NAMES, metadata={"carryon.kind": "cta", "carryon.family": family})


@pytest.fixture(scope="module")
def mlp(data: dict[str, np.ndarray]) -> onnx.ModelProto:
    return _model("mlp", data)


@pytest.fixture(scope="module")
def static(mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> QuantResult:
    return quantize_mlp(mlp, data["x_train"])


def test_only_networks_are_quantized(mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
    linear = _model("logreg", data)
    assert should_quantize(mlp)
    assert not should_quantize(linear)
    with pytest.raises(QuantizationError, match="linear models stay float"):
        quantize_mlp(linear, data["x_train"])


def test_static_int8_weights_are_smaller(static: QuantResult) -> None:
    assert static.method == "static"
    # the layers' weights and biases (with scales and zero points) shrink at least 3.5x
    assert static.layer_ratio >= 3.5, static.sizes()
    # all initializers, preprocessing constants (indices, codes, means) included, shrink less
    assert 2.5 <= static.weight_ratio < static.layer_ratio, static.sizes()
    int8 = [t for t in static.model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(int(np.prod(t.dims)) for t in int8) >= 32 * 16


def test_quantized_graph_is_standard_and_keeps_the_contract(static: QuantResult, mlp: onnx.ModelProto) -> None:
    model = static.model
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} == {""}
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["probability"]
    assert {p.key: p.value for p in model.metadata_props} == {p.key: p.value for p in mlp.metadata_props}
    assert b"carryon-quant-" not in model.SerializeToString()


def test_static_auc_drop_is_small(static: QuantResult, mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
    report = quantization_parity(mlp, static.model, data["x_test"], data["y_test"])
    assert report["auc_float"] > 0.75  # the task is learnable
    assert report["auc_drop"] <= AUC_DROP_GATE, report
    assert 0 < report["max_abs_diff"] < 0.1, report
    assert report["passed"]


def test_dynamic_when_no_calibration_rows(mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
    result = quantize_mlp(mlp, None)
    assert result.method == "dynamic"
    assert "MatMulInteger" in {n.op_type for n in result.model.graph.node}
    assert result.layer_ratio >= 3.5, result.sizes()
    report = quantization_parity(mlp, result.model, data["x_test"], data["y_test"])
    assert report["auc_drop"] <= AUC_DROP_GATE, report


@pytest.mark.parametrize(("rows", "match"), [
    (np.empty((0, len(NAMES)), np.float32), r"calibration must be float32 rows \[N >= 1, 21\].*\(0, 21\)"),
    (np.zeros((10, 3), np.float32), r"got shape \(10, 3\)"),
    (np.full((10, len(NAMES)), np.nan, np.float32), "NaN or inf"),
])
def test_bad_calibration_raises(mlp: onnx.ModelProto, rows: np.ndarray, match: str) -> None:
    with pytest.raises(QuantizationError, match=match):
        quantize_mlp(mlp, rows)


def test_identical_model_agrees_fully(mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
    report = quantization_parity(mlp, mlp, data["x_test"], data["y_test"], group_size=8)
    assert report["auc_drop"] == 0.0 and report["max_abs_diff"] == 0.0
    assert report["top1_agreement"] == 1.0 and report["passed"]


def test_broken_model_fails_the_gate(mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(mlp)
    scale = next(t for t in broken.graph.initializer if t.name == "scale_scale")
    wrong = onnx.numpy_helper.to_array(scale)[:, ::-1].copy()  # scales applied to the wrong columns
    scale.CopyFrom(onnx.numpy_helper.from_array(wrong, scale.name))
    report = quantization_parity(mlp, broken, data["x_test"], data["y_test"], group_size=8)
    assert report["auc_drop"] > AUC_DROP_GATE or report["top1_agreement"] < 0.99
    assert not report["passed"]


@pytest.mark.parametrize("group_size", [1, 7])
def test_group_size_must_divide_rows(mlp: onnx.ModelProto, data: dict[str, np.ndarray], group_size: int) -> None:
    with pytest.raises(ValueError, match="group_size must be >= 2 and divide the 2000 rows"):
        quantization_parity(mlp, mlp, data["x_test"], data["y_test"], group_size=group_size)


def test_single_class_labels_raise(mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="both classes"):
        quantization_parity(mlp, mlp, data["x_test"], np.zeros(2000, int))
