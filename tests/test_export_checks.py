"""The operator allowlist and the model-level export checks, on small models built with onnx.helper."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from export.allowlist import (
    DEFAULT_SOURCE,
    Allowlist,
    AllowlistFileError,
    OperatorNotAllowed,
    check_operators,
    load_allowlist,
)
from export.checks import ModelCheckError, absolute_paths_in, check_model, strip_paths

FEATURES = ["minute_in_drop", "variant_discount", "device"]


def _finish(nodes: list[onnx.NodeProto], output: str, inits: list[onnx.TensorProto], ml: bool,
            family: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, f"carryon_{family}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", len(FEATURES)])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N"])],
        inits,
    )
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("ai.onnx.ml", 5)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10, producer_name="carryon")
    helper.set_model_props(model, {
        "carryon.feature_names": json.dumps(FEATURES),
        "carryon.spec_hash": "0123abcd",
        "carryon.kind": "cta",
        "carryon.family": family,
        "carryon.min_onnxruntime": "1.21" if ml else "1.20",  # TreeEnsemble(5) needs 1.21
    })
    return model


def mlp_model() -> onnx.ModelProto:
    """features -> MatMul/Add/Relu -> MatMul/Add/Sigmoid -> probability [N]."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(4, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([0.1], np.float32), "b2"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"], name="dense1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["z0"], name="dense2"),
        helper.make_node("Add", ["z0", "b2"], ["z1"], name="bias2"),
        helper.make_node("Sigmoid", ["z1"], ["p"], name="sigmoid"),
        helper.make_node("Reshape", ["p", "flat"], ["probability"], name="to_1d"),
    ]
    return _finish(nodes, "probability", inits, ml=False, family="mlp")


# One tree: node 0 "minute_in_drop <= 0.5" -> leaf 0, else node 1 "device in {1, 3}" -> leaf 1, else leaf 2.
TREE_LEAVES = np.array([-1.0, 0.5, 2.0], np.float32)


def tree_leaf(x: np.ndarray) -> np.ndarray:
    """Which leaf of the test tree each row reaches (reference routing)."""
    return np.where(x[:, 0] <= 0.5, 0, np.where(np.isin(x[:, 2], [1.0, 3.0]), 1, 2))


def tree_model() -> onnx.ModelProto:
    """A valid 1-tree ai.onnx.ml TreeEnsemble (opset 5) with a BRANCH_LEQ and a BRANCH_MEMBER node."""
    tree = helper.make_node(
        "TreeEnsemble", ["features"], ["raw"], domain="ai.onnx.ml", name="trees",
        n_targets=1, aggregate_function=1, post_transform=0, tree_roots=[0],
        nodes_featureids=[0, 2],
        nodes_modes=numpy_helper.from_array(np.array([0, 6], np.uint8)),
        nodes_splits=numpy_helper.from_array(np.array([0.5, 0.0], np.float32)),
        nodes_truenodeids=[0, 1], nodes_trueleafs=[1, 1],
        nodes_falsenodeids=[1, 2], nodes_falseleafs=[0, 1],
        nodes_missing_value_tracks_true=[0, 0],
        membership_values=numpy_helper.from_array(np.array([1.0, 3.0], np.float32)),
        leaf_targetids=[0, 0, 0],
        leaf_weights=numpy_helper.from_array(TREE_LEAVES),
    )
    nodes = [tree, helper.make_node("Reshape", ["raw", "flat"], ["score"], name="to_1d")]
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    return _finish(nodes, "score", inits, ml=True, family="lightgbm")


def _swap_node(model: onnx.ModelProto, index: int, node: onnx.NodeProto) -> onnx.ModelProto:
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.node[index].CopyFrom(node)
    return bad


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# --- the test models themselves -------------------------------------------------------------------------------


def test_tree_model_routes_as_specified_in_onnxruntime() -> None:
    x = np.array([[0.2, 0, 1], [0.9, 0, 1], [0.9, 0, 3], [0.9, 0, 2], [0.9, 0, 0], [0.5, 0, 3]], np.float32)
    session = ort.InferenceSession(tree_model().SerializeToString(), providers=["CPUExecutionProvider"])
    (score,) = session.run(None, {"features": x})
    assert score.shape == (6,)
    np.testing.assert_array_equal(score, TREE_LEAVES[tree_leaf(x)])
    assert list(tree_leaf(x)) == [0, 1, 1, 2, 2, 0]


# --- allowlist -------------------------------------------------------------------------------------------------


