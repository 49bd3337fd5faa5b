"""Logged-bandit import: an external log of shown actions and rewards, as clean model input.

Reads one CSV or Parquet table in the documented format (notes/bandit_log.md, README):
``timestamp``, ``session_key``, ``ctx_<name>`` context columns, ``action``, optional
``position``, ``reward``, ``propensity`` and optionally a consent column. The consent
basis must be declared (a consent column, or a stated basis recorded in the lineage).
Bad rows go to the quarantine (raw zone) with a reason, rows without consent are
excluded and counted, session keys are replaced by the keyed hash of ingest, and
``out_dir/bandit.parquet`` plus ``out_dir/bandit_spec.json`` are written atomically.

    >>> key = resolve_key(params.ingest, Path("."), os.environ)
    >>> report = import_bandit_log(Path("log.csv"), Path("data/bandit"), Path("data/raw/bandit_quarantine.jsonl"),
    ...                            key=key, consent_column=None, consent_basis="contract: platform ToS 4.2")
    >>> report.records_read == report.clean + report.quarantined + report.excluded_no_consent
    True
"""

from __future__ import annotations

from pathlib import Path

from features.bandit._report import BanditImportReport
from features.bandit._run import run
from features.bandit._spec import LOG_FILE, SPEC_FILE, BanditSpec, ConsentBasis
from features.ingest import PseudonymKey

__all__ = ["LOG_FILE", "SPEC_FILE", "BanditImportReport", "BanditSpec", "ConsentBasis", "import_bandit_log"]


def import_bandit_log(
    source: Path,
    out_dir: Path,
    quarantine_path: Path,
    *,
    key: PseudonymKey,
    consent_column: str | None,
    consent_basis: str | None,
    reuse_spec: Path | None = None,
) -> BanditImportReport:
    """Import one logged-bandit table; exactly one of ``consent_column``/``consent_basis`` must be given.

    ``reuse_spec`` (a ``bandit_spec.json``, e.g. the one a model was trained with) makes
    the import encode exactly as that spec does: its vocabularies, defaults and action
    list; rows whose action it does not know are quarantined (``unknown_action``).
    """
    return run(source, out_dir, quarantine_path, key=key, consent_column=consent_column,
               consent_basis=consent_basis, reuse_spec=reuse_spec)
