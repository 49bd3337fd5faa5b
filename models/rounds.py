"""Boosting rounds chosen on held-out training drops (early stopping), then one refit on all of them.

A LightGBM candidate is first fit with ``n_estimators`` rounds on the earlier training drops.
The later ``validation_fraction`` of each creator's training drops (of a logged-bandit table's
training sessions) is scored after every round,
and the rounds stop where ``early_stopping_rounds`` more rounds brought no improvement: the rule
of LightGBM's ``early_stopping`` callback. The chosen number of rounds is then refit on every
training drop, so the final model has seen all of them and carries no unused trees.

The callback itself is not used because lightgbm.dask does not take callbacks: the curve is
read from the fitted booster here, the same way for both engines. The test set is never looked at.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import clone
from sklearn.metrics import log_loss

from features.spec import FeatureSpec
from models.candidates import LightGBMFit, fit_model
from models.config import LightGBMConfig
from models.metrics import Slates, per_slate_ndcg

__all__ = ["RECORD_KEYS", "best_round", "fit_with_rounds", "validation_curve"]

_RANK_AT = 5  # the ranker's curve is NDCG@5, the metric `select` maximizes for it
# What fit_with_rounds records about the choice (candidate params, the train report).
RECORD_KEYS = ("rounds", "rounds_rule", "validation_logloss", f"validation_ndcg_at_{_RANK_AT}", "validation_rows")


def best_round(curve: np.ndarray, *, higher_is_better: bool, patience: int) -> int:
    """1-based round of the best value, scanning until ``patience`` rounds bring no strict improvement."""
    values = np.asarray(curve, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("curve must be a non-empty 1-D array of validation scores, one per round")
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    best, best_value = 0, values[0]
    for i in range(1, values.size):
        value = values[i]
        if value > best_value if higher_is_better else value < best_value:
            best, best_value = i, value
        elif i - best >= patience:
            break
    return best + 1


def validation_curve(booster: lgb.Booster, x: np.ndarray, y: np.ndarray, slates: Slates | None) -> np.ndarray:
    """The validation metric after every round: log loss for a binary model, mean NDCG@5 for a ranker
    (``slates`` given). Raw scores are summed tree by tree, so each round costs one tree's predict."""
    rounds = booster.current_iteration()
    raw = np.zeros(len(x), dtype=np.float64)
    curve = np.empty(rounds, dtype=np.float64)
    for i in range(rounds):
        raw += booster.predict(x, start_iteration=i, num_iteration=1, raw_score=True, num_threads=1)
        if slates is None:
            curve[i] = log_loss(y, 1.0 / (1.0 + np.exp(-raw)), labels=[0, 1])
        else:
            curve[i] = float(np.nanmean(per_slate_ndcg(y, raw, slates, _RANK_AT)))
    return curve


def _why_not(config: LightGBMConfig, y: np.ndarray, validation: np.ndarray, ranker: bool) -> str | None:
    """Why the rounds cannot be chosen on this split (then ``n_estimators`` are fit), or None."""
    if config.early_stopping_rounds == 0:
        return "early_stopping_rounds is 0"
    parts = {"earlier": y[~validation], "validation": y[validation]}
    for part, labels in parts.items():
        if labels.size == 0:
            return f"no {part} part of the training rows (too few drops or sessions to hold some out)"
        if ranker and not (labels > 0).any():
            return f"no relevant item in the {part} part"
        if not ranker and np.unique(labels).size < 2:
            return f"a single label class in the {part} part"
    return None


def fit_with_rounds(model: Any, x: np.ndarray, y: np.ndarray, spec: FeatureSpec, names: tuple[str, ...],
                    config: LightGBMConfig, *, validation: np.ndarray, group_ids: np.ndarray | None = None,
                    lightgbm_fit: LightGBMFit | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit a LightGBM ``model`` with its rounds chosen on the ``validation`` rows, then refit them on all
    rows; any other family is fit as it is (it has no rounds: nothing to record).

    ``group_ids``: the slate of every row, for a ranker. Returns the fitted model and what to record
    about the choice (``rounds``, ``rounds_rule`` and, when validated, the best validation value)."""
    if not isinstance(model, lgb.LGBMModel):
        return fit_model(model, x, y, spec, names, lightgbm_fit=lightgbm_fit), {}
    ranker = group_ids is not None
    validation = np.asarray(validation, dtype=bool)

    def sizes(rows: np.ndarray | None = None) -> np.ndarray | None:
        if group_ids is None:
            return None
        return Slates.from_group_ids(group_ids if rows is None else group_ids[rows]).sizes

    reason = _why_not(config, y, validation, ranker)
    if reason is not None:
        fitted = fit_model(model, x, y, spec, names, group=sizes(), lightgbm_fit=lightgbm_fit)
        return fitted, {"rounds": config.n_estimators, "rounds_rule": f"n_estimators: {reason}"}
    earlier = ~validation
    probe = fit_model(clone(model), x[earlier], y[earlier], spec, names, group=sizes(earlier),
                      lightgbm_fit=lightgbm_fit)
    slates = Slates.from_group_ids(group_ids[validation]) if group_ids is not None else None
    curve = validation_curve(probe.booster_, x[validation], y[validation], slates)
    rounds = best_round(curve, higher_is_better=ranker, patience=config.early_stopping_rounds)
    final = fit_model(clone(model).set_params(n_estimators=rounds), x, y, spec, names, group=sizes(),
                      lightgbm_fit=lightgbm_fit)
    metric = f"ndcg_at_{_RANK_AT}" if ranker else "logloss"
    return final, {"rounds": rounds, "rounds_rule": "early_stopping",
                   f"validation_{metric}": round(float(curve[rounds - 1]), 6),
                   "validation_rows": int(validation.sum())}
