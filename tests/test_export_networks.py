"""Standard-operator ONNX export of the scikit-learn candidates: parity with predict_proba, graph contract."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from export._graph import run
from export.networks import UnsupportedModelError, float_parity, sklearn_to_onnx
from features.spec import CTA_STYLES, FeatureSpec
from models.candidates import make_classifier
from models.config import MLPConfig, TrainConfig
from models.synthetic import synthetic_rows

SPEC = FeatureSpec.build(["cooking", "fitness", "music"], CTA_STYLES, ["workbook"], 60.0)
NAMES = SPEC.cta_names
META = {"carryon.kind": "cta", "carryon.spec_hash": SPEC.hash}
CONFIG = TrainConfig(mlp=MLPConfig(hidden=(16, 8), max_iter=60))


def _labels(x: np.ndarray, seed: int) -> np.ndarray:
    logit = ((x[:, 0] - 30) / 10 + 1.5 * (x[:, NAMES.index("variant_style")] % 3 == 1)
             - 0.3 * x[:, NAMES.index("sess_chats")] + 3 * x[:, NAMES.index("variant_discount")])
    return (np.random.default_rng(seed).random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)


@pytest.fixture(scope="module", params=["logreg", "mlp"])
def fitted(request: pytest.FixtureRequest) -> tuple[str, Pipeline]:
    x = synthetic_rows(SPEC, NAMES, 1500, seed=0)
    pipeline = make_classifier(request.param, SPEC, NAMES, CONFIG)
    pipeline.fit(x, _labels(x, 1))
    return request.param, pipeline


def _hard_rows(n: int) -> np.ndarray:
    """Plausible rows plus unknown / negative / fractional category codes, NaN-free extremes."""
    x = synthetic_rows(SPEC, NAMES, n, seed=3)
    rng = np.random.default_rng(4)
    for name in ("device", "channel", "creator_niche", "variant_style"):
        j = NAMES.index(name)
        x[: n // 4, j] = rng.choice([-1.0, 0.5, 17.0, 1e6], size=n // 4)
    x[n // 4: n // 3, 0] = 1e6
    x[n // 3: n // 2, 1] = -1e7
    x[-10:, :] = np.float32(1e30)
    return x


def test_probabilities_match_predict_proba(fitted: tuple[str, Pipeline]) -> None:
    _, pipeline = fitted
    model = sklearn_to_onnx(pipeline, NAMES, metadata=META)
    x = _hard_rows(400)
    report = float_parity(pipeline, model, x)
    assert report["passed"], report
    assert report["max_abs_diff"] <= 1e-5
    # the inputs do exercise unknown codes: some rows one-hot to fewer than 4 ones
    onehot = pipeline.named_steps["pre"].named_transformers_["onehot"]
    cat_cols = [NAMES.index(n) for n in ("device", "channel", "creator_niche", "variant_style")]
    assert (onehot.transform(x[:, cat_cols]).sum(axis=1) < 4).sum() > 50


def test_graph_uses_only_standard_operators(fitted: tuple[str, Pipeline]) -> None:
    family, pipeline = fitted
    model = sklearn_to_onnx(pipeline, NAMES, metadata=META)
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} == {""}
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 21)]
    assert model.ir_version == 10
    ops = {node.op_type for node in model.graph.node}
    assert ops.isdisjoint({"Scaler", "ArrayFeatureExtractor", "ZipMap", "LinearClassifier", "OneHotEncoder"})
    assert ("Relu" in ops) == (family == "mlp")
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["probability"]
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["N"]


def test_metadata_present(fitted: tuple[str, Pipeline]) -> None:
    model = sklearn_to_onnx(fitted[1], NAMES, metadata=META)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["carryon.feature_names"]) == list(NAMES)
    assert props["carryon.spec_hash"] == SPEC.hash
    assert props["carryon.min_onnxruntime"] == "1.20"
    assert b"/tmp" not in model.SerializeToString() and b"/work" not in model.SerializeToString()


@pytest.mark.parametrize("n", [1, 1000])
def test_dynamic_batch(fitted: tuple[str, Pipeline], n: int) -> None:
    _, pipeline = fitted
    model = sklearn_to_onnx(pipeline, NAMES, metadata=META)
    x = synthetic_rows(SPEC, NAMES, n, seed=n)
    out = run(model, x)
    assert out.shape == (n,) and out.dtype == np.float32
    np.testing.assert_allclose(out, pipeline.predict_proba(x)[:, 1], atol=1e-5, rtol=0)


def test_mlp_activation_other_than_relu() -> None:
    x = synthetic_rows(SPEC, NAMES, 600, seed=0)
    pipeline = make_classifier("mlp", SPEC, NAMES, CONFIG)
    pipeline.set_params(clf__activation="tanh").fit(x, _labels(x, 2))
    model = sklearn_to_onnx(pipeline, NAMES, metadata=META)
    assert "Tanh" in {n.op_type for n in model.graph.node}
    assert float_parity(pipeline, model, _hard_rows(200))["passed"]


def test_wrong_scale_fails_parity(fitted: tuple[str, Pipeline]) -> None:
    _, pipeline = fitted
    model = sklearn_to_onnx(pipeline, NAMES, metadata=META)
    scale = next(t for t in model.graph.initializer if t.name == "scale_scale")
    broken = onnx.numpy_helper.to_array(scale) * np.float32(1.01)
    scale.CopyFrom(onnx.numpy_helper.from_array(broken, scale.name))
    report = float_parity(pipeline, model, synthetic_rows(SPEC, NAMES, 300, seed=5))
    assert not report["passed"]
    assert report["max_abs_diff"] > 1e-5


def _fit(pipeline: Pipeline) -> Pipeline:
    x = synthetic_rows(SPEC, NAMES, 300, seed=0)
    return pipeline.fit(x, _labels(x, 3))


@pytest.mark.parametrize(("edit", "match"), [
    (lambda p: p.set_params(pre__onehot__drop="first"), "step 'pre', transformer 'onehot': drop="),
    (lambda p: p.set_params(pre__onehot__handle_unknown="error"), "handle_unknown='error'"),
    (lambda p: Pipeline([("pre", p.named_steps["pre"]), ("clf", DecisionTreeClassifier(max_depth=2))]),
     "step 'clf' is DecisionTreeClassifier"),
    (lambda p: Pipeline([("onehot", OneHotEncoder(handle_unknown="ignore")), ("clf", LogisticRegression())]),
     "step 'onehot' is OneHotEncoder"),
])
def test_unsupported_pipelines_name_the_step(edit: object, match: str) -> None:
    pipeline = _fit(edit(make_classifier("logreg", SPEC, NAMES, CONFIG)))  # type: ignore[operator]
    with pytest.raises(UnsupportedModelError, match=match):
        sklearn_to_onnx(pipeline, NAMES, metadata=META)


def test_multiclass_is_unsupported() -> None:
    x = synthetic_rows(SPEC, NAMES, 300, seed=0)
    pipeline = make_classifier("logreg", SPEC, NAMES, CONFIG).fit(x, np.arange(300) % 3)
    with pytest.raises(UnsupportedModelError, match="3 classes"):
        sklearn_to_onnx(pipeline, NAMES, metadata=META)


def test_feature_names_must_match_width(fitted: tuple[str, Pipeline]) -> None:
    with pytest.raises(ValueError, match="fitted on 21 columns"):
        sklearn_to_onnx(fitted[1], NAMES[:-1], metadata=META)
