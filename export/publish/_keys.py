"""Repository role keys: one ed25519 PEM file per role, mode 0600, in a directory apart from the repository.

A rotation writes the new key as ``<role>.pem.new`` before the new root is published and promotes it
afterwards; loading picks whichever file holds the key the current root names, so a rotation cut short
between the two steps still leaves a working repository.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from export.publish._errors import PublishError, RoleKeyError
from export.publish._tuf import CryptoSigner, Root
from features._fsutil import atomic_write_bytes, fsync_dir

ROLES = ("root", "targets", "snapshot", "timestamp")
_NEW = ".new"


def key_file(keys_dir: Path, role: str) -> Path:
    return keys_dir / f"{role}.pem"


def check_apart(repo_dir: Path, keys_dir: Path) -> None:
    """Refuse a keys directory inside the served repository (its private keys would be public)."""
    repo, keys = repo_dir.resolve(), keys_dir.resolve()
    if keys == repo or repo in keys.parents:
        raise PublishError(
            f"{keys_dir}: the role keys directory is inside the repository {repo_dir}, which is served to "
            "everyone; choose a keys directory outside it (publish.keys_dir in params.yaml or --keys)")


def make_keys_dir(keys_dir: Path) -> None:
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)


def generate(keys_dir: Path, role: str, pending: bool = False) -> CryptoSigner:
    """A new ed25519 key for ``role``, written 0600 (as ``<role>.pem.new`` when ``pending``)."""
    signer = CryptoSigner.generate_ed25519()
    path = key_file(keys_dir, role)
    atomic_write_bytes(path.with_name(path.name + _NEW) if pending else path, signer.private_bytes, mode=0o600)
    return signer


def _read(path: Path) -> CryptoSigner:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RoleKeyError(f"{path}: role key file is readable by others (mode {mode:04o}); run: chmod 600 {path}")
    try:
        private = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise RoleKeyError(f"{path}: not an unencrypted PEM private key ({e}); restore the role key file") from e
    if not isinstance(private, Ed25519PrivateKey):
        raise RoleKeyError(f"{path}: expected an ed25519 private key, got {type(private).__name__}")
    return CryptoSigner(private)


def load(keys_dir: Path, role: str, root: Root) -> CryptoSigner:
    """The signer for ``role`` whose key ``root`` names; finishes a rotation that stopped before promotion."""
    path = key_file(keys_dir, role)
    pending = path.with_name(path.name + _NEW)
    wanted = set(root.roles[role].keyids)
    found = False
    for candidate in (path, pending):
        if not candidate.is_file():
            continue
        found = True
        signer = _read(candidate)
        if signer.public_key.keyid in wanted:
            if candidate == pending:
                promote(keys_dir, role)
            return signer
    if not found:
        raise RoleKeyError(f"{path}: the {role} role key file is missing; restore it from your key backup "
                           f"(root version {root.version} names key {sorted(wanted)[0][:16]}...)")
    raise RoleKeyError(f"{path}: this {role} key is not the one root version {root.version} names "
                       f"({sorted(wanted)[0][:16]}...); restore the matching key file")


def promote(keys_dir: Path, role: str) -> str | None:
    """Make ``<role>.pem.new`` the role's key; move the old key to ``retired/``. Return the retired file name."""
    path = key_file(keys_dir, role)
    pending = path.with_name(path.name + _NEW)
    retired_name = None
    if path.is_file():
        old = _read(path)
        retired = keys_dir / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        retired_name = f"{role}.{old.public_key.keyid[:16]}.pem"
        os.replace(path, retired / retired_name)
    os.replace(pending, path)
    fsync_dir(keys_dir)
    return retired_name
