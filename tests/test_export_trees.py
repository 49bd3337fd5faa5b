"""LightGBM -> ai.onnx.ml opset-5 TreeEnsemble: parity with LightGBM, routing, thresholds, reference."""

from __future__ import annotations

import json
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from export._tree_dump import Ensemble, Leaf, Node, Split, float32_at_or_below, read_ensemble, splits
from export._tree_graph import categorical_form, tree_graph
from export._tree_report import onnx_leaves, probe_rows
from export.trees import TreeExportError, legacy_onnx, lightgbm_to_onnx, threshold_report

F = 6
CATS = [4, 5]  # feature 4: 6 codes, feature 5: 15 codes
NAMES = [f"f{i}" for i in range(F)]
META = {"carryon.spec_hash": "abc123", "carryon.family": "lightgbm"}
LGB = {"n_estimators": 25, "num_leaves": 8, "min_child_samples": 5, "verbose": -1, "deterministic": True,
       "force_row_wise": True, "n_jobs": 1, "random_state": 7, "min_data_per_group": 5, "cat_smooth": 1.0}


def _data(n: int, seed: int, nan_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    x[:, 3] = np.round(x[:, 3], 1)  # many ties: thresholds between close values
    x[:, 4] = rng.integers(0, 6, n)
    x[:, 5] = rng.integers(0, 15, n)
    x[rng.random(n) < nan_frac, 0] = np.nan
    logit = (np.nan_to_num(x[:, 0], nan=1.0) - 0.3 * x[:, 1] + np.isin(x[:, 4], [0, 3]) - np.isin(x[:, 5], [2, 7, 9])
             + 0.5 * x[:, 3] + rng.normal(scale=0.5, size=n))
    return x, logit


def _fit(kind: str, seed: int = 0, n: int = 600, **extra: Any) -> tuple[Any, np.ndarray]:
    x, logit = _data(n, seed)
    params = {**LGB, **extra}
    if kind == "classifier":
        return lgb.LGBMClassifier(objective="binary", **params).fit(x, (logit > 0).astype(int),
                                                                     categorical_feature=CATS), x
    if kind == "ranker":
        rel = np.clip(np.digitize(logit, [-0.5, 0.5, 1.5]), 0, 3)
        return lgb.LGBMRanker(objective="lambdarank", **params).fit(x, rel, group=[20] * (n // 20),
                                                                    categorical_feature=CATS), x
    return lgb.LGBMRegressor(**params).fit(x, logit, categorical_feature=CATS), x


def _native(model: Any, kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "classifier":
        return np.asarray(model.predict_proba(x)[:, 1])
    return np.asarray(model.predict(x))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"features": np.asarray(x, dtype=np.float32)})[0])


def _awkward_rows(x: np.ndarray) -> np.ndarray:
    """Held-out rows plus NaN everywhere, negative/non-integer/unseen category codes and exact zeros."""
    rows = x.copy()
    rows[:40, 1] = np.nan
    rows[40:80, 4] = np.nan
    rows[80:100, 5] = -1.0
    rows[100:120, 4] = 3.7  # LightGBM truncates toward zero: routes like 3
    rows[120:140, 5] = -0.5  # truncates to 0
    rows[140:160, 5] = 99.0  # unseen code
    rows[160:180, 2] = 0.0
    rows[180:190, :] = np.nan
    return rows


def _booster(model: Any) -> Any:
    return getattr(model, "booster_", model)


def _leaf_truth(model: Any, rows: np.ndarray) -> np.ndarray:
    return np.asarray(_booster(model).predict(rows, pred_leaf=True)).reshape(len(rows), -1)


def _ens(model: Any) -> Ensemble:
    return read_ensemble(_booster(model).dump_model())


@pytest.fixture(scope="module", params=["classifier", "ranker", "regressor"])
def fitted(request: pytest.FixtureRequest) -> tuple[str, Any, np.ndarray]:
    model, x = _fit(request.param)
    return request.param, model, x


