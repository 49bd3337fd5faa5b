"""Creator signing keys: EC P-256 pairs in PEM, their key id, and which key a build signs with.

A private key file is created with mode 0600 from the first byte (``os.open(..., 0o600)``,
exclusive), optionally encrypted with a passphrase; the public half sits beside it as
``<name>.pub``. The key id is the first 16 hex characters of sha256 over the public key's
DER SubjectPublicKeyInfo. Resolution for a build: ``--key`` path, env ``CARRYON_SIGNING_KEY``
(path; passphrase in ``CARRYON_SIGNING_KEY_PASSPHRASE``), ``bundle.signing_key_file``, else a
local development key made once under ``.carryon/keys/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from features._fsutil import atomic_write_bytes
from features.errors import ConfigError

ENV_KEY: Final = "CARRYON_SIGNING_KEY"  # path of the creator's private key (PEM)
ENV_PASSPHRASE: Final = "CARRYON_SIGNING_KEY_PASSPHRASE"
DEV_KEY_DIR: Final = Path(".carryon") / "keys"
DEV_KEY_NAME: Final = "dev-signing"
KEY_ID_CHARS: Final = 16


class SigningKeyError(ConfigError):
    """A signing key cannot be made, read or used."""


@dataclass(frozen=True)
class SigningKey:
    """A private key file to sign with, and what the manifest says about it; ``repr`` hides the passphrase."""

    path: Path
    passphrase: bytes | None = field(repr=False)
    key_id: str
    public_pem: bytes
    dev_key: bool
    source: str  # "--key", "env ...", "bundle.signing_key_file" or "dev-key"
    display: str  # the path as the user gave it (the dev key: relative to the project)


def key_id(public_pem: bytes) -> str:
    """First 16 hex chars of sha256 over the public key's DER SubjectPublicKeyInfo."""
    public = serialization.load_pem_public_key(public_pem)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:KEY_ID_CHARS]


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively with mode 0600 (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits; be explicit anyway
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def generate_keys(out_dir: Path, name: str, passphrase: bytes | None = None) -> dict[str, Any]:
    """Write ``<out_dir>/<name>.pem`` (0600) and ``<name>.pub``; refuse to overwrite either."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name must be a plain file name, got {name!r}")
    private_path, public_path = out_dir / f"{name}.pem", out_dir / f"{name}.pub"
    existing = [p for p in (private_path, public_path) if p.exists() or p.is_symlink()]
    if existing:
        raise SigningKeyError(
            f"{existing[0]}: a key already exists; refusing to overwrite it (a lost signing key cannot be "
            "recovered); pass another --name or --out"
        )
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        _write_private(private_path, private_pem)
    except FileExistsError:
        raise SigningKeyError(f"{private_path}: a key already exists; refusing to overwrite it") from None
    atomic_write_bytes(public_path, public_pem)
    return {"private_key": str(private_path), "public_key": str(public_path), "key_id": key_id(public_pem),
            "encrypted": bool(passphrase), "curve": "P-256"}


def load_signing_key(path: Path, passphrase: bytes | None, *, source: str, dev_key: bool = False,
                     display: str | None = None) -> SigningKey:
    """Read and check a private key (EC P-256 PEM); errors name the file and the fix."""
    shown = display if display is not None else str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SigningKeyError(
            f"signing key {shown} (from {source}): cannot read it ({e.strerror}); fix the path"
        ) from e
    try:
        private = serialization.load_pem_private_key(data, passphrase)
    except TypeError as e:
        fix = f"it is encrypted: set {ENV_PASSPHRASE}" if passphrase is None else (
            f"it is not encrypted: unset {ENV_PASSPHRASE}")
        raise SigningKeyError(f"signing key {shown} (from {source}): {fix}") from e
    except ValueError as e:
        raise SigningKeyError(
            f"signing key {shown} (from {source}): not a PEM private key or wrong passphrase ({e}); "
            "make one with `carryon keys generate`"
        ) from e
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise SigningKeyError(f"signing key {shown} (from {source}): must be an EC P-256 key; make one with "
                        "`carryon keys generate`")
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(path, passphrase, key_id(public_pem), public_pem, dev_key, source, shown)


def _dev_key(project_dir: Path) -> SigningKey:
    folder = project_dir / DEV_KEY_DIR
    path = folder / f"{DEV_KEY_NAME}.pem"
    if not path.exists():
        with contextlib.suppress(SigningKeyError):  # another build made it first: use that one
            generate_keys(folder, DEV_KEY_NAME)
    return load_signing_key(path, None, source="dev-key", dev_key=True,
                            display=(DEV_KEY_DIR / f"{DEV_KEY_NAME}.pem").as_posix())


def resolve_signing_key(explicit: Path | None, environ: Mapping[str, str], configured: str | None,
                        project_dir: Path) -> SigningKey:
    """The key a build signs with: ``explicit``, env, params, else the local development key."""
    passphrase = environ.get(ENV_PASSPHRASE)
    secret = passphrase.encode("utf-8") if passphrase else None
    if explicit is not None:
        return load_signing_key(explicit, secret, source="--key")
    if environ.get(ENV_KEY):
        return load_signing_key(Path(environ[ENV_KEY]), secret, source=f"env {ENV_KEY}")
    if configured:
        path = Path(configured) if Path(configured).is_absolute() else project_dir / configured
        return load_signing_key(path, secret, source="bundle.signing_key_file", display=configured)
    return _dev_key(project_dir)
