"""The bandit spec: how one logged-bandit table is encoded, so evaluation encodes alike.

``bandit_spec.json`` names the context columns in name order (each a :class:`Feature`:
dtype, default, category vocabulary), the action list (the model's one-hot actions,
in order), the declared consent basis and the lineage of the import. ``hash`` covers
the encoding only (context features and actions): two imports with the same hash
feed a model the same columns with the same meaning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from features.errors import InputUnreadableError
from features.spec import Feature

SPEC_FILE = "bandit_spec.json"
LOG_FILE = "bandit.parquet"
SPEC_FORMAT = "carryon-bandit-spec"
SPEC_VERSION = 1
ACTION_PREFIX = "action="  # model feature name of an action's one-hot column


@dataclass(frozen=True)
class ConsentBasis:
    """How the log's consent was declared: a per-row column, or one basis for the whole log."""

    kind: Literal["column", "declared"]
    column: str | None = None  # kind "column": the boolean-like column
    basis: str | None = None  # kind "declared": the stated legal basis, recorded verbatim

    def describe(self) -> str:
        if self.kind == "column":
            return f"per-row consent column {self.column!r}"
        return f"declared: {self.basis}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "basis": self.basis}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ConsentBasis:
        kind = raw["kind"]
        if kind not in ("column", "declared"):
            raise ValueError(f"consent kind must be 'column' or 'declared', got {kind!r}")
        return cls(kind, raw.get("column"), raw.get("basis"))


@dataclass(frozen=True)
class BanditSpec:
    """Context features (in order), actions (in order), consent basis and lineage of a log."""

    context: tuple[Feature, ...]
    actions: tuple[str, ...]
    consent: ConsentBasis
    lineage: Mapping[str, Any] = field(default_factory=dict)  # source name and sha256, key id, counts
    stats: Mapping[str, Any] = field(default_factory=dict)  # per column: filled with default, mapped to unknown
    version: int = SPEC_VERSION

    @property
    def context_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.context)

    @property
    def action_names(self) -> tuple[str, ...]:
        """Model feature names of the one-hot action columns."""
        return tuple(ACTION_PREFIX + a for a in self.actions)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Model inputs in order: the context columns, then one column per action."""
        return self.context_names + self.action_names

    def model_features(self) -> tuple[Feature, ...]:
        """Every model input as a :class:`Feature` (actions are float32 0/1 flags)."""
        flags = tuple(Feature(n, "float32", 0.0, description="1 if this action was shown") for n in self.action_names)
        return self.context + flags

    def _encoding(self) -> dict[str, Any]:
        return {"version": self.version, "context": [f.to_dict() for f in self.context], "actions": list(self.actions)}

    @property
    def hash(self) -> str:
        """sha256 over the canonical JSON of the encoding (context features and actions)."""
        canonical = json.dumps(self._encoding(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        body = {"format": SPEC_FORMAT, **self._encoding(), "consent": self.consent.to_dict(),
                "lineage": dict(self.lineage), "stats": dict(self.stats), "hash": self.hash}
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> BanditSpec:
        try:
            raw = json.loads(text)
            if raw.get("format") != SPEC_FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, expected {SPEC_FORMAT!r}")
            spec = cls(
                context=tuple(Feature.from_dict(f) for f in raw["context"]),
                actions=tuple(str(a) for a in raw["actions"]),
                consent=ConsentBasis.from_dict(raw["consent"]),
                lineage=dict(raw.get("lineage", {})),
                stats=dict(raw.get("stats", {})),
                version=int(raw["version"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputUnreadableError(f"{source}: not a valid bandit spec ({e}); re-import the log") from e
        if spec.version != SPEC_VERSION:
            raise InputUnreadableError(f"{source}: bandit spec version {spec.version} is not supported "
                                       f"(expected {SPEC_VERSION}); re-import the log")
        if raw.get("hash") != spec.hash:
            raise InputUnreadableError(f"{source}: hash {str(raw.get('hash'))[:12]}… does not match its content "
                                       f"({spec.hash[:12]}…); the file was edited, re-import the log")
        return spec

    @classmethod
    def load(cls, path: Path) -> BanditSpec:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputUnreadableError(f"{path}: cannot read the bandit spec ({e}); import the log first") from e
        return cls.from_json(text, str(path))
