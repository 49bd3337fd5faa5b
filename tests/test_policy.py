"""The CTA exploration policy: probabilities, the exploration cap, masks, decisions and propensities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from features.policy import CtaPolicy, ExplorationSettings


def _policy(kind: str = "epsilon_greedy", **kw: float) -> CtaPolicy:
    return CtaPolicy(ExplorationSettings(kind, **kw))


# -- exact values -----------------------------------------------------------------------

def test_epsilon_greedy_spreads_epsilon_uniformly() -> None:
    p = _policy(epsilon=0.2).probabilities(np.array([[0.1, 0.5, 0.3, 0.2]]))
    np.testing.assert_allclose(p, [[0.05, 0.85, 0.05, 0.05]], rtol=0, atol=1e-15)


def test_softmax_uses_the_temperature() -> None:
    p = _policy("softmax", temperature=0.5).probabilities(np.array([[0.0, math.log(2) / 2]]))
    np.testing.assert_allclose(p, [[1 / 3, 2 / 3]], rtol=1e-12)


def test_ties_go_to_the_lowest_index() -> None:
    p = _policy(epsilon=0.3).probabilities(np.array([[0.2, 0.7, 0.7, 0.1]]))
    np.testing.assert_allclose(p, [[0.075, 0.775, 0.075, 0.075]], atol=1e-15)
    assert _policy(epsilon=0.0).decide(np.array([0.2, 0.7, 0.7, 0.1]), 0.99) == (1, 1.0)


def test_cap_mixes_toward_greedy_exactly_to_the_cap() -> None:
    # uniform (epsilon 1) explores 0.75 of the time; the cap brings it down to 0.3
    p = _policy(epsilon=1.0, max_exploration=0.3).probabilities(np.array([[0.0, 2.0, 1.0, 0.5]]))
    np.testing.assert_allclose(p, [[0.1, 0.7, 0.1, 0.1]], atol=1e-15)


def test_cap_leaves_policies_below_it_alone() -> None:
    scores = np.array([[0.0, 2.0, 1.0, 0.5]])
    capped = _policy(epsilon=0.2, max_exploration=0.16).probabilities(scores)
    free = _policy(epsilon=0.2).probabilities(scores)
    np.testing.assert_array_equal(capped, free)  # explores exactly 0.15 <= 0.16


def test_zero_cap_is_greedy() -> None:
    p = _policy("softmax", temperature=10.0, max_exploration=0.0).probabilities(np.array([[0.0, 2.0, 1.0]]))
    np.testing.assert_array_equal(p, [[0.0, 1.0, 0.0]])


def test_mask_removes_variants_and_renormalizes() -> None:
    scores = np.array([[5.0, 1.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    mask = np.array([[False, True, True, True], [True, True, False, False]])
    p = _policy(epsilon=0.3).probabilities(scores, mask)
    np.testing.assert_allclose(p, [[0.0, 0.1, 0.8, 0.1], [0.15, 0.85, 0.0, 0.0]], atol=1e-15)
    soft = _policy("softmax", temperature=1.0).probabilities(scores, mask)
    assert soft[0, 0] == 0.0
    assert soft[1, 2:].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(soft[1, :2], np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum(), rtol=1e-12)


def test_softmax_keeps_every_allowed_variant_reachable_under_underflow() -> None:
    p = _policy("softmax", temperature=1e-3).probabilities(np.array([[0.0, 10.0, 5.0]]))
    assert (p > 0).all()
    assert p[0, 1] == pytest.approx(1.0)


# -- decisions ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["epsilon_greedy", "softmax"])
def test_decide_propensity_is_the_probability_of_the_choice(kind: str) -> None:
    policy = _policy(kind, epsilon=0.25, temperature=0.3, max_exploration=0.4)
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(200, 8))
    mask = rng.random((200, 8)) < 0.7
    mask[:, 5] = True
    probs = policy.probabilities(scores, mask)
    for i in range(200):
        for u in (0.0, 0.37, 0.81, np.nextafter(1.0, 0.0)):
            action, propensity = policy.decide(scores[i], u, mask[i])
            assert mask[i, action]
            assert propensity == probs[i, action] > 0.0


@pytest.mark.parametrize("kind", ["epsilon_greedy", "softmax"])
def test_decide_inverts_the_cumulative_distribution(kind: str) -> None:
    """A fine grid of u lands on each variant exactly as often as its probability."""
    policy = _policy(kind, epsilon=0.4, temperature=0.5, max_exploration=0.5)
    scores = np.array([0.3, -1.0, 0.9, 0.0, 0.2, 0.1, -0.4, 0.5])
    probs = policy.probabilities(scores[None, :])[0]
    grid = (np.arange(100_000) + 0.5) / 100_000
    counts = np.bincount([policy.decide(scores, float(u))[0] for u in grid], minlength=8)
    np.testing.assert_allclose(counts / grid.size, probs, atol=2e-5)


@pytest.mark.parametrize("kind", ["epsilon_greedy", "softmax"])
def test_sampled_frequencies_match_probabilities(kind: str) -> None:
    policy = _policy(kind, epsilon=0.5, temperature=0.4, max_exploration=0.6)
    scores = np.array([0.3, -1.0, 0.9, 0.0, 0.2, 0.1, -0.4, 0.5])
    probs = policy.probabilities(scores[None, :])[0]
    rng = np.random.default_rng(12345)
    draws = 40_000
    counts = np.bincount([policy.decide(scores, rng)[0] for _ in range(draws)], minlength=8)
    expected = probs * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.32  # chi-square, 7 degrees of freedom, p = 0.001


def test_decide_never_shows_a_masked_variant() -> None:
    policy = _policy(epsilon=1.0)
    mask = np.array([True, False, True, False])
    scores = np.array([0.0, 9.0, 1.0, 8.0])
    chosen = {policy.decide(scores, u, mask)[0] for u in np.linspace(0.0, np.nextafter(1.0, 0.0), 1001)}
    assert chosen == {0, 2}


@pytest.mark.parametrize(
    ("u", "match"),
    [(1.0, r"u must be a uniform draw in \[0, 1\), got 1.0"), (-0.1, "u must be"), (float("nan"), "u must be")],
)
def test_decide_refuses_a_draw_outside_the_unit_interval(u: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _policy().decide(np.array([0.1, 0.2]), u)


@pytest.mark.parametrize(
    ("scores", "mask", "match"),
    [
        (np.array([[0.1, 0.2]]), None, r"scores must have shape \(K,\)"),
        (np.array([0.1, np.nan]), None, "scores must be finite"),
        (np.array([], dtype=float), None, "at least one variant"),
        (np.array([0.1, 0.2]), np.array([False, False]), "mask must allow at least one variant"),
        (np.array([0.1, 0.2]), np.array([1, 0]), "mask must be boolean"),
        (np.array([0.1, 0.2]), np.array([True]), "mask must be boolean with the shape"),
    ],
)
def test_decide_refuses_bad_input(scores: np.ndarray, mask: np.ndarray | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _policy().decide(scores, 0.5, mask)


@pytest.mark.parametrize(
    ("scores", "mask", "match"),
    [
        (np.array([0.1, 0.2]), None, r"scores must have shape \(n, K\) with K >= 1, got shape \(2,\)"),
        (np.zeros((3, 0)), None, "K >= 1"),
        (np.array([[0.1, np.inf]]), None, "scores must be finite"),
        (np.zeros((2, 3)), np.ones((2, 2), dtype=bool), r"mask must have the shape of scores \(2, 3\), got \(2, 2\)"),
        (np.zeros((2, 3)), np.ones((2, 3)), "mask must be boolean, got dtype float64"),
        (np.zeros((2, 3)), np.array([[True, False, False], [False] * 3]), "at least one variant in every row"),
    ],
)
def test_probabilities_refuses_bad_input(scores: np.ndarray, mask: np.ndarray | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _policy().probabilities(scores, mask)


# -- settings -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "greedy"}, "kind must be one of epsilon_greedy, softmax, got 'greedy'"),
        ({"epsilon": 1.5}, r"epsilon must be in \[0, 1\], got 1.5"),
        ({"epsilon": -0.1}, "epsilon must be in"),
        ({"epsilon": float("nan")}, "epsilon must be in"),
        ({"epsilon": "0.1"}, "epsilon must be a number"),
        ({"epsilon": True}, "epsilon must be a number"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": -1.0}, "temperature must be"),
        ({"temperature": float("inf")}, "temperature must be"),
        ({"max_exploration": 1.01}, r"max_exploration must be in \[0, 1\], got 1.01"),
        ({"max_exploration": None}, "max_exploration must be a number"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExplorationSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_round_trip_through_a_dict() -> None:
    s = ExplorationSettings("softmax", epsilon=0, temperature=2, max_exploration=0.25)
    assert s.to_dict() == {"kind": "softmax", "epsilon": 0.0, "temperature": 2.0, "max_exploration": 0.25}
    assert ExplorationSettings.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"kind": "softmax", "epsilon": 0.1, "temperature": 1.0}, r"missing field\(s\) max_exploration"),
        ({"kind": "softmax", "epsilon": 0.1, "temperature": 1.0, "max_exploration": 1.0, "eps": 0.2},
         r"unknown field\(s\) eps"),
        ({"kind": "softmax", "epsilon": 0.1, "temperature": -1.0, "max_exploration": 1.0}, "temperature must be"),
        (["softmax"], "must be a mapping"),
    ],
)
def test_from_dict_refuses_bad_manifests(raw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExplorationSettings.from_dict(raw)


# -- properties -----------------------------------------------------------------------

_settings = st.builds(
    ExplorationSettings,
    kind=st.sampled_from(["epsilon_greedy", "softmax"]),
    epsilon=st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-6, 1.0)),
    temperature=st.floats(1e-3, 1e3),
    max_exploration=st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-6, 1.0)),
)


@st.composite
def _scores_and_mask(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 9))
    # few distinct values, so ties are common
    scores = draw(hnp.arrays(np.float64, (n, k), elements=st.sampled_from([-50.0, -1.0, 0.0, 0.25, 0.5, 3.0, 40.0])
                             | st.floats(-100, 100)))
    mask = draw(hnp.arrays(np.bool_, (n, k)))
    mask[np.arange(n), draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))] = True
    return scores, mask


@settings(max_examples=300, deadline=None)
@given(_settings, _scores_and_mask())
def test_probabilities_properties(cfg: ExplorationSettings, data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, mask = data
    p = CtaPolicy(cfg).probabilities(scores, mask)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (p[~mask] == 0.0).all()
    greedy = np.argmax(np.where(mask, scores, -np.inf), axis=1)
    rows = np.arange(len(p))
    assert (p >= 0).all()
    assert (p[rows, greedy][:, None] >= p - 1e-15).all()  # the greedy variant is the most likely
    assert (1.0 - p[rows, greedy] <= cfg.max_exploration + 1e-12).all()  # the cap holds
    if cfg.max_exploration > 0 and (cfg.kind == "softmax" or cfg.epsilon > 0):
        assert (p[mask] > 0).all()  # an exploring policy reaches every allowed variant
    uncapped = CtaPolicy(ExplorationSettings(cfg.kind, cfg.epsilon, cfg.temperature, 1.0)).probabilities(scores, mask)
    over = 1.0 - uncapped[rows, greedy] > cfg.max_exploration
    np.testing.assert_allclose(1.0 - p[rows[over], greedy[over]], cfg.max_exploration, atol=1e-12)
    np.testing.assert_array_equal(p[~over], uncapped[~over])


@settings(max_examples=300, deadline=None)
@given(_settings, _scores_and_mask(), st.floats(0.0, 1.0, exclude_max=True))
def test_decide_agrees_with_probabilities(
    cfg: ExplorationSettings, data: tuple[np.ndarray, np.ndarray], u: float,
) -> None:
    scores, mask = data
    policy = CtaPolicy(cfg)
    p = policy.probabilities(scores, mask)
    for i in range(len(scores)):
        action, propensity = policy.decide(scores[i], u, mask[i])
        assert mask[i, action]
        assert propensity == p[i, action] > 0.0
        below = p[i, :action].sum()
        assert below - 1e-12 <= u  # the inverse-CDF choice: u falls in this variant's slice
        assert u < below + propensity + 1e-12 or action == np.flatnonzero(p[i] > 0)[-1]
