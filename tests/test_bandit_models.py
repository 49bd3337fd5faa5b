"""CTA candidates and policy evaluation on an imported logged-bandit table (the example file)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from features.bandit import SPEC_FILE, BanditSpec, import_bandit_log
from features.errors import DataError, InputUnreadableError
from features.policy import ExplorationSettings
from models.bandit import (
    REGISTERED_MODEL,
    evaluate_on_log,
    every_action,
    load_bandit_log,
    load_policy_model,
    session_split,
    train_bandit_candidates,
)
from models.config import EvalConfig, TrainConfig
from tests.data.bandit import make_example
from tests.test_bandit_import import EXAMPLE, GOOD, KEY, write_csv

EVAL = EvalConfig(n_bootstrap=100)
TRAIN = TrainConfig(cta_families=("logreg", "lightgbm", "mlp"))
EXPLORE = ExplorationSettings("epsilon_greedy", epsilon=0.2)


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")  # candidates carry their plots; the CLI closes them after logging


@pytest.fixture(scope="module")
def bandit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("log")
    import_bandit_log(EXAMPLE, root / "bandit", root / "raw" / "q.jsonl", key=KEY, consent_column="consented",
                      consent_basis=None)
    return root / "bandit"


def _import(tmp_path: Path, rows: list[dict[str, str | None]]) -> Path:
    source = write_csv(tmp_path / "log.csv", rows)
    import_bandit_log(source, tmp_path / "bandit", tmp_path / "q.jsonl", key=KEY, consent_column=None,
                      consent_basis="test")
    return tmp_path / "bandit"


def test_session_split_holds_out_the_latest_sessions_whole(bandit_dir: Path) -> None:
    log = load_bandit_log(bandit_dir)
    test = session_split(log.session, log.ts, 0.2)
    assert 0.2 <= test.mean() < 0.3
    assert set(log.session[test]) & set(log.session[~test]) == set()
    starts = {s: log.ts[log.session == s].min() for s in np.unique(log.session)}
    latest_train = max(starts[s] for s in set(log.session[~test]))
    assert min(starts[s] for s in set(log.session[test])) > latest_train
    with pytest.raises(ValueError, match="test_fraction must be in"):
        session_split(log.session, log.ts, 1.0)


def test_every_action_repeats_the_context_with_each_one_hot(bandit_dir: Path) -> None:
    log = load_bandit_log(bandit_dir)
    k = len(log.spec.actions)
    inputs = every_action(log.context[:3], k).reshape(3, k, -1)
    np.testing.assert_array_equal(inputs[:, :, : log.context.shape[1]], np.repeat(log.context[:3, None], k, axis=1))
    np.testing.assert_array_equal(inputs[:, :, log.context.shape[1]:], np.broadcast_to(np.eye(k), (3, k, k)))
    rows = np.arange(3)
    np.testing.assert_array_equal(inputs[rows, log.action[:3]], log.x[:3])  # the shown action's row is logged


def test_training_on_the_example_log(bandit_dir: Path) -> None:
    spec = BanditSpec.load(bandit_dir / SPEC_FILE)
    candidates = train_bandit_candidates(bandit_dir, TRAIN, EVAL, EXPLORE)
    assert [c.family for c in candidates] == ["logreg", "lightgbm", "mlp"]
    expected = {"auc", "logloss", "ece", "lift_dr", "lift_dr_ci_low", "lift_dr_ci_high"} | {
        f"policy_value_{e}{s}" for e in ("ips", "snips", "dr") for s in ("", "_ci_low", "_ci_high")}
    log = load_bandit_log(bandit_dir)
    for c in candidates:
        assert c.kind == "cta" and c.name == f"cta-{c.family}"
        assert expected <= set(c.metrics) and all(np.isfinite(v) for v in c.metrics.values())
        assert c.metrics["policy_value_dr_ci_low"] <= c.metrics["policy_value_dr"] <= c.metrics[
            "policy_value_dr_ci_high"]
        assert c.feature_names == spec.feature_names and c.spec_hash == spec.hash
        assert c.info["consent"] == "per-row consent column 'consented'"
        assert c.info["test_rows"] + c.info["train_rows"] == log.reward.size
        assert c.input_example.shape == (5, len(spec.feature_names))
        assert not any((log.x == row).all(axis=1).any() for row in c.input_example)  # synthetic, not a log row
        assert set(c.figures) == {"roc.png", "calibration.png", "lift.png"}
        scores = c.model.predict_proba(every_action(log.context[:4], len(spec.actions)))[:, 1]
        assert scores.shape == (4 * len(spec.actions),) and ((scores >= 0) & (scores <= 1)).all()
    # The LightGBM candidate's rounds were chosen on the training sessions that began last.
    boosted = candidates[1]
    assert boosted.params["rounds_rule"] == "early_stopping"
    assert boosted.model.booster_.num_trees() == boosted.params["rounds"] <= TRAIN.lightgbm.n_estimators
    # Deterministic: the same log and params give the same model.
    again = train_bandit_candidates(bandit_dir, replace(TRAIN, cta_families=("lightgbm",)), EVAL, EXPLORE)
    assert again[0].metrics == candidates[1].metrics
    assert REGISTERED_MODEL == "cta-log"


def _truth_of_uniform(spec: BanditSpec, context: np.ndarray) -> float:
    """The uniform policy's true value on these rows, from the example's click model."""
    device, returning = spec.context_names.index("ctx_device"), spec.context_names.index("ctx_returning")
    names = spec.context[device].categories
    values = [np.mean([make_example.click_probability(a, names[int(row[device])], int(row[returning]))
                       for a in make_example.ACTIONS]) for row in context]
    return float(np.mean(values))


def test_uniform_policy_on_a_uniform_log_recovers_the_mean_reward(bandit_dir: Path) -> None:
    log = load_bandit_log(bandit_dir)
    assert np.all(log.propensity == 0.25)  # the example's logging policy was uniform over 4 actions
    test = log.subset(session_split(log.session, log.ts, TrainConfig().test_fraction))
    result = evaluate_on_log(bandit_dir, "uniform", EXPLORE, EVAL)
    assert result.n == test.reward.size
    assert result.ips.value == test.reward.mean()  # every weight is exactly 1
    assert result.snips.value == result.ips.value == result.logged.value
    assert result.max_weight == 1.0 and result.effective_sample_size == pytest.approx(test.reward.size)
    truth = _truth_of_uniform(log.spec, test.context)
    for estimate in (result.ips, result.snips, result.dr):
        assert estimate.ci_low <= truth <= estimate.ci_high
    assert result.lift_dr.value == pytest.approx(result.dr.value - result.logged.value)


def test_evaluating_a_fitted_model_and_refusing_a_mismatched_one(bandit_dir: Path) -> None:
    (candidate,) = train_bandit_candidates(bandit_dir, replace(TRAIN, cta_families=("logreg",)), EVAL, EXPLORE)
    result = evaluate_on_log(bandit_dir, candidate.model, EXPLORE, EVAL)
    assert result.dr.value == pytest.approx(candidate.metrics["policy_value_ips"], abs=0.5)
    assert result.ips.value == pytest.approx(candidate.metrics["policy_value_ips"])  # same split, same policy
    narrow = LogisticRegression().fit(np.eye(3), [0, 1, 1])
    with pytest.raises(DataError, match=r"takes 3 inputs, but this log has 7 \(3 context columns \+ 4 actions\)"):
        evaluate_on_log(bandit_dir, narrow, EXPLORE, EVAL)
    with pytest.raises(ValueError, match="policy must be 'uniform' or a fitted model"):
        evaluate_on_log(bandit_dir, "greedy", EXPLORE, EVAL)


def _rows(rewards: list[str], sessions: int) -> list[dict[str, str | None]]:
    return [{**GOOD, "session_key": f"u{i % sessions}", "timestamp": f"2026-08-03T17:{i:02d}:00Z", "reward": r,
             "action": ("a", "b")[i % 2]} for i, r in enumerate(rewards)]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (_rows(["0", "1", "0.5", "1"] * 5, 10), r"5 reward\(s\) are not 0 or 1 \(e.g. 0.5\)"),
        (_rows(["0", "1"] * 5, 1), r"1 session\(s\); a time-based split needs at least 2"),
        (_rows(["0", "1"] * 8 + ["1"] * 4, 20), r"the test part of the log has a single reward value \(1\)"),
    ],
)
def test_bad_logs_are_refused_clearly(tmp_path: Path, rows: list[dict[str, str | None]], match: str) -> None:
    directory = _import(tmp_path, rows)
    with pytest.raises(DataError, match=match):
        train_bandit_candidates(directory, TRAIN, EVAL, EXPLORE)
    with pytest.raises(DataError, match=match):
        evaluate_on_log(directory, "uniform", EXPLORE, EVAL)


def test_missing_or_altered_log_is_refused(tmp_path: Path, bandit_dir: Path) -> None:
    with pytest.raises(InputUnreadableError, match="cannot read the bandit spec"):
        train_bandit_candidates(tmp_path / "nowhere", TRAIN, EVAL, EXPLORE)
    copy = tmp_path / "copy"
    shutil.copytree(bandit_dir, copy)
    text = (copy / SPEC_FILE).read_text(encoding="utf-8")
    (copy / SPEC_FILE).write_text(text.replace('"discount"', '"rebate"', 1), encoding="utf-8")
    with pytest.raises(InputUnreadableError, match="does not match its content"):
        evaluate_on_log(copy, "uniform", EXPLORE, EVAL)


@pytest.mark.slow  # an MLflow store from scratch: about ten seconds
def test_load_policy_model_checks_inputs_and_spec(tmp_path: Path, bandit_dir: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    from pipeline.record import record_candidates
    from pipeline.tracking import open_tracking

    client = open_tracking(tmp_path, {})
    candidates = train_bandit_candidates(bandit_dir, replace(TRAIN, cta_families=("logreg", "lightgbm")), EVAL,
                                         EXPLORE)
    log = load_bandit_log(bandit_dir)
    for candidate, recorded in zip(candidates, record_candidates(client, candidates, {"data": "example"}),
                                   strict=True):
        uri = f"models:/{recorded.name}/{recorded.version}"
        model = load_policy_model(uri, bandit_dir)
        np.testing.assert_allclose(model.predict_proba(log.x), candidate.model.predict_proba(log.x), rtol=1e-12)
        assert evaluate_on_log(bandit_dir, model, EXPLORE, EVAL) == evaluate_on_log(bandit_dir, candidate.model,
                                                                                   EXPLORE, EVAL)
    # Same width, other encoding: refused by the spec hash the run recorded.
    other = tmp_path / "other"
    shutil.copytree(bandit_dir, other)
    spec = BanditSpec.load(other / SPEC_FILE)
    moved = replace(spec, context=(spec.context[0], replace(spec.context[1], default=99.0), spec.context[2]))
    (other / SPEC_FILE).write_text(moved.to_json(), encoding="utf-8")
    with pytest.raises(DataError, match="was trained on inputs with spec hash"):
        load_policy_model(uri, other)
    # A model of another width, saved without a run: refused by its input count.
    path = tmp_path / "narrow"
    mlflow.sklearn.save_model(LogisticRegression().fit(np.eye(3), [0, 1, 1]), path, serialization_format="cloudpickle")
    with pytest.raises(DataError, match="takes 3 inputs"):
        load_policy_model(str(path), bandit_dir)
    # A LightGBM ranker of the right width is still not a click model.
    ranker = lgb.LGBMRanker(n_estimators=3, min_child_samples=5, verbose=-1).fit(log.x, log.reward.astype(int),
                                                                                  group=[log.reward.size])
    mlflow.lightgbm.save_model(ranker.booster_, tmp_path / "ranker")
    with pytest.raises(DataError, match="is a LightGBM 'lambdarank' model, not a click/convert classifier"):
        load_policy_model(str(tmp_path / "ranker"), bandit_dir)
    with pytest.raises(InputUnreadableError, match="cannot load the model"):
        load_policy_model(f"models:/{recorded.name}/99", bandit_dir)


def test_example_rows_follow_the_documented_columns() -> None:
    with EXAMPLE.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert header == list(make_example.COLUMNS)
    assert {"timestamp", "session_key", "action", "position", "reward", "propensity"} <= set(header)
    assert all(isinstance(c, str) for c in header)
