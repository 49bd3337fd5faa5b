"""Offline quality metrics of candidates: classification (CTA) and ranking (bonuses).

AUC and log loss come from scikit-learn. Per-slate NDCG (needed per slate for bootstrap
intervals, which scikit-learn only returns averaged), expected calibration error and
mean average precision are small enough to write here; the tests hold them against
scikit-learn and hand-computed values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """ECE: the sample-weighted mean |observed rate - mean predicted| over equal-width bins."""
    y_true = np.asarray(y_true, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    if y_true.shape != prob.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and prob must be equal-length non-empty vectors, got {y_true.shape} and {prob.shape}")
    which = np.minimum((prob * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    observed = np.bincount(which, weights=y_true, minlength=bins)
    predicted = np.bincount(which, weights=prob, minlength=bins)
    used = counts > 0
    gaps = np.abs(observed[used] - predicted[used])  # = count * |rate - mean prob|
    return float(gaps.sum() / y_true.size)


def classification_metrics(y_true: np.ndarray, prob: np.ndarray, bins: int = 10) -> dict[str, float]:
    """``auc``, ``logloss`` and ``ece`` of predicted click probabilities."""
    y = np.asarray(y_true).astype(np.int64)
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    if np.unique(y).size < 2:
        raise ValueError("classification metrics need both classes in y_true")
    return {
        "auc": float(roc_auc_score(y, p)),
        "logloss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p, bins),
    }


@dataclass(frozen=True)
class Slates:
    """Ranking data as slates: ``starts[i]:starts[i+1]`` are the rows of slate i."""

    starts: np.ndarray  # (n_slates + 1,) row offsets, rows grouped by slate

    @classmethod
    def from_group_ids(cls, group_ids: np.ndarray) -> Slates:
        """Slates from a group id per row; rows of one slate must be contiguous."""
        group_ids = np.asarray(group_ids)
        if group_ids.size == 0:
            return cls(np.zeros(1, dtype=np.int64))
        change = np.flatnonzero(group_ids[1:] != group_ids[:-1]) + 1
        starts = np.concatenate(([0], change, [group_ids.size])).astype(np.int64)
        if np.unique(group_ids).size != starts.size - 1:
            raise ValueError("rows of one slate must be contiguous; sort by the group id first")
        return cls(starts)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def __len__(self) -> int:
        return int(self.starts.size - 1)


def per_slate_ndcg(relevance: np.ndarray, scores: np.ndarray, slates: Slates, k: int) -> np.ndarray:
    """NDCG@k (gain = relevance, discount 1/log2(rank+1)) of every slate; NaN without relevant items.

    Vectorized per slate size; ties in scores are broken by row order (scikit-learn's
    ``ndcg_score`` averages over ties instead; the two agree whenever scores differ, which
    the tests check).
    """
    out = np.full(len(slates), np.nan)
    sizes = slates.sizes
    for size in np.unique(sizes):
        which = np.flatnonzero(sizes == size)
        rows = slates.starts[which][:, None] + np.arange(size)[None, :]
        rel = np.asarray(relevance, dtype=np.float64)[rows]
        order = np.argsort(-np.asarray(scores, dtype=np.float64)[rows], axis=1, kind="stable")
        top = min(k, int(size))
        discount = 1.0 / np.log2(np.arange(2, top + 2))
        dcg = (np.take_along_axis(rel, order, axis=1)[:, :top] * discount).sum(axis=1)
        ideal = (-np.sort(-rel, axis=1)[:, :top] * discount).sum(axis=1)
        valid = ideal > 0
        out[which[valid]] = dcg[valid] / ideal[valid]
    return out


def per_slate_average_precision(relevance: np.ndarray, scores: np.ndarray, slates: Slates) -> np.ndarray:
    """Average precision of every slate (relevant = relevance > 0); NaN without relevant items."""
    out = np.full(len(slates), np.nan)
    for i in range(len(slates)):
        lo, hi = slates.starts[i], slates.starts[i + 1]
        rel = relevance[lo:hi] > 0
        if not rel.any():
            continue
        order = np.argsort(-scores[lo:hi], kind="stable")
        hits = rel[order]
        precision_at = np.cumsum(hits) / np.arange(1, hits.size + 1)
        out[i] = float(precision_at[hits].mean())
    return out


def ranking_metrics(relevance: np.ndarray, scores: np.ndarray, slates: Slates) -> dict[str, float]:
    """``ndcg_at_3``, ``ndcg_at_5`` and ``map`` over slates with at least one relevant item."""
    result = {
        "ndcg_at_3": float(np.nanmean(per_slate_ndcg(relevance, scores, slates, 3))),
        "ndcg_at_5": float(np.nanmean(per_slate_ndcg(relevance, scores, slates, 5))),
        "map": float(np.nanmean(per_slate_average_precision(relevance, scores, slates))),
    }
    return result


def cluster_bootstrap_mean(values: np.ndarray, clusters: np.ndarray, n_bootstrap: int, alpha: float,
                           seed: int) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile interval from resampling whole clusters.

    Rows of one cluster (a session) are correlated, so clusters, not rows, are resampled.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cluster_bootstrap_mean needs at least one value")
    _, which = np.unique(clusters, return_inverse=True)
    sums = np.bincount(which, weights=values)
    counts = np.bincount(which).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, sums.size, size=(n_bootstrap, sums.size))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(values.mean()), float(low), float(high)
