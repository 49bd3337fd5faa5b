"""Boosting rounds chosen on held-out training drops: LightGBM's early-stopping rule, the validation
curve, the refit on every training row, and the fallbacks when no validation is possible."""

from __future__ import annotations

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lightgbm.callback import CallbackEnv, EarlyStopException, early_stopping
from sklearn.metrics import log_loss

from features.spec import Feature, FeatureSpec
from models.config import LightGBMConfig
from models.metrics import Slates, per_slate_ndcg
from models.rounds import best_round, fit_with_rounds, validation_curve

SPEC = FeatureSpec((Feature("a", "float32", 0.0), Feature("b", "float32", 0.0),
                    Feature("c", "category", 0.0, ("unknown", "x", "y"))), (), (), 120.0)
NAMES = ("a", "b", "c")
PARAMS = {"learning_rate": 0.2, "num_leaves": 15, "min_child_samples": 5, "deterministic": True,
          "force_row_wise": True, "n_jobs": 1, "verbose": -1, "random_state": 3}
try:  # lightgbm >= 4.7 passes named results to callbacks; earlier versions plain tuples
    from lightgbm.basic import EvalResult as _result
except ImportError:  # pragma: no cover - lightgbm < 4.7
    def _result(*fields: object) -> tuple[object, ...]:  # type: ignore[misc]
        return fields

CONFIG = LightGBMConfig(n_estimators=120, early_stopping_rounds=10, validation_fraction=0.2)


def _lightgbm_best(curve: list[float], higher_is_better: bool, patience: int) -> int:
    """LightGBM's own early_stopping callback driven with ``curve`` as one validation metric."""
    callback = early_stopping(patience, verbose=False)
    for i, value in enumerate(curve):
        env = CallbackEnv(model=None, params={}, iteration=i, begin_iteration=0, end_iteration=len(curve),
                          evaluation_result_list=[_result("valid_0", "metric", value, higher_is_better)])
        try:
            callback(env)
        except EarlyStopException as stop:
            return stop.best_iteration + 1
    raise AssertionError("the callback did not stop by the last round")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=60), st.booleans(), st.integers(1, 8))
def test_best_round_follows_lightgbm_early_stopping(values: list[int], higher: bool, patience: int) -> None:
    curve = [float(v) for v in values]  # small integers: ties, plateaus and late improvements are common
    assert best_round(np.asarray(curve), higher_is_better=higher, patience=patience) == \
        _lightgbm_best(curve, higher, patience)


def test_best_round_examples_and_refusals() -> None:
    loss = np.array([0.9, 0.7, 0.6, 0.6, 0.61, 0.5, 0.8])
    assert best_round(loss, higher_is_better=False, patience=2) == 3  # the tie at round 4 is no improvement
    assert best_round(loss, higher_is_better=False, patience=3) == 6  # a late improvement inside patience
    assert best_round(np.array([0.3, 0.2]), higher_is_better=True, patience=5) == 1
    with pytest.raises(ValueError, match="non-empty"):
        best_round(np.array([]), higher_is_better=False, patience=3)
    with pytest.raises(ValueError, match="patience"):
        best_round(loss, higher_is_better=False, patience=0)


def _binary(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 3, n)]).astype(np.float32)
    logit = 0.8 * x[:, 0] - 0.5 * (x[:, 2] == 1)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)  # weak signal, much noise: overfits
    return x, y


def _slates(n_slates: int = 400, size: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = n_slates * size
    x = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 3, n)]).astype(np.float32)
    relevance = (rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] - 1.5)))).astype(np.int64)
    return x, relevance, np.repeat(np.arange(n_slates), size)


def _classifier(n_estimators: int = CONFIG.n_estimators) -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(objective="binary", n_estimators=n_estimators, **PARAMS)


def test_validation_curve_is_the_metric_after_each_round() -> None:
    x, y = _binary()
    model = _classifier(30).fit(x[:2000], y[:2000], categorical_feature=[2])
    curve = validation_curve(model.booster_, x[2000:], y[2000:], None)
    assert curve.shape == (30,)
    for k in (1, 7, 30):
        prob = model.predict_proba(x[2000:], num_iteration=k)[:, 1]
        assert curve[k - 1] == pytest.approx(log_loss(y[2000:], prob), rel=1e-9)

    xr, rel, groups = _slates()
    ranker = lgb.LGBMRanker(objective="lambdarank", n_estimators=20, **PARAMS)
    ranker.fit(xr[:1800], rel[:1800], group=Slates.from_group_ids(groups[:1800]).sizes)
    slates = Slates.from_group_ids(groups[1800:])
    curve = validation_curve(ranker.booster_, xr[1800:], rel[1800:], slates)
    for k in (1, 20):
        ndcg = np.nanmean(per_slate_ndcg(rel[1800:], ranker.predict(xr[1800:], num_iteration=k), slates, 5))
        assert curve[k - 1] == pytest.approx(ndcg, rel=1e-9)


