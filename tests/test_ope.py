"""Offline policy evaluation: IPS, SNIPS and DR values, intervals, lift and input checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ope import PolicyEvaluation, evaluate_policy

# Three logged rows, two variants; every number below is worked by hand.
REWARDS = np.array([1.0, 0.0, 1.0])
ACTIONS = np.array([0, 1, 1])
PROPENSITIES = np.array([0.5, 0.25, 0.5])
TARGET = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
PREDICTIONS = np.array([[0.6, 0.2], [0.4, 0.4], [0.1, 0.5]])


def _tiny(**kw: Any) -> PolicyEvaluation:
    return evaluate_policy(REWARDS, ACTIONS, PROPENSITIES, TARGET, PREDICTIONS, n_bootstrap=200, **kw)


def test_hand_computed_values() -> None:
    ev = _tiny()
    # weights w = pi(a|x) / mu = [1/0.5, 0.5/0.25, 0.8/0.5] = [2, 2, 1.6]
    assert ev.ips.value == pytest.approx((2 * 1 + 2 * 0 + 1.6 * 1) / 3)  # 1.2
    assert ev.snips.value == pytest.approx(3.6 / 5.6)
    # DR = direct method + weighted residual of the logged action, per row:
    #   0.6 + 2 (1 - 0.6) = 1.4;  0.4 + 2 (0 - 0.4) = -0.4;  (0.02 + 0.4) + 1.6 (1 - 0.5) = 1.22
    assert ev.dr.value == pytest.approx((1.4 - 0.4 + 1.22) / 3)  # 0.74
    assert ev.logged.value == pytest.approx(2 / 3)
    assert ev.lift_dr.value == pytest.approx(0.74 - 2 / 3)
    assert ev.effective_sample_size == pytest.approx(5.6**2 / (4 + 4 + 1.6**2))
    assert ev.max_weight == pytest.approx(2.0)
    assert (ev.n, ev.n_clusters) == (3, 3)


def test_metrics_have_exactly_the_issue_names() -> None:
    metrics = _tiny().to_metrics()
    names = {f"{base}{suffix}" for base in ("policy_value_ips", "policy_value_snips", "policy_value_dr", "lift_dr")
             for suffix in ("", "_ci_low", "_ci_high")}
    assert set(metrics) == names | {"ess", "max_weight"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["policy_value_dr"] == pytest.approx(0.74)


def _world(seed: int, n_sessions: int = 600, k: int = 6) -> dict[str, np.ndarray]:
    """Sessions of 1-5 impressions, a logistic truth, a softmax logging policy."""
    rng = np.random.default_rng(seed)
    sessions = np.repeat(np.arange(n_sessions), rng.integers(1, 6, n_sessions))
    n = sessions.size
    x = rng.normal(size=(n, 3))
    coef = np.random.default_rng(100).normal(size=(k, 3))
    truth = 1.0 / (1.0 + np.exp(-(-1.5 + x @ coef.T)))
    logits = np.random.default_rng(101).normal(size=k)
    logging = np.tile(np.exp(logits) / np.exp(logits).sum(), (n, 1))
    actions = (rng.random(n)[:, None] > np.cumsum(logging, axis=1)).sum(axis=1)
    rewards = (rng.random(n) < truth[np.arange(n), actions]).astype(np.float64)
    return {"truth": truth, "logging": logging, "actions": actions, "rewards": rewards, "sessions": sessions,
            "propensities": logging[np.arange(n), actions]}


def _evaluate(w: dict[str, np.ndarray], target: np.ndarray, predictions: np.ndarray, **kw: Any) -> PolicyEvaluation:
    return evaluate_policy(w["rewards"], w["actions"], w["propensities"], target, predictions,
                           clusters=w["sessions"], n_bootstrap=300, **kw)


def test_target_equal_to_logging_gives_the_mean_reward() -> None:
    w = _world(1)
    ev = _evaluate(w, w["logging"], np.zeros_like(w["truth"]))
    mean = w["rewards"].mean()
    assert ev.ips.value == pytest.approx(mean, rel=1e-12)
    assert ev.snips.value == pytest.approx(mean, rel=1e-12)
    assert ev.logged.value == pytest.approx(mean, rel=1e-12)
    assert ev.max_weight == pytest.approx(1.0)
    assert ev.effective_sample_size == pytest.approx(ev.n)
    assert ev.lift_dr.value == pytest.approx(0.0, abs=1e-12)  # DR with a zero model is IPS here
    assert ev.lift_dr.ci_low == pytest.approx(0.0, abs=1e-12)  # paired: every resample's lift is 0 too
    assert ev.lift_dr.ci_high == pytest.approx(0.0, abs=1e-12)


def test_dr_with_a_perfect_model_is_exact_on_noise_free_rewards() -> None:
    """With r = p(x, a) and q = p, every DR term is the row's true value, whatever was logged."""
    w = _world(2)
    n, k = w["truth"].shape
    target = np.eye(k)[np.argmax(w["truth"], axis=1)] * 0.8 + 0.2 / k
    expected = w["truth"][np.arange(n), w["actions"]]
    ev = evaluate_policy(expected, w["actions"], w["propensities"], target, w["truth"], clusters=w["sessions"],
                         n_bootstrap=100)
    true_value = float((target * w["truth"]).sum(axis=1).mean())
    assert ev.dr.value == pytest.approx(true_value, rel=1e-12)
    assert abs(ev.ips.value - true_value) > 100 * abs(ev.dr.value - true_value)
    assert ev.dr.ci_high - ev.dr.ci_low < 0.3 * (ev.ips.ci_high - ev.ips.ci_low)