# --- parity with LightGBM ----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["indicator", "member"])
def test_outputs_match_lightgbm(fitted: tuple[str, Any, np.ndarray], form: str) -> None:
    kind, model, _ = fitted
    proto = lightgbm_to_onnx(model, NAMES, kind=kind, metadata=META, categorical=form)  # type: ignore[arg-type]
    rows = _awkward_rows(_data(400, seed=99)[0])
    got = _run(proto, rows)
    assert got.shape == (len(rows),)
    assert [o.name for o in proto.graph.output] == ["probability" if kind == "classifier" else "score"]
    np.testing.assert_allclose(got, _native(model, kind, rows), rtol=0, atol=1e-5)


def test_routing_has_zero_flips_on_data_and_boundaries(fitted: tuple[str, Any, np.ndarray]) -> None:
    _, model, x = fitted
    ens = _ens(model)
    rows = np.concatenate([_awkward_rows(_data(400, seed=98)[0]), probe_rows(ens, x)])
    assert len(rows) > 400 + 100
    np.testing.assert_array_equal(onnx_leaves(ens, rows, nudge=True), _leaf_truth(model, rows))


def test_model_is_valid_and_carries_metadata(fitted: tuple[str, Any, np.ndarray]) -> None:
    kind, model, _ = fitted
    proto = lightgbm_to_onnx(model, NAMES, kind=kind, metadata=META)  # type: ignore[arg-type]
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["carryon.feature_names"]) == NAMES
    assert meta["carryon.spec_hash"] == "abc123"
    assert meta["carryon.kind"] == kind
    assert meta["carryon.min_onnxruntime"] == "1.21"  # 1.20 has no TreeEnsemble(5) kernel
    assert {(o.domain, o.version) for o in proto.opset_import} == {("", 21), ("ai.onnx.ml", 5)}
    assert proto.ir_version == 10
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("TreeEnsemble") == 1
    assert "TreeEnsembleClassifier" not in ops and "TreeEnsembleRegressor" not in ops
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("N", F)
    assert b"/work" not in proto.SerializeToString() and b"/tmp" not in proto.SerializeToString()


def _tree_attrs(proto: onnx.ModelProto) -> dict[str, Any]:
    node = next(n for n in proto.graph.node if n.op_type == "TreeEnsemble")
    return {a.name: a for a in node.attribute}


def test_member_form_splits_categoricals_with_set_membership() -> None:
    model, _ = _fit("classifier")
    proto = lightgbm_to_onnx(model, NAMES, kind="classifier", metadata=META, categorical="member")
    attrs = _tree_attrs(proto)
    modes = onnx.numpy_helper.to_array(attrs["nodes_modes"].t)
    n_cat = sum(s.categorical for t in _ens(model).trees for s in splits(t))
    assert n_cat > 0
    assert int(np.count_nonzero(modes == 6)) == n_cat
    assert set(np.unique(modes)) <= {0, 6}
    members = onnx.numpy_helper.to_array(attrs["membership_values"].t)
    assert int(np.isnan(members).sum()) == n_cat
    assert {p.key: p.value for p in proto.metadata_props}["carryon.categorical_splits"] == "member"


def test_indicator_form_is_all_leq_with_one_column_per_distinct_set() -> None:
    model, x = _fit("classifier")
    ens = _ens(model)
    proto = lightgbm_to_onnx(model, NAMES, kind="classifier", metadata=META)
    attrs = _tree_attrs(proto)
    modes = onnx.numpy_helper.to_array(attrs["nodes_modes"].t)
    features = np.asarray(attrs["nodes_featureids"].ints)
    cat_splits = [s for t in ens.trees for s in splits(t) if s.categorical]
    distinct = {(s.feature, tuple(sorted(s.categories))) for s in cat_splits}
    assert set(np.unique(modes)) == {0} and "membership_values" not in attrs
    assert int(np.count_nonzero(features >= F)) == len(cat_splits)  # every categorical split reads an indicator
    assert set(features[features >= F]) == set(range(F, F + len(distinct)))
    assert {"Gather", "LessOrEqual", "Cast", "MatMul", "Concat"} <= {n.op_type for n in proto.graph.node}
    assert "Floor" not in {n.op_type for n in proto.graph.node}  # the trees never read a raw category code
    assert {p.key: p.value for p in proto.metadata_props}["carryon.categorical_splits"] == "indicator"
    member = lightgbm_to_onnx(model, NAMES, kind="classifier", metadata=META, categorical="member")
    rows = np.concatenate([_awkward_rows(x), probe_rows(ens, x)])
    np.testing.assert_array_equal(_run(proto, rows), _run(member, rows))  # same leaves, same sums


