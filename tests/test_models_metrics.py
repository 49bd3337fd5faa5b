"""Model metrics: hand-written ones held against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, ndcg_score

from models.metrics import (
    Slates,
    classification_metrics,
    cluster_bootstrap_mean,
    expected_calibration_error,
    per_slate_average_precision,
    per_slate_ndcg,
    ranking_metrics,
)


def test_ece_by_hand() -> None:
    # bins of width 0.5: {0.1, 0.3} -> rate 0.0 vs mean 0.2; {0.8, 0.9} -> rate 1.0 vs mean 0.85
    ece = expected_calibration_error(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.8, 0.9]), bins=2)
    assert ece == pytest.approx((2 * 0.2 + 2 * 0.15) / 4)


def test_ece_is_zero_when_calibrated() -> None:
    y = np.array([0, 1] * 50)
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)


def test_ece_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="equal-length non-empty vectors"):
        expected_calibration_error(np.array([0, 1]), np.array([0.5]))


def test_classification_metrics_need_two_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        classification_metrics(np.zeros(4), np.full(4, 0.2))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 7), st.integers(1, 40), st.integers(1, 7))
def test_ndcg_matches_scikit_learn(seed: int, size: int, n_slates: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.integers(0, 3, size=(n_slates, size)).astype(float)
    scores = rng.permutation(n_slates * size).reshape(n_slates, size).astype(float)  # no ties
    slates = Slates.from_group_ids(np.repeat(np.arange(n_slates), size))
    mine = per_slate_ndcg(rel.ravel(), scores.ravel(), slates, k)
    has = rel.sum(axis=1) > 0
    assert np.isnan(mine[~has]).all()
    for i in np.flatnonzero(has):
        assert mine[i] == pytest.approx(ndcg_score(rel[i : i + 1], scores[i : i + 1], k=k))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8))
def test_average_precision_matches_scikit_learn(seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.integers(0, 2, size=size)
    scores = rng.permutation(size).astype(float)
    ap = per_slate_average_precision(rel, scores, Slates.from_group_ids(np.zeros(size)))[0]
    if rel.sum() == 0:
        assert np.isnan(ap)
    else:
        assert ap == pytest.approx(average_precision_score(rel, scores))


def test_ranking_metrics_by_hand() -> None:
    slates = Slates.from_group_ids(np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c"]))
    rel = np.array([0, 1, 0, 1, 0, 0, 0, 0, 0])  # slate c has no relevant item: left out
    scores = np.array([3, 2, 1, 3, 2, 1, 1, 2, 3.0])
    m = ranking_metrics(rel, scores, slates)
    assert m["map"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["ndcg_at_3"] == pytest.approx((1 / np.log2(3) + 1.0) / 2)


def test_slates_must_be_contiguous() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        Slates.from_group_ids(np.array([1, 2, 1]))


def test_cluster_bootstrap_brackets_the_mean_and_resamples_clusters() -> None:
    values = np.array([1.0, 1.0, 1.0, 0.0])
    clusters = np.array(["s1", "s1", "s1", "s2"])
    mean, low, high = cluster_bootstrap_mean(values, clusters, 2000, 0.05, seed=0)
    assert mean == pytest.approx(0.75)
    # whole clusters: a resample holds s1 twice (1.0), s2 twice (0.0) or both (0.75)
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one value"):
        cluster_bootstrap_mean(np.array([]), np.array([]), 10, 0.05, 0)