def test_dr_with_a_perfect_model_has_low_variance() -> None:
    """Over repeated logs of the same contexts, DR with the true model varies least."""
    w = _world(2)
    n, k = w["truth"].shape
    target = np.eye(k)[np.argmax(w["truth"], axis=1)] * 0.8 + 0.2 / k
    constant = np.full_like(w["truth"], w["rewards"].mean())
    values: dict[str, list[float]] = {"dr_perfect": [], "dr_constant": [], "ips": []}
    for rep in range(30):
        rng = np.random.default_rng(1000 + rep)
        actions = (rng.random(n)[:, None] > np.cumsum(w["logging"], axis=1)).sum(axis=1)
        rewards = (rng.random(n) < w["truth"][np.arange(n), actions]).astype(np.float64)
        log = rewards, actions, w["logging"][np.arange(n), actions], target
        perfect = evaluate_policy(*log, w["truth"], clusters=w["sessions"], n_bootstrap=20)
        values["dr_perfect"].append(perfect.dr.value)
        values["ips"].append(perfect.ips.value)
        values["dr_constant"].append(evaluate_policy(*log, constant, clusters=w["sessions"], n_bootstrap=20).dr.value)
    std = {name: float(np.std(v)) for name, v in values.items()}
    assert std["dr_perfect"] < 0.8 * std["ips"], std
    assert std["dr_perfect"] < std["dr_constant"], std


def test_estimates_fall_when_the_policy_gets_worse() -> None:
    w = _world(3)
    k = w["truth"].shape[1]
    noisy = np.clip(w["truth"] + np.random.default_rng(4).normal(0, 0.05, w["truth"].shape), 0.01, 0.99)
    best = np.eye(k)[np.argmax(w["truth"], axis=1)] * 0.9 + 0.1 / k
    worst = np.eye(k)[np.argmin(w["truth"], axis=1)] * 0.9 + 0.1 / k
    good, bad = _evaluate(w, best, noisy), _evaluate(w, worst, noisy)
    for name in ("ips", "snips", "dr"):
        assert getattr(bad, name).ci_high < getattr(good, name).ci_low, name
    assert good.lift_dr.ci_low > 0 > bad.lift_dr.ci_high


