"""What float16/bfloat16 would do to LightGBM trees: decision flips, leaf-value change, the report's shape."""

from __future__ import annotations

import json
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export._tree_dump import read_ensemble
from export._tree_precision import (
    PRECISIONS,
    at_or_below,
    nearest64,
    numeric_splits,
    read_as_lightgbm,
    route_leaves,
)
from export.trees import TreeExportError, precision_report

LGB: dict[str, Any] = {"n_estimators": 20, "num_leaves": 8, "min_child_samples": 5, "verbose": -1,
                       "deterministic": True, "force_row_wise": True, "n_jobs": 1, "random_state": 3,
                       "min_data_per_group": 5, "cat_smooth": 1.0}
F16, BF16 = PRECISIONS
PER_PRECISION = {"threshold_decision_flips_data", "threshold_decision_flips_boundary", "leaf_max_abs_output_change",
                 "decisions_unchanged", "bytes_saved_estimate", "threshold_decision_flips_boundary_representable",
                 "leaf_flips_data", "numeric_thresholds", "thresholds_keeping_every_decision"}


def _mixed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous, rounded, count and categorical columns, with NaN and exact zeros."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[:, 1] = np.round(x[:, 1], 1)
    x[:, 2] = rng.poisson(2.0, n)
    x[:, 3] = rng.integers(0, 8, n)
    x[rng.random(n) < 0.1, 0] = np.nan
    logit = np.nan_to_num(x[:, 0]) + 0.5 * x[:, 1] - 0.3 * x[:, 2] + np.isin(x[:, 3], [1, 4]) + x[:, 4]
    return x, logit + rng.normal(scale=0.3, size=n)


@pytest.fixture(scope="module")
def classifier() -> tuple[Any, np.ndarray]:
    x, logit = _mixed(600, 0)
    return lgb.LGBMClassifier(objective="binary", **LGB).fit(x, (logit > 0).astype(int), categorical_feature=[3]), x


@pytest.fixture(scope="module")
def integer_model() -> tuple[Any, np.ndarray]:
    """Every feature a small integer (counts, flags, codes read as numbers): thresholds k + 0.5."""
    rng = np.random.default_rng(1)
    x = np.stack([rng.poisson(3.0, 800), rng.integers(0, 2, 800), rng.integers(0, 40, 800)], axis=1)
    x = x.astype(np.float32)
    y = (x[:, 0] - 2 * x[:, 1] + 0.1 * x[:, 2] + rng.normal(size=800) > 3).astype(int)
    return lgb.LGBMClassifier(objective="binary", **LGB).fit(x, y), x


def _fine(centre: float, seed: int = 2) -> tuple[Any, np.ndarray]:
    """One feature around ``centre`` with splits finer than a float16 step there."""
    rng = np.random.default_rng(seed)
    x = (centre + rng.normal(scale=2.0, size=(800, 2))).astype(np.float32)
    y = np.sin(3.0 * (x[:, 0] - centre)) + 0.1 * rng.normal(size=800)
    return lgb.LGBMRegressor(**LGB).fit(x, y), x


# --- the report --------------------------------------------------------------------------------


def test_report_is_well_formed_and_json_ready(classifier: tuple[Any, np.ndarray]) -> None:
    model, x = classifier
    report = precision_report(model, x)
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {"float16", "bfloat16", "float32", "rows", "verdict"}
    n_numeric = len(numeric_splits(read_ensemble(model.booster_.dump_model())))
    for name in ("float16", "bfloat16"):
        r = report[name]
        assert set(r) >= PER_PRECISION
        assert r["numeric_thresholds"] == n_numeric > 0
        assert 0 <= r["thresholds_exact_for_float32_inputs"] <= r["thresholds_keeping_every_decision"] <= n_numeric
        assert 0 <= r["threshold_decision_flips_boundary"] <= r["boundary_probe_values"]
        assert r["bytes_saved_estimate"] * 2 == report["float32"]["tensor_bytes"]
        assert r["decisions_unchanged"] == (r["threshold_decision_flips_data"] == 0 and r["leaf_flips_data"] == 0
                                            and r["threshold_decision_flips_boundary_representable"] == 0)
        assert r["top1_changes"] is None
    assert report["float16"]["onnx_tree_ensemble_type"] and not report["bfloat16"]["onnx_tree_ensemble_type"]
    assert report["rows"] == len(x)
    assert "float16" in report["verdict"] and "/" not in report["verdict"]


def test_small_integer_thresholds_keep_every_decision_at_float16(integer_model: tuple[Any, np.ndarray]) -> None:
    model, x = integer_model
    rows = np.concatenate([x, np.random.default_rng(4).integers(0, 60, size=(200, 3)).astype(np.float32)])
    report = precision_report(model, rows)
    for name in ("float16", "bfloat16"):  # integers below 256 are exact in both
        r = report[name]
        assert r["threshold_decision_flips_data"] == 0
        assert r["leaf_flips_data"] == 0
        assert r["threshold_decision_flips_boundary_representable"] == 0
        assert r["thresholds_keeping_every_decision"] == r["numeric_thresholds"]
        assert r["decisions_unchanged"] is True
    # float32 inputs one float32 ulp past k + 0.5 round back onto it: those cannot be told apart at float16
    assert report["float16"]["threshold_decision_flips_boundary"] > 0
    assert "keep every tree decision" in report["verdict"]


@pytest.mark.parametrize(("centre", "flips_at"), [(1e5, ("float16", "bfloat16")), (1000.0, ("float16", "bfloat16")),
                                                  (0.0, ("bfloat16",))])