def test_indicator_boundaries_truncate_toward_zero_like_lightgbm() -> None:
    """Category c is (-1, 1) for 0 and [c, c+1) above; -1 and below, NaN, infinities and unseen codes are in no set."""
    sets = [(0,), (1,), (0, 2), (3,)]
    trees = tuple(Split(0, True, 0.0, cats, False, "None", Leaf(0, 10.0 ** i), Leaf(1, 0.0))
                  for i, cats in enumerate(sets))
    ens = Ensemble(trees, 1, "regression", 1.0, False)
    below = float(np.nextafter(np.float32(1), np.float32(0)))
    values = [-1.5, -1.0, float(np.nextafter(np.float32(-1), np.float32(0))), -0.5, -0.0, 0.0, 0.5, below, 1.0,
              1.5, float(np.nextafter(np.float32(2), np.float32(0))), 2.0, 2.99, 3.0, 3.5, 4.0, 99.0, 1e30,
              float("nan"), float("inf"), float("-inf")]
    x = np.array(values, dtype=np.float32).reshape(-1, 1)
    want = np.array([sum(leaf for cats, leaf in zip(sets, (1.0, 10.0, 100.0, 1000.0), strict=True)
                         if np.isfinite(v) and int(v) >= 0 and int(v) in cats) for v in x[:, 0]], dtype=np.float32)
    for form in ("indicator", "member"):
        proto = tree_graph(ens, logistic=False, output="score", categorical=form)  # type: ignore[arg-type]
        np.testing.assert_array_equal(_run(proto, x), want, err_msg=form)
    indicator = tree_graph(ens, logistic=False, output="score")
    np.testing.assert_array_equal(np.asarray(ReferenceEvaluator(indicator).run(None, {"features": x})[0]), want)


def test_too_many_category_codes_fall_back_to_the_member_form() -> None:
    split = Split(0, True, 0.0, (5000,), False, "None", Leaf(0, 1.0), Leaf(1, 0.0))
    proto = tree_graph(Ensemble((split,), 1, "regression", 1.0, False), logistic=False, output="score")
    assert categorical_form(proto) == "member"
    x = np.array([[5000.0], [4999.0], [5000.5]], dtype=np.float32)
    np.testing.assert_array_equal(_run(proto, x), np.array([1.0, 0.0, 1.0], dtype=np.float32))


def test_an_unknown_categorical_form_is_refused() -> None:
    split = Split(0, True, 0.0, (1,), False, "None", Leaf(0, 1.0), Leaf(1, 0.0))
    with pytest.raises(TreeExportError, match="categorical: 'bitset' is not 'indicator' or 'member'"):
        tree_graph(Ensemble((split,), 1, "regression", 1.0, False), logistic=False, output="score",
                   categorical="bitset")  # type: ignore[arg-type]


# --- missing values --------------------------------------------------------------------------


@pytest.mark.parametrize(("missing", "extra"), [
    ("NaN", {}),
    ("None", {}),  # trained without NaN: LightGBM reads NaN as 0.0
    ("Zero", {"zero_as_missing": True}),
])
def test_missing_values_route_like_lightgbm(missing: str, extra: dict[str, Any]) -> None:
    x, logit = _data(600, seed=3, nan_frac=0.1 if missing == "NaN" else 0.0)
    if missing == "Zero":
        x[np.random.default_rng(1).random(len(x)) < 0.2, 1] = 0.0
    model = lgb.LGBMRegressor(**LGB, **extra).fit(x, logit, categorical_feature=CATS)
    ens = _ens(model)
    types = {s.missing_type for t in ens.trees for s in splits(t) if not s.categorical}
    assert missing in types  # the case is really exercised
    rows = _data(300, seed=4, nan_frac=0.0)[0]
    rng = np.random.default_rng(5)
    for col in range(4):
        pick = rng.random(len(rows))
        rows[pick < 0.2, col] = np.nan
        rows[(pick >= 0.2) & (pick < 0.3), col] = 0.0
        rows[(pick >= 0.3) & (pick < 0.35), col] = -0.0
        rows[(pick >= 0.35) & (pick < 0.4), col] = 1e-36  # inside LightGBM's zero band
    np.testing.assert_array_equal(onnx_leaves(ens, rows, nudge=True), _leaf_truth(model, rows))
    proto = lightgbm_to_onnx(model, NAMES, kind="regressor", metadata=META)
    np.testing.assert_allclose(_run(proto, rows), model.predict(rows), rtol=0, atol=1e-5)


