"""The simulator's ground truth: how likely a viewer clicks a CTA or claims a bonus.

The simulator draws every click and claim from these functions, so they are the truth
against which models and offline policy evaluation are checked. Inputs are the feature
columns by their spec names (``features.spec``), encoded as the batch tables hold them
(float32 values, categories as codes of the spec vocabularies); category columns may
also be given as raw strings ("phone", "popup", "countdown", ...). Arrays broadcast
against each other, so a ``(n, 1)`` context scores a ``(n, K)`` item table at once.
Pure numpy: usable from the models and in tests.

    >>> value = true_policy_value(context, variant_features(catalog, creator_ids), probs)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from features.spec import BONUS_KINDS, CTA_STYLES, bonus_item_features, context_features, cta_item_features

FloatArray = npt.NDArray[np.float64]

STYLES = CTA_STYLES
# Probability that a viewer looks at slate position 1..5 (the claim model's position bias).
POSITION_BIAS: tuple[float, ...] = (1.0, 0.72, 0.55, 0.43, 0.35)
SLATE_SIZE = len(POSITION_BIAS)

_CONTEXT = {f.name: f for f in context_features(())}
DEVICE_VOCAB: tuple[str, ...] = _CONTEXT["device"].categories
CHANNEL_VOCAB: tuple[str, ...] = _CONTEXT["channel"].categories
STYLE_VOCAB: tuple[str, ...] = cta_item_features(STYLES)[0].categories
KIND_VOCAB: tuple[str, ...] = bonus_item_features(BONUS_KINDS)[0].categories


def codes(values: npt.ArrayLike, vocab: Sequence[str]) -> FloatArray:
    """Category codes as float64: strings map to their index in ``vocab`` (unknown 0)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "USO":
        index = {v: float(i) for i, v in enumerate(vocab)}
        flat = [index.get(str(v), 0.0) for v in arr.ravel()]
        return np.asarray(flat, dtype=np.float64).reshape(arr.shape)
    return arr.astype(np.float64)


def _col(context: Mapping[str, Any], name: str) -> FloatArray:
    if name not in context:
        raise ValueError(
            f"context lacks the feature column {name!r}; pass the context features by "
            f"their spec names (features.spec.context_features)"
        )
    if name == "device":
        return codes(context[name], DEVICE_VOCAB)
    if name == "channel":
        return codes(context[name], CHANNEL_VOCAB)
    return np.asarray(context[name], dtype=np.float64)


