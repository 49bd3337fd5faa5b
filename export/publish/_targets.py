"""The targets this repository publishes: creators' bundle tars and the creator-key revocation list."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from export.publish import _store
from export.publish._commit import RepoConfig, commit, iso, load_signers, locked, utc_now
from export.publish._errors import BundleRefusedError, PublishError
from export.publish._manifest import read_bundle_info
from export.publish._tuf import TargetFile, Targets
from features._fsutil import atomic_write_bytes

REVOCATIONS = "revocations.json"
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def creator_versions(targets: Targets) -> dict[str, list[int]]:
    """Bundle versions per creator, ascending, from the targets' custom fields."""
    found: dict[str, list[int]] = {}
    for target in targets.targets.values():
        custom = target.custom
        if isinstance(custom, dict) and isinstance(custom.get("creator"), str):
            found.setdefault(custom["creator"], []).append(int(custom["bundle_version"]))
    return {creator: sorted(versions) for creator, versions in found.items()}


def _add_target(repo_dir: Path, name: str, data: bytes, custom: dict[str, Any] | None) -> TargetFile:
    """Store ``data`` where consistent-snapshot clients look for it; return its TargetFile."""
    sha256 = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(_store.target_file_path(repo_dir, name, sha256), data)
    return TargetFile(len(data), {"sha256": sha256}, name, {"custom": custom} if custom is not None else None)


def publish_bundle(repo: RepoConfig, bundle_tar: Path, force: bool = False,
                   now: datetime | None = None) -> dict[str, Any]:
    """Add a champion bundle tar as target ``<creator>/<version>.tar``; refuse non-champions unless ``force``."""
    moment = utc_now(now)
    with locked(repo):
        state = _store.load_state(repo.repository)
        try:
            data = bundle_tar.read_bytes()  # once: what is hashed is what is checked and what is stored
        except OSError as e:
            raise BundleRefusedError(f"{bundle_tar}: cannot read the bundle tar ({e.strerror})") from e
        info = read_bundle_info(data, str(bundle_tar))
        reason = info.not_champion_reason()
        if reason is not None and not force:
            raise BundleRefusedError(f"{bundle_tar}: not published: {reason}; only champion bundles ship "
                                     "(carryon bundle build --alias champion), or pass --force")
        newest = max(creator_versions(state.targets.signed).get(info.creator_id, [0]))
        if info.bundle_version <= newest:
            raise BundleRefusedError(
                f"{bundle_tar}: bundle_version {info.bundle_version} of creator {info.creator_id!r} is not newer than "
                f"the published version {newest}; rebuild the bundle as version {newest + 1} or later "
                "(a rollback is an older champion rebuilt as a new version)")
        signers = load_signers(repo, state, ("targets", "snapshot", "timestamp"))
        name = f"{info.creator_id}/{info.bundle_version}.tar"
        target = _add_target(repo.repository, name, data,
                             {"creator": info.creator_id, "bundle_version": info.bundle_version})
        state.targets.signed.targets[name] = target
        commit(repo, state, signers, moment, targets=True)
        return {"target": name, "creator": info.creator_id, "bundle_version": info.bundle_version,
                "previous_version": newest or None, "personalization": info.personalization,
                "forced": reason is not None, "not_champion_reason": reason, "length": target.length,
                "sha256": target.hashes["sha256"], "targets_version": state.targets.signed.version,
                "snapshot_version": state.snapshot.signed.version, "timestamp_version": state.timestamp.signed.version,
                "timestamp_expires": iso(state.timestamp.signed.expires)}


def read_revocations(repo_dir: Path, targets: Targets) -> list[dict[str, str]]:
    """The published revocation list (empty when none was published)."""
    target = targets.targets.get(REVOCATIONS)
    if target is None:
        return []
    path = _store.target_file_path(repo_dir, REVOCATIONS, target.hashes["sha256"])
    try:
        data = path.read_bytes()
        target.verify_length_and_hashes(data)
        revoked = json.loads(data)["revoked"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PublishError(f"{path}: the published revocation list is unreadable or altered ({e}); "
                           "restore the repository from a backup") from e
    return list(revoked)


def revoke_creator_key(repo: RepoConfig, key_id: str, reason: str, now: datetime | None = None) -> dict[str, Any]:
    """Publish ``revocations.json`` with ``key_id`` added, so nodes drop that creator key on their next refresh."""
    if not _KEY_ID.match(key_id):
        raise PublishError(f"key id {key_id!r} must be 16 lowercase hex characters (the bundle manifest's "
                           "signing.key_id, as `carryon keys` prints it)")
    if not reason.strip():
        raise PublishError("--reason must say why the key is revoked (it reaches every node)")
    moment = utc_now(now)
    with locked(repo):
        state = _store.load_state(repo.repository)
        revoked = read_revocations(repo.repository, state.targets.signed)
        if any(entry.get("key_id") == key_id for entry in revoked):
            return {"key_id": key_id, "already_revoked": True, "revoked": revoked,
                    "targets_version": state.targets.signed.version}
        signers = load_signers(repo, state, ("targets", "snapshot", "timestamp"))
        revoked.append({"key_id": key_id, "reason": reason.strip(), "revoked_at": iso(moment)})
        body = json.dumps({"schema": 1, "revoked": revoked}, indent=2, sort_keys=True).encode() + b"\n"
        state.targets.signed.targets[REVOCATIONS] = _add_target(repo.repository, REVOCATIONS, body, None)
        commit(repo, state, signers, moment, targets=True)
        return {"key_id": key_id, "already_revoked": False, "revoked": revoked,
                "targets_version": state.targets.signed.version}


def _near_expiry(signed: Any, lifetime_s: float, now: datetime) -> bool:
    return bool((signed.expires - now).total_seconds() < lifetime_s / 2)


def refresh(repo: RepoConfig, now: datetime | None = None) -> dict[str, Any]:
    """Re-sign the timestamp (and snapshot or targets past half their lifetime) so nodes never freeze.

    Uses only the online role keys; the root key is not needed, so a root nearing expiry is reported
    (``root_renewal_due``) for ``carryon repo rotate-root --keep-keys`` rather than renewed here.
    """
    moment = utc_now(now)
    with locked(repo):
        state = _store.load_state(repo.repository)
        lifetimes = {role: repo.expiries.lifetime(role).total_seconds() for role in ("root", "targets", "snapshot")}
        renew_targets = _near_expiry(state.targets.signed, lifetimes["targets"], moment)
        renew_snapshot = renew_targets or _near_expiry(state.snapshot.signed, lifetimes["snapshot"], moment)
        roles = ("targets",) * renew_targets + ("snapshot",) * renew_snapshot + ("timestamp",)
        signers = load_signers(repo, state, roles)
        commit(repo, state, signers, moment, targets=renew_targets, snapshot=renew_snapshot)
        return {"resigned": list(roles), "timestamp_version": state.timestamp.signed.version,
                "timestamp_expires": iso(state.timestamp.signed.expires),
                "snapshot_expires": iso(state.snapshot.signed.expires),
                "targets_expires": iso(state.targets.signed.expires),
                "root_expires": iso(state.root.signed.expires),
                "root_renewal_due": _near_expiry(state.root.signed, lifetimes["root"], moment)}
