"""``carryon ingest``: raw events to clean, consented, pseudonymized events.

Reads JSONL or Parquet event files (schema v1), quarantines every bad record with a
reason, drops exact duplicates, applies the consent ledger (DESIGN.md, "Consent"),
replaces viewer and session ids with keyed hashes and writes
``<out_dir>/events/part=NN/data.parquet`` plus a quarantine JSONL, atomically.

    >>> key = resolve_key(params.ingest, Path("."), os.environ)
    >>> report = ingest([Path("data/raw")], Path("data/clean"), Path("data/raw/quarantine.jsonl"),
    ...                 params.ingest, params.consent, key=key)
    >>> report.records_read == report.clean + report.quarantined + report.duplicates \\
    ...     + report.excluded_no_consent
    True
"""

from features.ingest._keys import Pseudonymizer, PseudonymKey, resolve_key
from features.ingest._report import IngestReport
from features.ingest._run import ingest

__all__ = ["IngestReport", "PseudonymKey", "Pseudonymizer", "ingest", "resolve_key"]