def test_packaged_allowlist_covers_the_export_contract() -> None:
    allow = load_allowlist()
    assert allow.source == DEFAULT_SOURCE == "export/operators.json"
    assert allow.opsets == {"ai.onnx": 21, "ai.onnx.ml": 5}
    assert ("ai.onnx.ml", "TreeEnsemble", 5) in allow.operators
    for op in ("MatMul", "Add", "Sigmoid", "QuantizeLinear", "DequantizeLinear", "Gather", "Reshape"):
        assert ("ai.onnx", op, 21) in allow.operators
    for op in ("Scaler", "ArrayFeatureExtractor", "ZipMap", "TreeEnsembleClassifier", "LinearClassifier"):
        assert not allow.allows("ai.onnx.ml", op, 5)
    assert not allow.allows("", "Loop", 21)
    assert allow.allows("", "Add", 21)
    assert allow.allows("ai.onnx", "Add", 13)
    assert not allow.allows("ai.onnx", "Add", 22)


def test_allowlist_round_trips_through_its_dict() -> None:
    allow = load_allowlist()
    data = json.loads(json.dumps(allow.to_dict()))
    assert data["source"] == "export/operators.json"
    assert data["min_onnxruntime"] == "1.21"  # the first onnxruntime with a TreeEnsemble(5) kernel
    assert data["domains"]["ai.onnx.ml"] == {"opset": 5, "operators": ["TreeEnsemble"]}
    assert Allowlist.from_dict(data) == allow


@pytest.mark.parametrize("build", [mlp_model, tree_model])
def test_allowlist_accepts_the_export_shapes(build: object) -> None:
    model = build()  # type: ignore[operator]
    check_operators(model, load_allowlist())


@pytest.mark.parametrize(
    ("node", "named"),
    [
        (helper.make_node("Scaler", ["p"], ["probability"], domain="ai.onnx.ml", offset=[0.0], scale=[1.0]),
         "ai.onnx.ml:Scaler at opset 5"),
        (helper.make_node("Softmax", ["p"], ["probability"]), "ai.onnx:Softmax at opset 21"),
    ],
)
def test_allowlist_refuses_and_names_an_op_outside_it(node: onnx.NodeProto, named: str) -> None:
    model = _swap_node(mlp_model(), 6, node)
    if node.domain:
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 5))
    with pytest.raises(OperatorNotAllowed) as info:
        check_operators(model, load_allowlist(), name="cta_mlp.onnx")
    message = str(info.value)
    assert named in message
    assert "cta_mlp.onnx" in message
    assert "export/operators.json" in message
    assert "Reshape" not in message  # only offenders are named


def test_allowlist_names_every_offender_including_ops_inside_subgraphs() -> None:
    model = mlp_model()
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Neg", ["h2"], ["h2n"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h2n", TensorProto.FLOAT, None)],
    )
    model.graph.node.append(helper.make_node("Loop", ["", "cond"], ["loop_out"], body=body))
    with pytest.raises(OperatorNotAllowed) as info:
        check_operators(model, load_allowlist())
    assert "ai.onnx:Loop at opset 21" in str(info.value)
    assert "ai.onnx:Neg at opset 21" in str(info.value)
    assert "Identity" not in str(info.value)


def test_allowlist_refuses_opset_imports_beyond_it() -> None:
    model = mlp_model()
    model.opset_import[0].version = 22
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(OperatorNotAllowed) as info:
        check_operators(model, load_allowlist())
    message = str(info.value)
    assert "opset import ai.onnx 22 (allowlist stops at 21)" in message
    assert "opset import com.microsoft 1" in message
    assert "ai.onnx:MatMul at opset 22" in message


def test_allowlist_refuses_a_domain_that_is_used_but_not_imported() -> None:
    model = tree_model()
    del model.opset_import[1]
    with pytest.raises(OperatorNotAllowed, match=r"ai\.onnx\.ml:TreeEnsemble \(domain not imported\)"):
        check_operators(model, load_allowlist())


def test_allowlist_refuses_external_data() -> None:
    model = mlp_model()
    w1 = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(w1, location="weights.bin")
    w1.ClearField("raw_data")
    w1.ClearField("float_data")
    with pytest.raises(OperatorNotAllowed, match=r"tensor 'w1' stored as external data"):
        check_operators(model, load_allowlist())


