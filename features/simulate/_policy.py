"""The logging policies: how the platform picked what a viewer saw, with propensities.

CTA: a softmax over a creator's playbook heuristic, mixed with 10 % uniform, so every
variant has a propensity > 0. Bonus slates: Plackett–Luce over a heuristic score; the
propensity of a slot is the sequential choice probability of its bonus at that
position. Viewers without personalization consent get the creator's defaults
(propensity 1).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from features.simulate._world import Creator
from features.simulate.response import (
    CHANNEL_VOCAB,
    DEVICE_VOCAB,
    KIND_VOCAB,
    SLATE_SIZE,
    STYLE_VOCAB,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

UNIFORM_MIX = 0.15
TEMPERATURE = 1.0


def _signals(ctx: dict[str, F32]) -> dict[str, F64]:
    device = ctx["device"].astype(np.float64)
    return {
        "phone": (device == DEVICE_VOCAB.index("phone")).astype(np.float64),
        "tv": (device == DEVICE_VOCAB.index("tv")).astype(np.float64),
        "popup": (ctx["channel"] == CHANNEL_VOCAB.index("popup")).astype(np.float64),
        "late": (ctx["minute_in_drop"] >= 20).astype(np.float64),
        "returning": (ctx["hist_sessions"] >= 1).astype(np.float64),
        "pickup": ctx["local_pickup"].astype(np.float64),
    }


def cta_probs(creator: Creator, ctx: dict[str, F32]) -> F64:
    """(rows x variants) probabilities of the logging policy."""
    s = _signals(ctx)
    style = creator.variant_style[None, :]
    urgency = creator.variant_urgency[None, :]
    is_default = (np.arange(style.shape[1]) == creator.default_variant)[None, :]
    score = (
        creator.style_pref[None, :] + 0.5 * is_default + 1.0 * creator.variant_discount[None, :]
        + urgency * (0.6 * s["phone"][:, None] - 0.3 * s["tv"][:, None])
        + (style == STYLE_VOCAB.index("pickup")) * (1.0 * s["popup"][:, None])
        + (style == STYLE_VOCAB.index("scarcity")) * (0.8 * s["late"][:, None])
        + (style == STYLE_VOCAB.index("loyalty")) * (0.6 * s["returning"][:, None])
    ) / TEMPERATURE
    score = score - score.max(axis=1, keepdims=True)
    soft = np.exp(score)
    soft /= soft.sum(axis=1, keepdims=True)
    out: F64 = (1.0 - UNIFORM_MIX) * soft + UNIFORM_MIX / style.shape[1]
    return out


def choose(rng: np.random.Generator, probs: F64) -> I64:
    """One draw per row from its categorical distribution (inverse CDF)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    pick: I64 = np.minimum((cdf <= u).sum(axis=1), probs.shape[1] - 1).astype(np.int64)
    return pick


def slate_scores(creator: Creator, ctx: dict[str, F32]) -> F64:
    """(rows x bonuses) Plackett–Luce log-weights of the logging policy."""
    s = _signals(ctx)
    rp = creator.bonus_requires_pickup[None, :]
    live_qa = (creator.bonus_kind == KIND_VOCAB.index("live_qa"))[None, :]
    out: F64 = (
        creator.kind_pref[None, :] + 0.3 * np.log(creator.bonus_value)[None, :]
        + rp * (1.2 * (s["popup"] * s["pickup"])[:, None] - 0.8 * (1.0 - s["pickup"])[:, None])
        + live_qa * 0.5 * s["returning"][:, None]
    )
    return out


def sample_slates(rng: np.random.Generator, scores: F64) -> tuple[I64, F64]:
    """Plackett–Luce slates of SLATE_SIZE: chosen bonuses and each slot's propensity."""
    n, k = scores.shape[0], SLATE_SIZE
    keys = scores + rng.gumbel(size=scores.shape)
    chosen = np.argsort(-keys, axis=1, kind="stable")[:, :k].astype(np.int64)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    picked = np.take_along_axis(weights, chosen, axis=1)
    remaining = weights.sum(axis=1, keepdims=True) - np.cumsum(picked, axis=1) + picked
    prop: F64 = np.clip(picked / remaining, 1e-12, 1.0)
    assert prop.shape == (n, k)
    return chosen, prop


def default_slates(creator: Creator, n: int) -> tuple[I64, F64]:
    """The creator's default bonus order for viewers without personalization consent."""
    order = np.asarray(creator.default_bonus_order[:SLATE_SIZE], np.int64)
    return np.tile(order, (n, 1)), np.ones((n, SLATE_SIZE), np.float64)
