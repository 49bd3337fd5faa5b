"""int8 quantization of the MLP candidate and the quantized-vs-float parity gate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from export.allowlist import check_operators, load_allowlist
from export.networks import sklearn_to_onnx
from export.quantize import (
    AUC_DROP_GATE,
    QuantizationError,
    QuantResult,
    calibration_sample,
    int8_symmetric,
    quantization_parity,
    quantize_gated,
    quantize_mlp,
    quantize_weights,
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


_MATRICES = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
                       elements=st.floats(-1e3, 1e3, width=32) | st.just(0.0))


@settings(max_examples=200, deadline=None)
@given(_MATRICES, st.sampled_from([None, 0, 1, -1]))
def test_int8_symmetric_reconstructs_within_half_a_step(w: np.ndarray, axis: int | None) -> None:
    q, scale = int8_symmetric(w, axis)
    assert q.dtype == np.int8 and q.shape == w.shape and scale.dtype == np.float32
    assert q.min(initial=0) >= -127 and q.max(initial=0) <= 127  # symmetric: -128 never used
    if axis is None:
        assert scale.shape == ()
        step = np.broadcast_to(scale, w.shape)
    else:
        assert scale.shape == (w.shape[axis],)
        step = np.expand_dims(scale, 1 - axis % 2)
    assert (scale > 0).all()
    error = np.abs(q.astype(np.float64) * step - w.astype(np.float64))
    assert (error <= step * (0.5 + 1e-5)).all()
    # the largest magnitude of each slice lands on +-127 (the whole int8 range is used), unless the slice is
    # so small that its step would be subnormal: then the step is the smallest normal float32
    reduce = None if axis is None else 1 - axis % 2
    top = np.abs(q).max(axis=reduce)
    full = np.abs(w).max(axis=reduce) / 127 >= np.finfo(np.float32).tiny
    assert (top[full] == 127).all()
    assert (scale >= np.finfo(np.float32).tiny).all()


def test_int8_symmetric_zero_slices_and_bad_values() -> None:
    q, scale = int8_symmetric(np.array([[0.0, 1.0], [0.0, -2.54]], np.float32), axis=1)
    np.testing.assert_array_equal(q, [[0, 50], [0, -127]])
    np.testing.assert_allclose(scale, [1.0, 0.02], rtol=1e-6)
    with pytest.raises(QuantizationError, match="NaN or inf"):
        int8_symmetric(np.array([1.0, np.inf], np.float32))


def test_calibration_sample_spans_the_training_rows() -> None:
    rows = np.arange(1000, dtype=np.float32).reshape(-1, 1)
    sample = calibration_sample(rows, 10)
    assert sample[0, 0] == 0 and sample[-1, 0] == 999 and len(sample) == 10
    assert np.all(np.diff(sample[:, 0]) >= 110)  # evenly spread, not the first ten
    assert calibration_sample(rows[:5], 10) is not None and len(calibration_sample(rows[:5], 10)) == 5
    with pytest.raises(QuantizationError, match="sample size must be >= 1"):
        calibration_sample(rows, 0)


@pytest.fixture(scope="module")
def weights(mlp: onnx.ModelProto) -> QuantResult:
    return quantize_weights(mlp)


def test_weights_recipe_stores_every_layer_parameter_as_int8(weights: QuantResult, mlp: onnx.ModelProto) -> None:
    model = weights.model
    assert weights.method == "weights"
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" not in ops  # activations stay float
    float_inits = {t.name: onnx.numpy_helper.to_array(t) for t in mlp.graph.initializer}
    layer_names = {n.input[1] for n in mlp.graph.node if n.op_type in ("MatMul", "Add")}
    assert {name.rsplit("_", 1)[1] for name in layer_names} == {"weight", "bias"}
    dequantized = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert set(dequantized) == layer_names  # three weights and three biases, nothing else
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    int8_values = scales = 0
    for name, node in dequantized.items():
        q, scale = inits[node.input[0]], inits[node.input[1]]
        assert q.dtype == np.int8 and q.shape == float_inits[name].shape
        axis = {a.name: a.i for a in node.attribute}.get("axis")
        if name.endswith("_weight"):  # per output column
            assert axis == 1 and scale.shape == (q.shape[1],)
        else:  # a bias: one scale
            assert axis is None and scale.shape == ()
        np.testing.assert_allclose(q * scale, float_inits[name], atol=float(np.max(scale)) / 2 * (1 + 1e-5))
        int8_values += q.size
        scales += scale.size
    assert weights.quant_layer_bytes == int8_values + 4 * scales  # int8 values and float32 scales, no zero points
    assert weights.float_layer_bytes == 4 * int8_values
    assert weights.layer_ratio >= 3.5, weights.sizes()
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} == {""}
    check_operators(model, load_allowlist(), "weights-int8 mlp")
    assert {p.key: p.value for p in model.metadata_props} == {p.key: p.value for p in mlp.metadata_props}


def test_weights_recipe_follows_the_float_model_closely(weights: QuantResult, mlp: onnx.ModelProto,
                                                        static: QuantResult, data: dict[str, np.ndarray]) -> None:
    near = quantization_parity(mlp, weights.model, data["x_test"], data["y_test"], group_size=8)
    assert near["auc_drop"] <= AUC_DROP_GATE and near["top1_agreement"] >= 0.99, near
    calibrated = quantization_parity(mlp, static.model, data["x_test"], data["y_test"])
    assert 0 < near["max_abs_diff"] < calibrated["max_abs_diff"]  # no activation rounding, no clipping


def test_weights_recipe_refuses_linear_models_and_name_clashes(mlp: onnx.ModelProto,
                                                               data: dict[str, np.ndarray]) -> None:
    with pytest.raises(QuantizationError, match="linear models stay float"):
        quantize_weights(_model("logreg", data))
    clash = onnx.ModelProto()
    clash.CopyFrom(mlp)
    weight = next(n.input[1] for n in clash.graph.node if n.op_type == "MatMul")
    clash.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(1, np.float32), f"{weight}_scale"))
    with pytest.raises(QuantizationError, match=f"{weight}_int8.*{weight}_scale.*rename"):
        quantize_weights(clash)


def _is_static(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_gated_keeps_the_first_recipe_that_passes(mlp: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
    seen: list[str] = []

    def judge(passing: str):  # type: ignore[no-untyped-def]
        def check(model: onnx.ModelProto) -> dict[str, object]:
            method = "static" if _is_static(model) else "weights"
            seen.append(method)
            return {"max_abs_diff": 0.0, "passed": method in passing}
        return check

    result, figures, attempts = quantize_gated(mlp, data["x_train"], judge("static weights"))
    assert result.method == "static" and figures["passed"] and seen == ["static"]
    assert attempts == [{"method": "static", "max_abs_diff": 0.0, "passed": True}]

    seen.clear()
    result, figures, attempts = quantize_gated(mlp, data["x_train"], judge("weights"))
    assert result.method == "weights" and figures["passed"] and seen == ["static", "weights"]
    assert [(a["method"], a["passed"]) for a in attempts] == [("static", False), ("weights", True)]

    seen.clear()
    result, figures, attempts = quantize_gated(mlp, None, judge("nothing"))
    assert [a["method"] for a in attempts] == ["dynamic", "weights"]
    assert result.method == "weights" and not figures["passed"]  # the candidate's gate then fails
