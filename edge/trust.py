"""The creator keys an edge node accepts (``trust.json``, contract B): add, revoke, list, merge revocations.

A key may be scoped to one creator (``--creator``); a revoked key id stays refused even if added again.
Every write is atomic (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.client_errors import TrustError
from edge.home import EdgeHome, check_creator, iso
from features._fsutil import atomic_write_text

__all__ = ["add_key", "key_id_of", "load_trust", "merge_revocations", "revoke_key", "trusted_keys_for"]

TRUST_SCHEMA = 1


def key_id_of(public_pem: bytes, source: str = "public key") -> str:
    """sha256 hex of the key's DER SubjectPublicKeyInfo, first 16 characters (the bundle's ``signing.key_id``)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError) as e:
        raise TrustError(f"{source} is not a PEM public key ({e}); pass the .pub file of the creator key") from None
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def load_trust(home: EdgeHome) -> dict[str, Any]:
    """``trust.json``, or an empty trust when it does not exist yet."""
    try:
        data = json.loads(home.trust_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"schema": TRUST_SCHEMA, "keys": {}, "revoked": []}
    except (OSError, ValueError) as e:
        raise TrustError(f"{home.trust_file} is unreadable ({e}); restore it or re-add the keys") from None
    if not (isinstance(data, dict) and isinstance(data.get("keys"), dict) and isinstance(data.get("revoked"), list)):
        raise TrustError(f"{home.trust_file}: fields 'keys' (object) and 'revoked' (list) are required")
    return data


def _save(home: EdgeHome, trust: dict[str, Any]) -> None:
    trust["schema"] = TRUST_SCHEMA
    trust["revoked"] = sorted(set(trust["revoked"]))
    atomic_write_text(home.trust_file, json.dumps(trust, indent=2, sort_keys=True) + "\n")


def add_key(home: EdgeHome, key_file: Path, creator: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Trust the public key in ``key_file`` (for every creator, or only ``creator``)."""
    try:
        pem = key_file.read_bytes()
    except OSError as e:
        raise TrustError(f"cannot read key file {key_file} ({e.strerror}); pass the creator's .pub file") from None
    key_id = key_id_of(pem, str(key_file))
    trust = load_trust(home)
    if key_id in trust["revoked"]:
        raise TrustError(f"key {key_id} ({key_file}) is revoked on this node; a revoked key cannot be trusted again")
    entry: dict[str, Any] = {"public_key_pem": pem.decode("ascii"), "added_at": iso(now or datetime.now(UTC))}
    if creator is not None:
        entry["creator"] = check_creator(creator)
    trust["keys"][key_id] = entry
    _save(home, trust)
    return {"key_id": key_id, **{k: v for k, v in entry.items() if k != "public_key_pem"}}


def revoke_key(home: EdgeHome, key_id: str) -> dict[str, Any]:
    """Refuse ``key_id`` from now on (it stays listed as revoked)."""
    if not key_id or any(c not in "0123456789abcdef" for c in key_id):
        raise TrustError(f"key id {key_id!r} must be lowercase hex, as `carryon edge trust list` shows it")
    trust = load_trust(home)
    known = key_id in trust["keys"]
    trust["revoked"].append(key_id)
    _save(home, trust)
    return {"key_id": key_id, "was_trusted": known}


def merge_revocations(home: EdgeHome, key_ids: list[str]) -> list[str]:
    """Add the repository's revoked key ids to ``trust.json``; return the ids that were new."""
    trust = load_trust(home)
    new = sorted(set(key_ids) - set(trust["revoked"]))
    if new:
        trust["revoked"].extend(new)
        _save(home, trust)
    return new


def trusted_keys_for(home: EdgeHome, creator: str) -> tuple[dict[str, bytes], set[str]]:
    """(key id -> public PEM) the creator's bundles may be signed with, and the revoked ids (already left out)."""
    trust = load_trust(home)
    revoked = set(trust["revoked"])
    keys = {key_id: entry["public_key_pem"].encode("ascii") for key_id, entry in trust["keys"].items()
            if key_id not in revoked and entry.get("creator") in (None, creator)}
    return keys, revoked