def test_allowlist_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    good = load_allowlist().to_dict()
    path = tmp_path / "ops.json"
    path.write_text(json.dumps(good))
    assert load_allowlist(path).operators == load_allowlist().operators
    assert load_allowlist(path).source == "ops.json"
    cases = [
        ({**good, "schema": 2}, "'schema'"),
        ({**good, "min_onnxruntime": "one"}, "'min_onnxruntime'"),
        ({**good, "domains": {"ai.onnx": {"opset": 0, "operators": ["Add"]}}}, "'domains.ai.onnx.opset'"),
        ({**good, "domains": {"ai.onnx": {"opset": 21, "operators": []}}}, "'domains.ai.onnx.operators'"),
        ({**good, "domains": {"": {"opset": 21, "operators": ["Add"]},
                              "ai.onnx": {"opset": 21, "operators": ["Mul"]}}}, "repeats a domain"),
    ]
    for data, field in cases:
        path.write_text(json.dumps(data))
        with pytest.raises(AllowlistFileError) as info:
            load_allowlist(path)
        assert field in str(info.value)
        assert str(info.value).startswith("ops.json:")
    path.write_text("{not json")
    with pytest.raises(AllowlistFileError, match=r"ops\.json: not valid JSON"):
        load_allowlist(path)
    with pytest.raises(AllowlistFileError, match=r"missing\.json: cannot read"):
        load_allowlist(tmp_path / "missing.json")


# --- model checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [mlp_model, tree_model])
def test_check_model_passes_good_models(build: object) -> None:
    check_model(build())  # type: ignore[operator]


@pytest.mark.parametrize("key", ["carryon.feature_names", "carryon.spec_hash", "carryon.kind", "carryon.family",
                                 "carryon.min_onnxruntime"])
def test_check_model_catches_missing_metadata(key: str) -> None:
    model = mlp_model()
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    with pytest.raises(ModelCheckError, match=f"metadata '{key}' missing"):
        check_model(model, name="cta_mlp.onnx")


def test_check_model_catches_bad_metadata_values() -> None:
    model = mlp_model()
    helper.set_model_props(model, {"carryon.feature_names": '{"a": 1}', "carryon.spec_hash": "x",
                                   "carryon.kind": "cta", "carryon.family": "mlp", "carryon.min_onnxruntime": "1.17"})
    with pytest.raises(ModelCheckError) as info:
        check_model(model)
    assert "'carryon.feature_names' is not a JSON list" in str(info.value)
    assert "'carryon.min_onnxruntime' is 1.17, below 1.20" in str(info.value)


def test_a_tree_model_must_declare_the_runtime_that_has_tree_ensemble_5() -> None:
    """onnxruntime 1.20 loads standard-operator models but has no TreeEnsemble(5) kernel: trees need 1.21."""
    from export.checks import min_runtime

    stump = helper.make_node("TreeEnsemble", ["features"], ["tree_sum"], domain="ai.onnx.ml", n_targets=1,
                             aggregate_function=1, post_transform=0, tree_roots=[0],
                             nodes_modes=numpy_helper.from_array(np.zeros(1, np.uint8)), nodes_featureids=[0],
                             nodes_splits=numpy_helper.from_array(np.zeros(1, np.float32)),
                             nodes_truenodeids=[0], nodes_trueleafs=[1], nodes_falsenodeids=[1],
                             nodes_falseleafs=[1], leaf_targetids=[0, 0],
                             leaf_weights=numpy_helper.from_array(np.array([-1.0, 1.0], np.float32)))
    flat = helper.make_node("Reshape", ["tree_sum", "flat"], ["score"])
    graph = helper.make_graph([stump, flat], "stump",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
                              [numpy_helper.from_array(np.array([-1], np.int64), "flat")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)],
                              ir_version=10)
    meta = {"carryon.feature_names": '["a", "b"]', "carryon.spec_hash": "x", "carryon.kind": "bonus-ranker",
            "carryon.family": "lambdarank", "carryon.min_onnxruntime": "1.20"}
    helper.set_model_props(model, meta)
    assert min_runtime(model) == "1.21" and min_runtime(mlp_model()) == "1.20"
    with pytest.raises(ModelCheckError, match=r"'carryon.min_onnxruntime' is 1.20, below 1.21"):
        check_model(model)
    helper.set_model_props(model, {**meta, "carryon.min_onnxruntime": "1.21"})
    check_model(model)


def test_check_model_catches_a_wrong_output_name() -> None:
    model = mlp_model()
    model.graph.output[0].name = "output_probability"
    model.graph.node[-1].output[0] = "output_probability"
    with pytest.raises(ModelCheckError, match=r"outputs are \['output_probability'\], expected one named"):
        check_model(model)


