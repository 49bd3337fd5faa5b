"""The pseudonymization key: where it comes from, and the keyed hash it drives.

Resolution order: env ``CARRYON_PSEUDONYM_KEY`` (hex), env ``CARRYON_PSEUDONYM_KEY_FILE``,
``ingest.pseudonym_key_file`` in params, else a local development key made once under
``.carryon/`` in the project. Key files hold the key as hex text. The key itself is
never printed; reports carry ``key_id``, a short keyed fingerprint.

    >>> key = resolve_key(config, Path("."), os.environ)
    >>> Pseudonymizer(key).many(["viewer-1"])  # ['<20 hex chars>']
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from features.config import IngestConfig
from features.errors import ConfigError

ENV_KEY = "CARRYON_PSEUDONYM_KEY"
ENV_KEY_FILE = "CARRYON_PSEUDONYM_KEY_FILE"
DEV_KEY_PATH = Path(".carryon") / "pseudonym.key"
MIN_KEY_BYTES = 32
PSEUDONYM_CHARS = 20
_FIX = (
    "put at least 64 hex characters there, e.g. the output of "
    "`python -c \"import secrets; print(secrets.token_hex(32))\"`"
)

KeySource = Literal["env", "file", "dev-key"]


@dataclass(frozen=True)
class PseudonymKey:
    """A secret HMAC key and where it came from; ``repr`` never shows the key."""

    key: bytes = field(repr=False)
    source: KeySource
    path: str | None = None  # the dev key's path relative to the project; None otherwise

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"pseudonym key must be >= {MIN_KEY_BYTES} bytes, got {len(self.key)}")

    @property
    def key_id(self) -> str:
        """A short, non-secret fingerprint that identifies the key in reports."""
        return hmac.new(self.key, b"carryon-key-id", hashlib.sha256).hexdigest()[:12]


class Pseudonymizer:
    """HMAC-SHA256(key, id) as hex, first 20 chars; hashes each distinct id once per call."""

    def __init__(self, key: PseudonymKey) -> None:
        self._key = key
        secret = key.key if len(key.key) <= 64 else hashlib.sha256(key.key).digest()  # RFC 2104
        block = secret.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __reduce__(self) -> tuple[type[Pseudonymizer], tuple[PseudonymKey]]:
        # Pickled as its key (hash states do not pickle): the Dask engine sends it to workers.
        return Pseudonymizer, (self._key,)

    def one(self, raw_id: str) -> str:
        inner = self._inner.copy()
        inner.update(raw_id.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:PSEUDONYM_CHARS]

    def many(self, raw_ids: Iterable[str]) -> list[str]:
        """Pseudonyms of ``raw_ids`` in order (the caller passes distinct ids)."""
        one = self.one
        return [one(raw_id) for raw_id in raw_ids]


def resolve_key(config: IngestConfig, project_dir: Path, environ: Mapping[str, str]) -> PseudonymKey:
    """Find the pseudonymization key (env, key file, params, else the local dev key)."""
    if environ.get(ENV_KEY):
        return PseudonymKey(_parse_hex(environ[ENV_KEY], f"environment variable {ENV_KEY}"), "env")
    if environ.get(ENV_KEY_FILE):
        return _from_file(project_dir, environ[ENV_KEY_FILE], f"{ENV_KEY_FILE}")
    if config.pseudonym_key_file:
        return _from_file(project_dir, config.pseudonym_key_file, "ingest.pseudonym_key_file")
    return _dev_key(project_dir)


def _parse_hex(text: str, where: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise ConfigError(f"{where}: the pseudonym key is not hex text; {_FIX}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where}: the pseudonym key is {len(key)} bytes, it must be >= {MIN_KEY_BYTES}; {_FIX}"
        )
    return key


def _from_file(project_dir: Path, name: str, setting: str) -> PseudonymKey:
    path = Path(name) if Path(name).is_absolute() else project_dir / name
    where = f"pseudonym key file {name} (from {setting})"
    try:
        text = path.read_text(encoding="ascii")
    except OSError as e:
        raise ConfigError(f"{where}: cannot read it ({e.strerror}); fix the path or its permissions") from e
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the pseudonym key is not hex text; {_FIX}") from None
    return PseudonymKey(_parse_hex(text, where), "file")


def _dev_key(project_dir: Path) -> PseudonymKey:
    """Read the local development key, creating it (0600, exclusively) on first use."""
    path = project_dir / DEV_KEY_PATH
    where = f"development pseudonym key {DEV_KEY_PATH.as_posix()}"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pseudonym.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_bytes(MIN_KEY_BYTES).hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            # link() fails if another run made the key first: then both use that one.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{where}: cannot read it ({e}); fix its permissions, or delete it to make a new "
            "one (every pseudonym changes then)"
        ) from e
    try:
        key = _parse_hex(text, where)
    except ConfigError as e:
        raise ConfigError(f"{e}; or delete it to make a new one (every pseudonym changes then)") from None
    return PseudonymKey(key, "dev-key", DEV_KEY_PATH.as_posix())