class _Context:
    """The context signals the truth reacts to, as float64 arrays."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        device, channel = _col(context, "device"), _col(context, "channel")
        self.phone = (device == DEVICE_VOCAB.index("phone")).astype(np.float64)
        self.desktop = (device == DEVICE_VOCAB.index("desktop")).astype(np.float64)
        self.tv = (device == DEVICE_VOCAB.index("tv")).astype(np.float64)
        self.popup = (channel == CHANNEL_VOCAB.index("popup")).astype(np.float64)
        self.stream = (channel == CHANNEL_VOCAB.index("stream")).astype(np.float64)
        minute = _col(context, "minute_in_drop")
        self.late = np.clip((minute - 12.0) / 20.0, 0.0, 1.0)
        self.engaged = np.minimum(_col(context, "sess_chats"), 6.0) / 6.0
        hist_sessions = _col(context, "hist_sessions")
        self.returning = (hist_sessions >= 1).astype(np.float64)
        self.new = 1.0 - self.returning
        self.loyal = np.minimum(hist_sessions, 4.0) / 4.0
        self.enroller = (_col(context, "hist_enrolls") >= 1).astype(np.float64)
        self.claimer = (_col(context, "hist_claims") >= 1).astype(np.float64)
        self.pickup = np.clip(_col(context, "local_pickup"), 0.0, 1.0)
        self.impressions = np.minimum(_col(context, "sess_cta_impressions"), 5.0)


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


def _cta_logit(c: _Context, style: FloatArray, discount: FloatArray, urgency: FloatArray) -> FloatArray:
    base = -3.05 + 0.7 * c.engaged + 0.2 * c.returning - 0.1 * c.impressions
    item = 1.8 * discount + urgency * (0.5 * c.phone - 1.2 * c.tv - 0.2 * c.desktop + 0.4 * c.late)
    effects = {
        "scarcity": -0.9 + 1.9 * c.late,
        "social_proof": -0.2 + 0.8 * c.new - 0.9 * c.returning,
        "loyalty": -1.1 + 1.4 * c.returning + 0.4 * c.loyal,
        "bundle": -1.0 + 1.9 * c.enroller + 0.4 * c.engaged,
        "pickup": -1.5 + 1.5 * c.popup + 1.1 * c.pickup - 0.4 * c.stream,
        "discount": -0.5 + 0.5 * c.desktop,
        "countdown": -0.3 + 0.5 * c.phone - 0.6 * c.tv,
    }
    logit: FloatArray = base + item
    for name, effect in effects.items():
        logit = logit + np.where(style == STYLE_VOCAB.index(name), effect, 0.0)
    return logit


def true_click_prob(
    context: Mapping[str, Any], style: npt.ArrayLike, discount: npt.ArrayLike, urgency: npt.ArrayLike,
) -> FloatArray:
    """P(click within the label window | context, shown variant), vectorized over rows.

    ``context`` holds the context feature columns (minute_in_drop, sess_chats,
    sess_cta_impressions, hist_sessions, hist_enrolls, hist_claims, local_pickup, device,
    channel are read); ``style`` is the variant_style code or name, ``discount`` and
    ``urgency`` the variant's attributes.
    """
    c = _Context(context)
    logit = _cta_logit(
        c, codes(style, STYLE_VOCAB), np.asarray(discount, np.float64), np.asarray(urgency, np.float64),
    )
    return _sigmoid(logit)


def true_enroll_prob(context: Mapping[str, Any], discount: npt.ArrayLike) -> FloatArray:
    """P(enroll | clicked), vectorized over rows."""
    c = _Context(context)
    d = np.asarray(discount, np.float64)
    return _sigmoid(-0.9 + 2.0 * d + 0.8 * c.enroller + 0.3 * c.returning)


def true_claim_prob(
    context: Mapping[str, Any],
    kind: npt.ArrayLike,
    value: npt.ArrayLike,
    requires_pickup: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
) -> FloatArray:
    """P(claim | context, bonus), vectorized over rows.

    Without ``position`` it is the bonus's relevance (claim probability when the viewer
    looks at it); with ``position`` (1..5) it is multiplied by :data:`POSITION_BIAS`, the
    probability that the viewer looks at that slot.
    """
    c = _Context(context)
    k = codes(kind, KIND_VOCAB)
    v = np.maximum(np.asarray(value, np.float64), 1.0)
    rp = np.asarray(requires_pickup, np.float64)
    logit = -2.3 + 0.5 * c.engaged + 0.25 * np.log(v / 20.0)
    logit = logit + rp * (-1.8 * (1.0 - c.pickup) + 1.2 * c.pickup * c.popup + 0.3 * c.pickup * c.stream)
    effects = {
        "workbook": 0.2 * c.new,
        "template_pack": -0.6 + 1.3 * c.desktop - 0.6 * c.tv,
        "live_qa": -0.9 + 1.5 * c.returning + 0.4 * c.engaged,
        "physical_kit": -0.3 + 0.0 * c.new,
        "discount_code": -0.8 + 1.7 * c.late,
        "community_pass": -0.7 + 0.9 * c.engaged + 0.5 * c.claimer,
    }
    for name, effect in effects.items():
        logit = logit + np.where(k == KIND_VOCAB.index(name), effect, 0.0)
    prob = _sigmoid(logit)
    if position is None:
        return prob
    pos = np.asarray(position, dtype=np.int64)
    if np.any((pos < 1) | (pos > SLATE_SIZE)):
        raise ValueError(f"position must be in 1..{SLATE_SIZE}, got {pos.min()}..{pos.max()}")
    bias = np.asarray(POSITION_BIAS, dtype=np.float64)[pos - 1]
    out: FloatArray = prob * bias
    return out


def variant_features(catalog: Mapping[str, Any], creator_ids: Sequence[str]) -> dict[str, FloatArray]:
    """The (rows x 8) variant item features of each row's creator, in catalog order.

    Keys: ``variant_style`` (codes), ``variant_discount``, ``variant_urgency``.
    """
    by_creator = {c["creator_id"]: c for c in catalog["creators"]}
    tables: dict[str, FloatArray] = {}
    for cid in sorted(set(creator_ids)):
        if cid not in by_creator:
            raise ValueError(f"creator {cid!r} is not in the catalog; pass the simulator's catalog.json")
        variants = by_creator[cid]["variants"]
        tables[cid] = np.asarray(
            [[STYLE_VOCAB.index(v["style"]), v["discount"], v["urgency"]] for v in variants],
            dtype=np.float64,
        )
    widths = {t.shape[0] for t in tables.values()}
    if len(widths) > 1:
        raise ValueError(f"creators have different numbers of variants {sorted(widths)}")
    stacked = np.stack([tables[c] for c in creator_ids]) if creator_ids else np.zeros((0, 8, 3))
    return {
        "variant_style": stacked[:, :, 0],
        "variant_discount": stacked[:, :, 1],
        "variant_urgency": stacked[:, :, 2],
    }


def click_prob_table(context_rows: Mapping[str, Any], variants: Mapping[str, Any]) -> FloatArray:
    """(rows x K) true click probability of every variant of each row's creator."""
    style = np.asarray(variants["variant_style"])
    if style.ndim != 2:
        raise ValueError(f"variant_table arrays must be 2-D (rows x variants), got shape {style.shape}")
    ctx = {k: np.asarray(v)[:, None] for k, v in context_rows.items()}
    probs = true_click_prob(ctx, style, variants["variant_discount"], variants["variant_urgency"])
    return np.broadcast_to(probs, style.shape).astype(np.float64)


def true_policy_value(
    context_rows: Mapping[str, Any], variant_table: Mapping[str, Any], policy_probs: npt.ArrayLike,
) -> float:
    """Exact expected reward (click rate) of a CTA policy: mean_i sum_a pi(a|x_i) p(x_i, a).

    ``variant_table`` holds (rows x K) arrays ``variant_style``, ``variant_discount``,
    ``variant_urgency`` (see :func:`variant_features`); ``policy_probs`` (rows x K) the
    policy's action probabilities, each row summing to 1.
    """
    pi = np.asarray(policy_probs, dtype=np.float64)
    p = click_prob_table(context_rows, variant_table)
    if pi.shape != p.shape:
        raise ValueError(f"policy_probs has shape {pi.shape}, the variant table {p.shape}")
    if pi.shape[0] == 0:
        raise ValueError("true_policy_value needs at least one context row")
    if np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("policy_probs rows must be non-negative and sum to 1")
    return float(np.mean(np.sum(pi * p, axis=1)))