def test_intervals_cover_the_truth_on_a_small_world() -> None:
    """A quick check of the interval method (the slow test does it on the simulator)."""
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in range(30):
        w = _world(seed, n_sessions=250)
        k = w["truth"].shape[1]
        noisy = np.clip(w["truth"] + np.random.default_rng(seed).normal(0, 0.1, w["truth"].shape), 0.01, 0.99)
        target = np.eye(k)[np.argmax(noisy, axis=1)] * 0.8 + 0.2 / k
        value = float((target * w["truth"]).sum(axis=1).mean())
        ev = _evaluate(w, target, noisy, seed=seed)
        for name in covered:
            est = getattr(ev, name)
            covered[name] += est.ci_low <= value <= est.ci_high
    assert min(covered.values()) >= 25, covered


def test_clusters_widen_the_interval_of_correlated_rows() -> None:
    """Each session repeated five times is no more information than the session itself."""
    w = _world(5, n_sessions=300)
    k = w["truth"].shape[1]
    target = np.full_like(w["truth"], 1.0 / k)
    rep = {key: np.repeat(v, 5, axis=0) for key, v in w.items()}
    once = evaluate_policy(w["rewards"], w["actions"], w["propensities"], target, w["truth"],
                           clusters=np.arange(w["rewards"].size), n_bootstrap=400)
    rows = np.arange(rep["rewards"].size)
    copies = rep["rewards"], rep["actions"], rep["propensities"], np.repeat(target, 5, axis=0), rep["truth"]
    as_clusters = evaluate_policy(*copies, clusters=rows // 5, n_bootstrap=400)
    as_rows = evaluate_policy(*copies, n_bootstrap=400)
    assert as_clusters.n_clusters == once.n_clusters == w["rewards"].size
    assert as_clusters.dr.value == pytest.approx(once.dr.value)
    width_once = once.dr.ci_high - once.dr.ci_low
    assert as_clusters.dr.ci_high - as_clusters.dr.ci_low == pytest.approx(width_once, rel=0.15)
    assert as_rows.dr.ci_high - as_rows.dr.ci_low < 0.6 * width_once  # ignoring clusters is overconfident


def test_same_seed_same_intervals_other_seed_other_intervals() -> None:
    w = _world(6, n_sessions=100)
    target = np.full_like(w["truth"], 1.0 / w["truth"].shape[1])
    a, b = _evaluate(w, target, w["truth"], seed=1), _evaluate(w, target, w["truth"], seed=1)
    c = _evaluate(w, target, w["truth"], seed=2)
    assert a == b
    assert a.dr.value == c.dr.value
    assert a.dr.ci_low != c.dr.ci_low


def test_snips_is_undefined_when_the_target_never_takes_a_logged_action() -> None:
    target = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    ev = evaluate_policy(REWARDS, ACTIONS, PROPENSITIES, target, PREDICTIONS, n_bootstrap=50)
    assert ev.ips.value == 0.0
    assert np.isnan(ev.snips.value)
    assert np.isnan(ev.snips.ci_low)
    assert ev.effective_sample_size == 0.0
    assert ev.dr.value == pytest.approx((0.2 + 0.4 + 0.1) / 3)  # the direct method alone


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 10.0))
def test_properties_scale_permutation_and_bounds(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 40)), int(rng.integers(1, 5))
    rewards = rng.random(n) * (rng.random(n) < 0.5)
    actions = rng.integers(0, k, n)
    propensities = rng.uniform(0.05, 1.0, n)
    target = rng.dirichlet(np.ones(k), n)
    predictions = rng.random((n, k))
    ev = evaluate_policy(rewards, actions, propensities, target, predictions, n_bootstrap=20)
    scaled = evaluate_policy(rewards * scale, actions, propensities, target, predictions * scale, n_bootstrap=20)
    for name in ("ips", "snips", "dr", "logged", "lift_dr"):
        assert getattr(scaled, name).value == pytest.approx(getattr(ev, name).value * scale, rel=1e-9, abs=1e-12)
    order = rng.permutation(n)
    permuted = evaluate_policy(rewards[order], actions[order], propensities[order], target[order],
                               predictions[order], n_bootstrap=20)
    assert permuted.dr.value == pytest.approx(ev.dr.value, rel=1e-9, abs=1e-12)
    if not np.isnan(ev.snips.value):  # SNIPS is a weighted mean of the rewards
        assert rewards.min() - 1e-12 <= ev.snips.value <= rewards.max() + 1e-12
    for name in ("ips", "snips", "dr", "lift_dr"):
        est = getattr(ev, name)
        assert not est.ci_low > est.ci_high


