"""python-tuf and securesystemslib names used here, imported in one place.

Both packages re-export these names without ``__all__``, which mypy's strict mode flags; the
ignores live here only (drop them if pyproject sets ``implicit_reexport`` for those packages).
"""

from securesystemslib.signer import CryptoSigner, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

__all__ = ["CryptoSigner", "MetaFile", "Metadata", "Root", "Signer", "Snapshot", "TargetFile", "Targets", "Timestamp"]