# --- degenerate models -----------------------------------------------------------------------


def test_single_leaf_trees() -> None:
    x, logit = _data(30, seed=6)
    model = lgb.LGBMRegressor(**{**LGB, "min_child_samples": 100, "n_estimators": 3}).fit(x, logit)
    ens = _ens(model)
    assert all(isinstance(t, Leaf) for t in ens.trees)
    proto = lightgbm_to_onnx(model, NAMES, kind="regressor", metadata=META)
    onnx.checker.check_model(proto, full_check=True)
    rows = _awkward_rows(_data(200, seed=7)[0])
    np.testing.assert_allclose(_run(proto, rows), model.predict(rows), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(onnx_leaves(ens, rows, nudge=True), _leaf_truth(model, rows))


def test_mixed_single_leaf_and_split_trees_against_reference() -> None:
    leaf = Leaf(0, 0.25)
    split = Split(0, False, 0.5, (), True, "NaN", Leaf(0, -1.0), Leaf(1, 2.0))
    ens = Ensemble((leaf, split, leaf), 1, "regression", 1.0, False)
    x = np.array([[0.0], [0.5], [0.75], [np.nan]], dtype=np.float32)
    want = np.array([-0.5, -0.5, 2.5, -0.5], dtype=np.float32)
    proto = tree_graph(ens, logistic=False, output="score")
    np.testing.assert_allclose(_run(proto, x), want, atol=1e-7)
    np.testing.assert_allclose(ReferenceEvaluator(proto).run(None, {"features": x})[0], want, atol=1e-7)


@pytest.mark.parametrize("kind", ["classifier", "ranker", "regressor"])
def test_one_tree_models(kind: str) -> None:
    model, _ = _fit(kind, n_estimators=1)
    assert len(_ens(model).trees) == 1
    proto = lightgbm_to_onnx(model, NAMES, kind=kind, metadata=META)  # type: ignore[arg-type]
    rows = _awkward_rows(_data(300, seed=8)[0])
    np.testing.assert_allclose(_run(proto, rows), _native(model, kind, rows), rtol=0, atol=1e-6)


def test_average_output_random_forest() -> None:
    x, logit = _data(600, seed=9)
    model = lgb.LGBMRegressor(**{**LGB, "boosting_type": "rf", "bagging_freq": 1, "bagging_fraction": 0.7}).fit(
        x, logit, categorical_feature=CATS)
    assert _ens(model).average_output
    proto = lightgbm_to_onnx(model, NAMES, kind="regressor", metadata=META)
    rows = _awkward_rows(_data(300, seed=10)[0])
    np.testing.assert_allclose(_run(proto, rows), model.predict(rows), rtol=0, atol=1e-5)


# --- threshold precision ---------------------------------------------------------------------


def _one_split(t64: float) -> Ensemble:
    return Ensemble((Split(0, False, t64, (), False, "None", Leaf(0, 0.0), Leaf(1, 1.0)),), 1, "regression", 1.0,
                    False)


def test_naive_rounding_flips_a_constructed_threshold_and_the_nudge_fixes_it() -> None:
    one = np.float32(1.0)
    above = np.nextafter(one, np.float32(2.0))
    t64 = float(one) + 0.75 * (float(above) - float(one))  # rounds to nearest = `above`, which is > t64
    assert float(np.float32(t64)) > t64
    assert float32_at_or_below(t64) == one
    ens = _one_split(t64)
    x = np.array([[one], [above], [np.nextafter(above, np.float32(2.0))]], dtype=np.float32)
    truth = (x[:, 0].astype(np.float64) > t64).astype(np.int64)  # leaf 1 = right = x > t
    naive = onnx_leaves(ens, x, nudge=False)[:, 0]
    nudged = onnx_leaves(ens, x, nudge=True)[:, 0]
    assert naive[1] != truth[1]  # the flip the nudge exists for
    np.testing.assert_array_equal(nudged, truth)


@given(st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_subnormal=False))
@settings(max_examples=300, deadline=None)
def test_nudged_threshold_agrees_with_float64_comparison(t64: float) -> None:
    t32 = float32_at_or_below(t64)
    assert float(t32) <= t64
    above = np.nextafter(t32, np.float32(np.inf))
    assert float(above) > t64  # t32 is the largest float32 <= t64


