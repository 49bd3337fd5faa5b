"""The feature spec: one definition of every model input, shared by batch and edge.

The spec names each feature, its order, dtype, default and (for categories) its
vocabulary; its ``hash`` identifies the version in models and bundles. Batch tables
and the online runtime both encode values through :meth:`Feature.encode`, so the
two cannot disagree on an encoding. Pure Python (json, hashlib): edge-safe.

    >>> spec = FeatureSpec.load("data/features/feature_spec.json")
    >>> spec.cta_names[:2]
    ('minute_in_drop', 'secs_since_join')
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.errors import InputUnreadableError

SPEC_VERSION = 1
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Feature:
    """One model input. Every value reaches a model as float32."""

    name: str
    dtype: str  # "float32" (counts, seconds, flags) or "category" (code into categories)
    default: float
    categories: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "category"):
            raise ValueError(f"feature {self.name}: dtype must be float32 or category, got {self.dtype!r}")
        if self.dtype == "category" and (not self.categories or self.categories[0] != UNKNOWN):
            raise ValueError(f"feature {self.name}: categories must start with {UNKNOWN!r}")

    def encode(self, value: object) -> float:
        """Encode a raw value: categories to their code (unknown -> 0), None -> default."""
        if value is None:
            return self.default
        if self.dtype == "category":
            try:
                return float(self.categories.index(str(value)))
            except ValueError:
                return 0.0
        number = float(value)  # type: ignore[arg-type]
        return self.default if math.isnan(number) else number

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "default": self.default}
        if self.categories:
            out["categories"] = list(self.categories)
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Feature:
        return cls(
            name=str(raw["name"]),
            dtype=str(raw["dtype"]),
            default=float(raw["default"]),
            categories=tuple(raw.get("categories", ())),
            description=str(raw.get("description", "")),
        )


def _num(name: str, description: str, default: float = 0.0) -> Feature:
    return Feature(name, "float32", default, description=description)


def _cat(name: str, values: Iterable[str], description: str) -> Feature:
    vocab = sorted({v for v in values if v != UNKNOWN})
    return Feature(name, "category", 0.0, (UNKNOWN, *vocab), description)


# The vocabularies every catalog draws from: CTA variant styles and micro-bonus kinds.
CTA_STYLES: tuple[str, ...] = (
    "plain", "scarcity", "social_proof", "loyalty", "bundle", "pickup", "discount", "countdown",
)
BONUS_KINDS: tuple[str, ...] = (
    "workbook", "template_pack", "live_qa", "physical_kit", "discount_code", "community_pass",
)

# In-session counters: feature name -> the event type it counts. Only events strictly
# before the decision time count (point in time).
SESSION_COUNTS: dict[str, str] = {
    "sess_chats": "chat",
    "sess_reactions": "reaction",
    "sess_cta_impressions": "cta_impression",
    "sess_cta_clicks": "cta_click",
    "sess_bonus_claims": "bonus_claim",
    "sess_enrolls": "enroll",
}
# Per-viewer history with this creator, summed over sessions that ended before the
# current session began: feature name -> the event type it counts ("session" counts
# the sessions themselves).
HISTORY_COUNTS: dict[str, str] = {
    "hist_sessions": "session",
    "hist_enrolls": "enroll",
    "hist_claims": "bonus_claim",
    "hist_cta_clicks": "cta_click",
}


def context_features(niches: Iterable[str]) -> tuple[Feature, ...]:
    """The context features, in model order; ``niches`` is the creators' niche vocabulary."""
    return (
        _num("minute_in_drop", "minutes since the drop started (from the join event)", -1.0),
        _num("secs_since_join", "seconds since this viewer joined the drop", -1.0),
        _num("secs_since_last_chat", "seconds since the viewer's last chat message", -1.0),
        *(_num(n, f"{t} events earlier in this session") for n, t in SESSION_COUNTS.items()),
        _num("sess_slates", "bonus slates shown earlier in this session"),
        *(_num(n, f"{t} count over earlier sessions with this creator")
          for n, t in HISTORY_COUNTS.items()),
        _num("local_pickup", "1 if the viewer can pick up locally"),
        _cat("device", ("phone", "desktop", "tv"), "device of the session"),
        _cat("channel", ("stream", "popup"), "channel of the drop"),
        _cat("creator_niche", niches, "the creator's niche (creator attribute)"),
    )


