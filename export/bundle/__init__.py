"""Signed bundles (build side): one creator's models, catalog, spec and golden vectors, signed and packed.

    >>> key = resolve_signing_key(None, os.environ, params.bundle.signing_key_file, Path("."))
    >>> result = build_bundle(client, alias="champion", creator=None, export_dir=Path("data/export"), ...)
    >>> result["tar"]  # 'out/<creator>/<version>.tar'

``generate_keys`` makes a creator's EC P-256 key pair. The device side (``edge/verify.py``,
``edge/golden.py``) checks what this package writes and imports none of it.
"""

from export.bundle._build import build_bundle
from export.bundle._keys import SigningKey, SigningKeyError, generate_keys, key_id, resolve_signing_key
from export.bundle._models import BundleBuildError

__all__ = ["BundleBuildError", "SigningKey", "SigningKeyError", "build_bundle", "generate_keys", "key_id",
           "resolve_signing_key"]