def test_threshold_report_counts_naive_flips_and_none_after_nudge() -> None:
    model, x = _fit("classifier", n_estimators=40)
    report = threshold_report(model, x)
    assert report["numeric_splits"] > 0
    assert report["thresholds_rounded_up"] > 0
    # every threshold that rounds up flips at its rounded value; zero-band thresholds add more
    assert report["boundary"]["decision_flips_naive"] >= report["thresholds_rounded_up"]
    assert report["boundary"]["leaf_flips_naive"] > 0
    assert report["boundary"]["decision_flips_nudged"] == 0
    assert report["boundary"]["leaf_flips_nudged"] == 0
    assert report["data"]["decision_flips_nudged"] == 0
    assert report["data"]["leaf_flips_nudged"] == 0
    json.dumps(report)


# --- against onnx.reference and an independent LightGBM-semantics oracle --------------------------


def _oracle(node: Node, row: np.ndarray) -> float:
    """LightGBM's NumericalDecision / CategoricalDecision, in float64."""
    while isinstance(node, Split):
        v = float(row[node.feature])
        v = 0.0 if abs(v) <= float(np.float32(1e-35)) else v  # LightGBM reads the zero band as 0.0
        if node.categorical:
            go_left = not np.isnan(v) and int(v) >= 0 and int(v) in node.categories
        else:
            if np.isnan(v) and node.missing_type != "NaN":
                v = 0.0
            zero = node.missing_type == "Zero" and abs(v) <= 1e-35
            go_left = node.default_left if zero or np.isnan(v) else v <= node.threshold
        node = node.left if go_left else node.right
    return node.value


@st.composite
def _trees(draw: st.DrawFn, n_features: int, allow_zero_category: bool) -> Node:
    counter = [0]

    def build(depth: int) -> Node:
        if depth == 0 or (draw(st.booleans()) and depth < 3):
            counter[0] += 1
            return Leaf(counter[0] - 1, draw(st.floats(-2, 2, allow_nan=False, width=32)))
        feature = draw(st.integers(0, n_features - 1))
        if feature == n_features - 1:  # the last feature is categorical
            low = 0 if allow_zero_category else 1
            cats = tuple(sorted(draw(st.sets(st.integers(low, 9), min_size=1, max_size=4))))
            return Split(feature, True, 0.0, cats, False, "None", build(depth - 1), build(depth - 1))
        t = draw(st.floats(-3, 3, allow_nan=False))
        missing = draw(st.sampled_from(["None", "NaN"]))
        return Split(feature, False, t, (), draw(st.booleans()), missing, build(depth - 1), build(depth - 1))

    return build(draw(st.integers(0, 4)))


@st.composite
def _ensembles(draw: st.DrawFn, allow_zero_category: bool = False) -> Ensemble:
    trees = tuple(draw(st.lists(_trees(3, allow_zero_category), min_size=1, max_size=5)))
    return Ensemble(trees, 3, "regression", 1.0, draw(st.booleans()))


