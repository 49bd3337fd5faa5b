"""The ingest report: what was read, what became of every record, and under which key.

Counts add up: ``records_read == clean + quarantined + duplicates +
excluded_no_consent``. Input files appear by name only; the key by its source and
fingerprint only. ``to_dict()`` is what ``carryon ingest --json`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REPORT_VERSION = 1


@dataclass(frozen=True)
class ConsentSummary:
    snapshot: str | None  # ISO 8601 UTC; None when no valid event was read
    snapshot_id: str  # sha256 over the snapshot time and the sorted consented viewer_keys, hex[:16]
    consented_viewers: int
    excluded_viewers: int


@dataclass(frozen=True)
class KeySummary:
    source: str  # "env", "file" or "dev-key"
    key_id: str  # non-secret fingerprint of the key
    path: str | None  # the dev key's path relative to the project; None otherwise


@dataclass(frozen=True)
class IngestReport:
    """Outcome of one ``ingest`` run (frozen; ``to_dict`` for JSON)."""

    inputs: tuple[str, ...]
    skipped_inputs: tuple[str, ...]
    records_read: int
    clean: int
    quarantined: int
    duplicates: int
    excluded_no_consent: int
    quarantine_reasons: Mapping[str, int]
    excluded_reasons: Mapping[str, int]
    blank_lines: int
    extra_fields_ignored: int  # accepted records that carried fields outside their type's schema
    events_per_type: Mapping[str, int]
    consent: ConsentSummary
    pseudonym_key: KeySummary
    partitions: int
    seconds: float

    def __post_init__(self) -> None:
        total = self.clean + self.quarantined + self.duplicates + self.excluded_no_consent
        if total != self.records_read:
            raise AssertionError(f"ingest counts do not add up: {total} != {self.records_read} read")

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": REPORT_VERSION,
            "inputs": list(self.inputs),
            "skipped_inputs": list(self.skipped_inputs),
            "records_read": self.records_read,
            "clean": self.clean,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "excluded_no_consent": self.excluded_no_consent,
            "quarantine_reasons": dict(self.quarantine_reasons),
            "excluded_reasons": dict(self.excluded_reasons),
            "blank_lines": self.blank_lines,
            "extra_fields_ignored": self.extra_fields_ignored,
            "events_per_type": dict(self.events_per_type),
            "consent": {
                "snapshot": self.consent.snapshot,
                "snapshot_id": self.consent.snapshot_id,
                "consented_viewers": self.consent.consented_viewers,
                "excluded_viewers": self.consent.excluded_viewers,
            },
            "pseudonym_key": {
                "source": self.pseudonym_key.source,
                "key_id": self.pseudonym_key.key_id,
                "path": self.pseudonym_key.path,
            },
            "partitions": self.partitions,
            "seconds": round(self.seconds, 3),
        }
