"""The bandit import report: what was read, what became of every row, under which consent basis.

Counts add up: ``records_read == clean + quarantined + excluded_no_consent``. The source
appears by file name only, the pseudonymization key by its source and fingerprint only.
``to_dict()`` is what the CLI prints as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from features.bandit._spec import ConsentBasis

REPORT_VERSION = 1


@dataclass(frozen=True)
class BanditImportReport:
    """Outcome of one ``import_bandit_log`` run (frozen; ``to_dict`` for JSON)."""

    source: str  # file name
    format: str  # "csv" or "parquet"
    source_sha256: str
    records_read: int
    clean: int
    quarantined: int
    excluded_no_consent: int
    quarantine_reasons: Mapping[str, int]
    excluded_reasons: Mapping[str, int]  # no_consent (false), consent_missing (no value)
    blank_lines: int
    consent: ConsentBasis
    context_columns: Mapping[str, Mapping[str, Any]]  # per ctx column: kind, default/vocabulary size, counts
    ignored_columns: tuple[str, ...]  # columns outside the format: neither read nor written
    actions: tuple[str, ...]
    sessions: int
    spec_hash: str
    reused_spec: bool  # the encoding came from a given spec (evaluation of a model on a new log)
    pseudonym_key_source: str
    pseudonym_key_id: str
    seconds: float

    def __post_init__(self) -> None:
        total = self.clean + self.quarantined + self.excluded_no_consent
        if total != self.records_read:
            raise AssertionError(f"bandit import counts do not add up: {total} != {self.records_read} read")

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": REPORT_VERSION,
            "source": self.source,
            "format": self.format,
            "source_sha256": self.source_sha256,
            "records_read": self.records_read,
            "clean": self.clean,
            "quarantined": self.quarantined,
            "excluded_no_consent": self.excluded_no_consent,
            "quarantine_reasons": dict(self.quarantine_reasons),
            "excluded_reasons": dict(self.excluded_reasons),
            "blank_lines": self.blank_lines,
            "consent": self.consent.to_dict(),
            "context_columns": {k: dict(v) for k, v in self.context_columns.items()},
            "ignored_columns": list(self.ignored_columns),
            "actions": list(self.actions),
            "sessions": self.sessions,
            "spec_hash": self.spec_hash,
            "reused_spec": self.reused_spec,
            "pseudonym_key": {"source": self.pseudonym_key_source, "key_id": self.pseudonym_key_id},
            "seconds": round(self.seconds, 3),
        }