def cta_item_features(styles: Iterable[str]) -> tuple[Feature, ...]:
    return (
        _cat("variant_style", styles, "the CTA variant's style"),
        _num("variant_discount", "discount the CTA offers, 0..1"),
        _num("variant_urgency", "1 if the CTA uses a countdown"),
    )


def bonus_item_features(kinds: Iterable[str]) -> tuple[Feature, ...]:
    return (
        _cat("bonus_kind", kinds, "kind of micro-bonus"),
        _num("bonus_value", "the bonus's list value in the creator's currency"),
        _num("bonus_requires_pickup", "1 if the bonus is collected at a pop-up"),
    )


@dataclass(frozen=True)
class FeatureSpec:
    """Names, order, dtypes and defaults of every model input, with a version hash."""

    context: tuple[Feature, ...]
    cta_item: tuple[Feature, ...]
    bonus_item: tuple[Feature, ...]
    label_window_s: float
    version: int = SPEC_VERSION
    _by_name: dict[str, Feature] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        features = (*self.context, *self.cta_item, *self.bonus_item)
        by_name = {f.name: f for f in features}
        if len(by_name) != len(features):
            raise ValueError("feature names must be unique across context and item features")
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def build(
        cls, niches: Iterable[str], styles: Iterable[str], kinds: Iterable[str],
        label_window_s: float,
    ) -> FeatureSpec:
        return cls(
            context_features(niches), cta_item_features(styles), bonus_item_features(kinds),
            float(label_window_s),
        )

    def __getitem__(self, name: str) -> Feature:
        return self._by_name[name]

    @property
    def context_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.context)

    @property
    def cta_names(self) -> tuple[str, ...]:
        """Inputs of a CTA model: context then variant features."""
        return self.context_names + tuple(f.name for f in self.cta_item)

    @property
    def bonus_names(self) -> tuple[str, ...]:
        """Inputs of a bonus ranker: context then bonus features."""
        return self.context_names + tuple(f.name for f in self.bonus_item)

    def _body(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "label_window_s": self.label_window_s,
            "context": [f.to_dict() for f in self.context],
            "cta_item": [f.to_dict() for f in self.cta_item],
            "bonus_item": [f.to_dict() for f in self.bonus_item],
        }

    @property
    def hash(self) -> str:
        """sha256 over the canonical JSON of the spec (names, order, dtypes, vocabularies)."""
        canonical = json.dumps(self._body(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({**self._body(), "hash": self.hash}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> FeatureSpec:
        try:
            raw = json.loads(text)
            spec = cls(
                context=tuple(Feature.from_dict(f) for f in raw["context"]),
                cta_item=tuple(Feature.from_dict(f) for f in raw["cta_item"]),
                bonus_item=tuple(Feature.from_dict(f) for f in raw["bonus_item"]),
                label_window_s=float(raw["label_window_s"]),
                version=int(raw["version"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise InputUnreadableError(f"{source}: not a valid feature spec ({e})") from e
        if "hash" in raw and raw["hash"] != spec.hash:
            raise InputUnreadableError(
                f"{source}: hash {raw['hash'][:12]}… does not match its content "
                f"({spec.hash[:12]}…); the file was edited, rebuild it with `carryon features`"
            )
        return spec

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InputUnreadableError(
                f"{path}: cannot read the feature spec ({e.strerror}); run `carryon features`"
            ) from e
        return cls.from_json(text, str(path))

    def encode_row(self, names: Sequence[str], raw: dict[str, object]) -> list[float]:
        """Encode ``raw`` values for ``names`` in order (missing -> default)."""
        return [self._by_name[n].encode(raw.get(n)) for n in names]