def _bad(**override: Any) -> dict[str, Any]:
    args = {"rewards": REWARDS, "actions": ACTIONS, "logged_propensities": PROPENSITIES,
            "target_probs": TARGET, "reward_predictions": PREDICTIONS}
    return {**args, **override}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"rewards": np.array([1.0])}, "rewards must hold at least 2 rows, got 1"),
        ({"rewards": np.ones((3, 1))}, r"rewards must be 1-dimensional, got shape \(3, 1\)"),
        ({"rewards": np.array([1.0, np.nan, 0.0])}, r"rewards must be finite, got 1 NaN or infinite"),
        ({"rewards": np.array(["a", "b", "c"])}, "rewards must be numeric"),
        ({"actions": np.array([0, 1])}, r"actions must have shape \(3,\) like rewards, got \(2,\)"),
        ({"actions": np.array([0.0, 1.0, 1.0])}, "actions must be integer indices into the K=2 columns"),
        ({"actions": np.array([0, 2, 1])}, r"actions must be in \[0, 2\), got 2 at row 1"),
        ({"actions": np.array([0, -1, 1])}, r"actions must be in \[0, 2\), got -1 at row 1"),
        ({"logged_propensities": np.array([0.5, 0.0, 0.5])},
         r"logged_propensities must be in \(0, 1\], got 0.0 at row 1"),
        ({"logged_propensities": np.array([0.5, 0.5, 1.5])}, r"must be in \(0, 1\], got 1.5 at row 2"),
        ({"logged_propensities": np.array([0.5, 0.5])}, r"logged_propensities must have shape \(3,\)"),
        ({"logged_propensities": np.array([0.5, np.inf, 0.5])}, "logged_propensities must be finite"),
        ({"target_probs": TARGET[:2]}, r"target_probs must have shape \(3, K\) with K >= 1, got \(2, 2\)"),
        ({"target_probs": np.array([0.5, 0.5, 0.5])}, "target_probs must be 2-dimensional"),
        ({"target_probs": TARGET * 0.9}, r"target_probs rows must sum to 1, got 0.9 at row 0"),
        ({"target_probs": np.array([[1.2, -0.2], [0.5, 0.5], [0.5, 0.5]])}, "target_probs must be >= 0, got -0.2"),
        ({"target_probs": np.array([[np.nan, 1.0], [0.5, 0.5], [0.5, 0.5]])}, "target_probs must be finite"),
        ({"reward_predictions": PREDICTIONS[:, :1]},
         r"reward_predictions must have shape \(3, 2\) like target_probs, got \(3, 1\)"),
        ({"reward_predictions": np.where(TARGET > 0, PREDICTIONS, np.nan)}, "reward_predictions must be finite"),
        ({"clusters": np.array([1, 2])}, r"clusters must have shape \(3,\) like rewards, got \(2,\)"),
        ({"clusters": np.array(["s", "s", "s"])}, "clusters: need at least 2 distinct clusters to bootstrap, got 1"),
        ({"n_bootstrap": 5}, "n_bootstrap must be an integer >= 20, got 5"),
        ({"n_bootstrap": 100.0}, "n_bootstrap must be an integer"),
        ({"alpha": 0.0}, r"alpha must be in \(0, 1\), got 0.0"),
        ({"alpha": 1.5}, "alpha must be in"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(override: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_policy(**_bad(**override))