def _probe_inputs(ens: Ensemble, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(scale=2, size=(64, 3)).astype(np.float32)
    rows[:, 2] = rng.integers(-1, 11, 64)
    rows[rng.random((64, 3)) < 0.15] = np.nan
    return np.concatenate([rows, probe_rows(ens, rows)])


@given(_ensembles(), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_member_form_matches_reference_and_oracle(ens: Ensemble, seed: int) -> None:
    _check_against_reference_and_oracle(tree_graph(ens, logistic=False, output="score", categorical="member"),
                                        ens, seed)


@given(_ensembles(allow_zero_category=True), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_indicator_form_matches_reference_and_oracle_even_with_category_0(ens: Ensemble, seed: int) -> None:
    _check_against_reference_and_oracle(tree_graph(ens, logistic=False, output="score"), ens, seed)


def _check_against_reference_and_oracle(proto: onnx.ModelProto, ens: Ensemble, seed: int) -> None:
    x = _probe_inputs(ens, seed)
    want = np.array([sum(_oracle(t, r) for t in ens.trees) / (len(ens.trees) if ens.average_output else 1)
                     for r in x])
    got_ort = _run(proto, x)
    got_ref = np.asarray(ReferenceEvaluator(proto).run(None, {"features": x})[0])
    np.testing.assert_allclose(got_ort, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got_ref, want, rtol=0, atol=1e-5)


@given(st.integers(0, 10_000), st.sampled_from(["classifier", "ranker", "regressor"]))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_lightgbm_models_match_lightgbm(seed: int, kind: str) -> None:
    model, x = _fit(kind, seed=seed, n=200, n_estimators=5, num_leaves=int(seed % 6) + 2, min_child_samples=3)
    proto = lightgbm_to_onnx(model, NAMES, kind=kind, metadata=META)  # type: ignore[arg-type]
    rows = np.concatenate([_awkward_rows(x), probe_rows(_ens(model), x)])
    np.testing.assert_allclose(_run(proto, rows), _native(model, kind, rows), rtol=0, atol=1e-5)


def test_reference_misroutes_membership_sets_containing_zero_but_onnxruntime_does_not() -> None:
    """onnx 1.23's reference TreeEnsemble reads a set with a walrus loop that stops at the falsy 0.0:

    ``{0, 2}`` ends early at 0, and 2 is taken as the next set's first member. That is why the property
    test above keeps 0 out of its membership sets; onnxruntime reads the sets right and is the authority.
    """
    first = Split(0, True, 0.0, (0, 2), False, "None", Leaf(0, 1.0), Leaf(1, 0.0))
    second = Split(0, True, 0.0, (5,), False, "None", Leaf(0, 10.0), Leaf(1, 0.0))
    ens = Ensemble((first, second), 1, "regression", 1.0, False)
    x = np.array([[0.0], [2.0], [5.0], [1.0]], dtype=np.float32)
    want = np.array([1.0, 1.0, 10.0, 0.0], dtype=np.float32)
    proto = tree_graph(ens, logistic=False, output="score", categorical="member")
    np.testing.assert_array_equal(_run(proto, x), want)
    np.testing.assert_array_equal(np.array([sum(_oracle(t, r) for t in ens.trees) for r in x]), want)
    got = np.asarray(ReferenceEvaluator(proto).run(None, {"features": x})[0])
    # the reference reads the first set as {} and the second as {2}: 0 and 2 miss tree 0, 2 hits tree 1
    np.testing.assert_array_equal(got, np.array([0.0, 10.0, 0.0, 0.0], dtype=np.float32))
    assert not np.array_equal(got, want)
    indicator = tree_graph(ens, logistic=False, output="score")  # no membership sets: the reference agrees
    np.testing.assert_array_equal(np.asarray(ReferenceEvaluator(indicator).run(None, {"features": x})[0]), want)


def test_runtimes_ignore_post_transform_logistic_so_a_sigmoid_node_follows() -> None:
    """onnxruntime 1.32 and onnx.reference return raw sums from TreeEnsemble with post_transform=LOGISTIC.

    The classifier therefore ends in a standard Sigmoid node; this test tells us if that ever changes.
    """
    ens = Ensemble((Split(0, False, 0.5, (), True, "NaN", Leaf(0, -1.0), Leaf(1, 2.0)),), 1, "binary", 1.0, False)
    proto = tree_graph(ens, logistic=False, output="score")
    tree = next(n for n in proto.graph.node if n.op_type == "TreeEnsemble")
    next(a for a in tree.attribute if a.name == "post_transform").i = 2
    x = np.array([[0.0], [1.0]], dtype=np.float32)
    np.testing.assert_array_equal(_run(proto, x), [-1.0, 2.0])
    logistic = tree_graph(ens, logistic=True, output="probability")
    np.testing.assert_allclose(_run(logistic, x), 1 / (1 + np.exp([1.0, -2.0])), atol=1e-7)


def test_huge_thresholds_stay_finite_and_route_like_lightgbm() -> None:
    ens = _one_split(1e300)  # LightGBM's "any number" threshold
    x = np.array([[np.finfo(np.float32).max], [np.inf], [0.0]], dtype=np.float32)
    np.testing.assert_array_equal(onnx_leaves(ens, x, nudge=True)[:, 0], [0, 1, 0])


# --- failure paths ---------------------------------------------------------------------------


def test_rejects_wrong_feature_count_kind_and_objective() -> None:
    model, _ = _fit("regressor", n_estimators=2)
    with pytest.raises(TreeExportError, match="feature_names"):
        lightgbm_to_onnx(model, NAMES[:-1], kind="regressor", metadata=META)
    with pytest.raises(TreeExportError, match="kind"):
        lightgbm_to_onnx(model, NAMES, kind="tree", metadata=META)  # type: ignore[arg-type]
    with pytest.raises(TreeExportError, match="binary objective"):
        lightgbm_to_onnx(model, NAMES, kind="classifier", metadata=META)


def test_rejects_unfitted_and_multiclass_models() -> None:
    with pytest.raises(TreeExportError, match="not a fitted LightGBM"):
        lightgbm_to_onnx(object(), NAMES, kind="regressor", metadata=META)
    x, logit = _data(300, seed=11)
    multi = lgb.LGBMClassifier(**{**LGB, "n_estimators": 2}).fit(x, np.digitize(logit, [-0.5, 0.5]))
    with pytest.raises(TreeExportError, match="multiclass"):
        lightgbm_to_onnx(multi, NAMES, kind="classifier", metadata=META)


def test_rejects_unknown_decision_type() -> None:
    dump = {"max_feature_idx": 0, "tree_info": [{"tree_index": 0, "tree_structure": {
        "split_feature": 0, "threshold": 1.0, "decision_type": "<", "default_left": True, "missing_type": "None",
        "left_child": {"leaf_index": 0, "leaf_value": 1.0}, "right_child": {"leaf_index": 1, "leaf_value": 2.0}}}]}
    with pytest.raises(TreeExportError, match="decision_type"):
        read_ensemble(dump)


def test_legacy_form_is_the_older_operator() -> None:
    model, _ = _fit("classifier", n_estimators=3)
    legacy = legacy_onnx(model, F)
    ops = {n.op_type for n in legacy.graph.node}
    assert "TreeEnsembleClassifier" in ops
    assert "ZipMap" not in ops
    assert all(o.version <= 3 for o in legacy.opset_import if o.domain == "ai.onnx.ml")


def test_a_large_set_matrix_is_stored_in_int8_and_still_routes_exactly() -> None:
    """Hundreds of distinct sets: the +-1 matrix goes to the file as int8 with a Cast, the routing is unchanged."""
    rng = np.random.default_rng(3)
    trees = tuple(Split(0, True, 0.0, tuple(sorted(rng.choice(60, size=int(rng.integers(1, 6)), replace=False))),
                        False, "None", Leaf(0, float(i + 1)), Leaf(1, 0.0)) for i in range(400))
    ens = Ensemble(trees, 1, "regression", 1.0, False)
    proto = tree_graph(ens, logistic=False, output="score")
    names = {i.name for i in proto.graph.initializer}
    assert "category_sets_int8" in names and "category_sets" not in names and categorical_form(proto) == "indicator"
    member = tree_graph(ens, logistic=False, output="score", categorical="member")
    assert len(proto.SerializeToString()) < 2 * len(member.SerializeToString())
    x = np.concatenate([np.arange(-2, 63, 0.5, dtype=np.float32), [np.nan]]).reshape(-1, 1)
    np.testing.assert_array_equal(_run(proto, x), _run(member, x))