def test_check_model_catches_extra_outputs_and_bad_input() -> None:
    model = mlp_model()
    model.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 1]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(ModelCheckError) as info:
        check_model(model)
    message = str(info.value)
    assert "outputs are ['probability', 'p']" in message
    assert "fixed batch size 1" in message
    assert "has 5 columns, metadata 'carryon.feature_names' lists 3" in message


def test_check_model_catches_opset_problems() -> None:
    model = mlp_model()
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 5))
    model.ir_version = 11
    with pytest.raises(ModelCheckError) as info:
        check_model(model)
    assert "ai.onnx.ml is imported but no node uses it" in str(info.value)
    assert "ir_version 11 > 10" in str(info.value)
    model = tree_model()
    model.opset_import[0].version = 20
    with pytest.raises(ModelCheckError, match=r"ai\.onnx opset is 20, expected 21"):
        check_model(model)


def test_check_model_reports_the_onnx_checker() -> None:
    model = mlp_model()
    model.graph.node[0].input[1] = "no_such_weight"
    with pytest.raises(ModelCheckError, match=r"onnx\.checker full check failed"):
        check_model(model)


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("doc", "converted from /home/builder/carryon/models/cta.pkl"),
        ("node", "C:\\Users\\builder\\cta.pkl"),
        ("meta", "file:///srv/models/cta.onnx"),
        ("initializer", "/tmp/build/w1"),
    ],
)
def test_check_model_catches_absolute_paths(where: str, text: str) -> None:
    model = mlp_model()
    if where == "doc":
        model.graph.node[2].doc_string = text
    elif where == "node":
        model.graph.node[0].name = text
    elif where == "meta":
        helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "origin": text})
    else:
        model.graph.initializer[1].doc_string = text
    with pytest.raises(ModelCheckError, match="absolute path") as info:
        check_model(model)
    assert text.split("/")[-1].split("\\")[-1] in str(info.value)


def test_strip_paths_clears_only_doc_strings_holding_paths() -> None:
    model = mlp_model()
    model.doc_string = "skl2onnx converted /home/builder/venv/lib/site-packages/sklearn/pipeline.py"
    model.graph.doc_string = "a small network"
    model.graph.node[0].doc_string = "see /opt/build/carryon/cta.py line 3"
    with pytest.raises(ModelCheckError):
        check_model(model)
    assert strip_paths(model) == 2
    assert model.doc_string == "" and model.graph.node[0].doc_string == ""
    assert model.graph.doc_string == "a small network"
    check_model(model)
    assert strip_paths(model) == 0


def test_strip_paths_reaches_nested_doc_strings() -> None:
    model = tree_model()
    model.graph.input[0].doc_string = "/data/run/features.parquet columns"
    model.graph.initializer[0].doc_string = "C:\\tmp\\flat"
    assert strip_paths(model) == 2
    check_model(model)


@pytest.mark.parametrize(
    "text",
    ["/usr/lib", "x /home/a/b", "'/tmp/x/y.onnx'", "C:\\x", "c:/Users/x", "file:///a", "\\\\server\\share\\m"],
)
def test_absolute_path_detector_finds(text: str) -> None:
    assert absolute_paths_in(text)


@pytest.mark.parametrize(
    "text",
    ["/tmp", "a/b/c", "models/cta.onnx", "https://onnx.ai/onnx/ops", "1/2/3", "x / y / z", "ai.onnx.ml",
     "carryon.feature_names", '["minute_in_drop", "device"]', "/MatMulAddFusion", "ratio: 3/4"],
)
def test_absolute_path_detector_ignores(text: str) -> None:
    assert absolute_paths_in(text) == []


@given(st.lists(st.text(alphabet="abcdefghij_.-0123456789", min_size=1, max_size=8), min_size=2, max_size=5),
       st.sampled_from(["", "see ", "path=", "'", "("]))
def test_absolute_path_detector_finds_any_posix_path(parts: list[str], prefix: str) -> None:
    path = "/" + "/".join(parts)
    assert absolute_paths_in(prefix + path + " tail") == [path]
    assert absolute_paths_in("/".join(parts)) == []


@pytest.mark.parametrize("module", ["export/allowlist.py", "export/checks.py"])
def test_edge_modules_import_only_the_base_dependencies(module: str) -> None:
    tree = ast.parse((Path(__file__).resolve().parents[1] / module).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would pull in the package's other modules"
            names.add((node.module or "").split(".")[0])
    assert names - set(sys.stdlib_module_names) - {"__future__"} <= {"numpy", "onnx", "onnxruntime"}