def test_fine_thresholds_flip_at_low_precision(centre: float, flips_at: tuple[str, ...]) -> None:
    model, x = _fine(centre)
    report = precision_report(model, x)
    for name in flips_at:
        r = report[name]
        assert r["threshold_decision_flips_data"] > 0
        assert r["leaf_flips_data"] > 0
        assert r["decisions_unchanged"] is False
        assert 0 in r["features_with_data_flips"]
        assert r["thresholds_keeping_every_decision"] < r["numeric_thresholds"]
        assert r["max_abs_output_change_thresholds_and_leaves"] > r["leaf_max_abs_output_change"]
    if "float16" in flips_at:
        assert "stay float32" in report["verdict"]


def test_float16_overflow_sends_large_inputs_the_wrong_way() -> None:
    model, x = _fine(1e5)
    r = precision_report(model, x)["float16"]
    # 1e5 is beyond float16's largest value: every input rounds to inf, every threshold to 65504
    assert r["threshold_decision_flips_data"] >= 0.3 * r["numeric_thresholds"] * len(x) / 2


def test_nudged_thresholds_route_every_representable_input_exactly(classifier: tuple[Any, np.ndarray]) -> None:
    model, x = classifier
    report = precision_report(model, x)
    assert report["float16"]["threshold_decision_flips_boundary_representable"] == 0
    assert report["bfloat16"]["threshold_decision_flips_boundary_representable"] == 0
    assert report["float16"]["representable_probe_values"] > report["float16"]["numeric_thresholds"]


def test_leaf_rounding_changes_the_output_a_little(classifier: tuple[Any, np.ndarray]) -> None:
    model, x = classifier
    report = precision_report(model, x)
    f32, f16, bf16 = (report[k]["leaf_max_abs_output_change"] for k in ("float32", "float16", "bfloat16"))
    assert 0 < f32 < f16 < bf16
    assert f16 < 1e-3
    assert bf16 < 1e-2


def test_ranker_groups_report_top1_and_order() -> None:
    x, logit = _mixed(400, 5)
    rel = np.clip(np.digitize(logit, [-0.5, 0.5, 1.5]), 0, 3)
    model = lgb.LGBMRanker(objective="lambdarank", **LGB).fit(x, rel, group=[10] * 40, categorical_feature=[3])
    r = precision_report(model, x, groups=[10] * 40)
    for name in ("float16", "bfloat16"):
        assert 0 <= r[name]["top1_changes"] <= r[name]["rank_order_changes"] <= 40
    assert r["float16"]["leaf_max_abs_output_change"] > 0


# --- failure paths -----------------------------------------------------------------------------


def test_rejects_rows_of_the_wrong_width(classifier: tuple[Any, np.ndarray]) -> None:
    model, x = classifier
    with pytest.raises(TreeExportError, match="x: shape"):
        precision_report(model, x[:, :3])
    with pytest.raises(TreeExportError, match="x: shape"):
        precision_report(model, x[:0])


def test_rejects_groups_that_do_not_cover_the_rows(classifier: tuple[Any, np.ndarray]) -> None:
    model, x = classifier
    with pytest.raises(TreeExportError, match="groups"):
        precision_report(model, x, groups=[10] * 3)


def test_rejects_a_model_that_is_not_lightgbm() -> None:
    with pytest.raises(TreeExportError, match="not a fitted LightGBM"):
        precision_report(object(), np.zeros((2, 2), dtype=np.float32))


# --- the pieces --------------------------------------------------------------------------------


def test_numpy_routing_matches_lightgbm_pred_leaf(classifier: tuple[Any, np.ndarray]) -> None:
    model, _ = classifier
    ens = read_ensemble(model.booster_.dump_model())
    rows = _mixed(300, 9)[0]
    rows[:30, 4] = np.nan
    rows[30:60, 3] = np.nan
    rows[60:80, 3] = -1.0
    rows[80:100, 3] = 2.7
    rows[100:120, 3] = -0.5
    rows[120:140, 0] = 1e-36
    rows[140:160, 1] = 0.0
    got = route_leaves(ens, read_as_lightgbm(rows), {id(s): s.threshold for s in numeric_splits(ens)})
    np.testing.assert_array_equal(got, model.booster_.predict(rows, pred_leaf=True))


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-6e4, max_value=6e4, allow_nan=False))
def test_float16_nudge_is_the_largest_float16_at_or_below(t: float) -> None:
    got = at_or_below(F16, np.array([t]))[0]
    assert float(got) <= t
    above = np.nextafter(np.float16(got), np.float16(np.inf))
    assert float(above) > t
    assert np.float16(got) == got  # a float16 value


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-3e38, max_value=3e38, allow_nan=False, allow_subnormal=False))
def test_bfloat16_nudge_and_rounding_stay_on_the_bfloat16_grid(t: float) -> None:
    down = at_or_below(BF16, np.array([t]))[0]
    bits = int(np.array([down], dtype=np.float32).view(np.uint32)[0])
    assert bits & 0xFFFF == 0
    assert float(down) <= t
    up = BF16.directed(np.nextafter(np.array([down], dtype=np.float32), np.float32(np.inf)), True)[0]
    assert float(up) > t
    near = nearest64(BF16, np.array([t]))[0]
    assert near in (float(down), float(up))
    assert abs(near - t) <= min(abs(float(down) - t), abs(float(up) - t))


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-7e4, max_value=7e4, allow_nan=False))
def test_float16_rounding_of_float64_matches_numpy(t: float) -> None:
    with np.errstate(over="ignore"):
        want = float(np.float16(t))
    assert nearest64(F16, np.array([t]))[0] == want
