"""Typed, frozen settings of the training stages; filled from params.yaml by pipeline.params."""

from __future__ import annotations

from dataclasses import dataclass, field

CTA_FAMILIES = ("logreg", "lightgbm", "mlp")
BONUS_FAMILIES = ("lambdarank", "pointwise")


@dataclass(frozen=True)
class LightGBMConfig:
    n_estimators: int = 200  # rounds at most
    early_stopping_rounds: int = 20  # 0: always n_estimators (see models.rounds)
    validation_fraction: float = 0.15  # share of each creator's latest training drops the rounds are chosen on
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (32, 16)
    alpha: float = 1e-4  # L2 penalty
    max_iter: int = 200  # epochs


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 7
    test_fraction: float = 0.2  # share of each creator's latest drops held out as the test set
    cta_families: tuple[str, ...] = CTA_FAMILIES
    bonus_families: tuple[str, ...] = BONUS_FAMILIES
    logreg_c: float = 1.0  # inverse L2 strength
    lightgbm: LightGBMConfig = field(default_factory=LightGBMConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)


@dataclass(frozen=True)
class EvalConfig:
    n_bootstrap: int = 500
    alpha: float = 0.05  # 1 - confidence level of every interval
    ece_bins: int = 10
