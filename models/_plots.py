"""Figures logged with every candidate: ROC, calibration, policy lift, NDCG by k."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: training runs headless

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve


def roc(y: np.ndarray, prob: np.ndarray, title: str) -> Figure:
    fpr, tpr, _ = roc_curve(y, prob)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def calibration(y: np.ndarray, prob: np.ndarray, bins: int, title: str) -> Figure:
    which = np.minimum((prob * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    used = counts > 0
    observed = np.bincount(which, weights=y, minlength=bins)[used] / counts[used]
    predicted = np.bincount(which, weights=prob, minlength=bins)[used] / counts[used]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title)
    hi = float(max(predicted.max(), observed.max(), 0.05)) * 1.1
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def estimates(named: dict[str, tuple[float, float, float]], reference: float | None, title: str,
              ylabel: str) -> Figure:
    """Point estimates with intervals (value, low, high), and a reference line."""
    labels = list(named)
    values = np.array([named[k][0] for k in labels])
    low = values - np.array([named[k][1] for k in labels])
    high = np.array([named[k][2] for k in labels]) - values
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(labels, values, yerr=[low, high], capsize=6, color="#4a7ab7")
    if reference is not None:
        ax.axhline(reference, color="#c0504d", linestyle="--", label="logged policy")
        ax.legend(loc="lower right")
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig


def ndcg_by_k(curves: dict[str, list[float]], title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    ax.set(xlabel="k", ylabel="NDCG@k", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def close(figures: dict[str, Figure]) -> None:
    for fig in figures.values():
        plt.close(fig)
