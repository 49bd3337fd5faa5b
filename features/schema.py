"""Event schema v1: the contract between event producers and ``carryon ingest``.

One record per event. Common fields are required on every record; each type adds its
own required and optional fields (DESIGN.md, "Contracts"). Pure Python: the edge
imports it to log decisions in the same schema.

    >>> EVENT_TYPES["cta_impression"].required
    ('variant', 'propensity')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SCHEMA_VERSION = 1

COMMON_FIELDS: tuple[str, ...] = (
    "event_id",
    "ts",
    "creator_id",
    "drop_id",
    "session_id",
    "viewer_id",
    "type",
)

# Field name -> kind. Kinds: "str", "ts" (ISO 8601 with offset, or a Parquet
# timestamp), "float", "int", "bool".
FIELD_KINDS: dict[str, str] = {
    "event_id": "str",
    "ts": "ts",
    "creator_id": "str",
    "drop_id": "str",
    "session_id": "str",
    "viewer_id": "str",
    "type": "str",
    "device": "str",
    "channel": "str",
    "local_pickup": "bool",
    "drop_started_at": "ts",
    "variant": "str",
    "propensity": "float",
    "bonus_id": "str",
    "slate_id": "str",
    "position": "int",
    "amount": "float",
    "currency": "str",
    "purpose": "str",
    "action": "str",
}

TYPE_FIELDS: tuple[str, ...] = tuple(f for f in FIELD_KINDS if f not in COMMON_FIELDS)


@dataclass(frozen=True)
class EventType:
    """Fields an event type requires and may carry beyond the common ones."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


EVENT_TYPES: dict[str, EventType] = {
    "join": EventType(("device", "channel", "drop_started_at"), ("local_pickup",)),
    "leave": EventType(),
    "chat": EventType(),
    "reaction": EventType(),
    "cta_impression": EventType(("variant", "propensity")),
    "cta_click": EventType(("variant",)),
    "enroll": EventType(("amount",), ("currency", "variant")),
    "bonus_impression": EventType(("bonus_id", "slate_id", "position", "propensity")),
    "bonus_claim": EventType(("bonus_id", "slate_id")),
    "pickup_select": EventType(("bonus_id",)),
    "consent": EventType(("purpose", "action")),
}

CHANNELS: tuple[str, ...] = ("stream", "popup")
DEVICES: tuple[str, ...] = ("phone", "desktop", "tv")
CONSENT_PURPOSES: tuple[str, ...] = ("personalization", "analytics")
CONSENT_ACTIONS: tuple[str, ...] = ("grant", "withdraw")

# Limits that keep one hostile record from costing more than a record's worth.
MAX_ID_CHARS = 128
MAX_STRING_CHARS = 256


def ts_to_us(value: str | datetime | int) -> int:
    """Convert a timestamp (ISO 8601 with offset, aware datetime, or µs) to UTC µs."""
    if isinstance(value, bool):
        raise TypeError(f"timestamp must be str, datetime or int, got {value!r}")
    if isinstance(value, int):
        return value
    if type(value) is str:
        # Hot path (the edge parses every event's ts): Python >= 3.11 reads a trailing "Z" itself.
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return (parsed - _EPOCH) // _ONE_US
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        value = datetime.fromisoformat(text)
    if not isinstance(value, datetime):
        raise TypeError(f"timestamp must be str, datetime or int, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no UTC offset; add 'Z' or '+00:00'")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_iso(us: int) -> str:
    """Format UTC microseconds as ISO 8601 with a ``Z`` suffix."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