def test_classifier_rounds_are_chosen_then_refit_on_every_row() -> None:
    x, y = _binary()
    validation = np.arange(y.size) >= 2400  # the latest rows, as the time split gives
    model, info = fit_with_rounds(_classifier(), x, y, SPEC, NAMES, CONFIG, validation=validation)
    assert info["rounds_rule"] == "early_stopping"
    assert 1 <= info["rounds"] < CONFIG.n_estimators  # noisy labels: the validation loss turns up early
    assert info["validation_rows"] == 600
    assert model.booster_.num_trees() == info["rounds"]

    probe = _classifier().fit(x[~validation], y[~validation], categorical_feature=[2])
    curve = validation_curve(probe.booster_, x[validation], y[validation], None)
    assert info["rounds"] == _lightgbm_best(list(curve[: info["rounds"] + CONFIG.early_stopping_rounds]), False,
                                            CONFIG.early_stopping_rounds)
    assert info["validation_logloss"] == pytest.approx(curve[info["rounds"] - 1], abs=1e-6)
    # The final model is the chosen rounds fit on all rows, not the probe cut short.
    direct = _classifier(info["rounds"]).fit(x, y, categorical_feature=[2])
    np.testing.assert_array_equal(model.predict_proba(x), direct.predict_proba(x))
    assert not np.array_equal(model.predict_proba(x), probe.predict_proba(x, num_iteration=info["rounds"]))


def test_ranker_rounds_are_chosen_on_whole_slates() -> None:
    x, rel, groups = _slates()
    validation = groups >= 320
    ranker = lgb.LGBMRanker(objective="lambdarank", n_estimators=CONFIG.n_estimators, **PARAMS)
    model, info = fit_with_rounds(ranker, x, rel, SPEC, NAMES, CONFIG, validation=validation, group_ids=groups)
    assert info["rounds_rule"] == "early_stopping"
    assert model.booster_.num_trees() == info["rounds"] <= CONFIG.n_estimators
    assert 0.0 < info["validation_ndcg_at_5"] <= 1.0
    direct = lgb.LGBMRanker(objective="lambdarank", n_estimators=info["rounds"], **PARAMS)
    direct.fit(x, rel, group=Slates.from_group_ids(groups).sizes, categorical_feature=[2])
    np.testing.assert_array_equal(model.predict(x), direct.predict(x))


@pytest.mark.parametrize(("case", "reason"), [
    ("off", "early_stopping_rounds is 0"),
    ("no_validation", "no validation part of the training rows"),
    ("all_validation", "no earlier part of the training rows"),
    ("one_class", "a single label class in the validation part"),
])
def test_without_a_usable_validation_split_the_cap_is_fit_and_said(case: str, reason: str) -> None:
    x, y = _binary(800)
    validation = np.arange(y.size) >= 600
    config = CONFIG
    if case == "off":
        config = replace(CONFIG, early_stopping_rounds=0)
    elif case == "no_validation":
        validation = np.zeros(y.size, dtype=bool)
    elif case == "all_validation":
        validation = np.ones(y.size, dtype=bool)
    else:
        y = y.copy()
        y[validation] = 0
    model, info = fit_with_rounds(_classifier(40), x, y, SPEC, NAMES, replace(config, n_estimators=40),
                                  validation=validation)
    assert info["rounds"] == 40 and info["rounds_rule"].startswith(f"n_estimators: {reason}")
    assert set(info) == {"rounds", "rounds_rule"}
    assert model.booster_.num_trees() == 40


def test_a_ranker_without_relevant_validation_items_fits_the_cap() -> None:
    x, rel, groups = _slates(100)
    validation = groups >= 80
    rel = np.where(validation, 0, rel)
    ranker = lgb.LGBMRanker(objective="lambdarank", n_estimators=15, **PARAMS)
    _, info = fit_with_rounds(ranker, x, rel, SPEC, NAMES, replace(CONFIG, n_estimators=15),
                              validation=validation, group_ids=groups)
    assert info == {"rounds": 15, "rounds_rule": "n_estimators: no relevant item in the validation part"}
