"""Create the repository and its role keys; rotate role keys by TUF root rotation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from export.publish import _keys, _store
from export.publish._commit import RepoConfig, commit, expiries_of, iso, locked, sign, utc_now, versions_of
from export.publish._errors import PublishError, RoleKeyError
from export.publish._tuf import Metadata, MetaFile, Root, Signer, Snapshot, Targets, Timestamp
from features._fsutil import atomic_dir


def init_repository(repo: RepoConfig, now: datetime | None = None) -> dict[str, Any]:
    """Generate one key per role and write version 1 of every role's metadata."""
    moment = utc_now(now)
    _keys.check_apart(repo.repository, repo.keys_dir)
    folder = _store.metadata_dir(repo.repository)
    if folder.exists():
        hint = ("it is already a TUF repository; see `carryon repo status`" if _store.is_initialized(repo.repository)
                else "remove the leftover metadata/ directory first")
        raise PublishError(f"{repo.repository}: metadata/ exists; {hint}")
    existing = [str(_keys.key_file(repo.keys_dir, role)) for role in _keys.ROLES
                if _keys.key_file(repo.keys_dir, role).exists()]
    if existing:
        raise RoleKeyError(f"{', '.join(existing)}: role keys exist but {repo.repository} has no repository; "
                           "move them away (or choose another --keys) before `carryon repo init`")
    _keys.make_keys_dir(repo.keys_dir)
    signers = {role: _keys.generate(repo.keys_dir, role) for role in _keys.ROLES}
    life = repo.expiries.lifetime
    root = Metadata(Root(expires=moment + life(Root.type), consistent_snapshot=True))
    for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)
    targets = Metadata(Targets(expires=moment + life(Targets.type)))
    sign(root, [signers["root"]])
    sign(targets, [signers["targets"]])
    # All of metadata/ appears at once: a repository is either absent or whole.
    with atomic_dir(folder) as tmp:
        targets_meta = _write(tmp, targets)
        snapshot = Metadata(Snapshot(expires=moment + life(Snapshot.type), meta={"targets.json": targets_meta}))
        sign(snapshot, [signers["snapshot"]])
        timestamp = Metadata(Timestamp(expires=moment + life(Timestamp.type), snapshot_meta=_write(tmp, snapshot)))
        sign(timestamp, [signers["timestamp"]])
        root_bytes = _store.serialize(root)
        (tmp / "1.root.json").write_bytes(root_bytes)
        (tmp / "root.json").write_bytes(root_bytes)
        (tmp / "timestamp.json").write_bytes(_store.serialize(timestamp))
    _store.targets_dir(repo.repository).mkdir(exist_ok=True)
    state = _store.load_state(repo.repository)
    return {"repository": str(repo.repository), "keys_dir": str(repo.keys_dir), "root": "metadata/root.json",
            "key_ids": {role: s.public_key.keyid for role, s in signers.items()},
            "versions": versions_of(state), "expires": expiries_of(state)}


def _write(folder: Path, md: Metadata[Targets] | Metadata[Snapshot]) -> MetaFile:
    data = _store.serialize(md)
    (folder / f"{md.signed.version}.{md.signed.type}.json").write_bytes(data)
    return _store.meta_file(md.signed.version, data)


def rotate_root(repo: RepoConfig, roles: tuple[str, ...] = ("root",), now: datetime | None = None) -> dict[str, Any]:
    """Publish root N+1 with new keys for ``roles``, signed by the old and the new root keys.

    With no roles it re-signs root with a fresh expiry. Roles whose keys change get new metadata
    versions signed by their new key; retired private keys move to ``<keys_dir>/retired/``.
    """
    unknown = sorted(set(roles) - set(_keys.ROLES))
    if unknown:
        raise PublishError(f"--role {unknown[0]!r} is not a TUF role; choose from {', '.join(_keys.ROLES)}")
    rotated = tuple(role for role in _keys.ROLES if role in roles)
    moment = utc_now(now)
    with locked(repo):
        state = _store.load_state(repo.repository)
        online = ("targets", "snapshot", "timestamp")
        signers: dict[str, list[Signer]] = {
            role: [_keys.load(repo.keys_dir, role, state.root.signed)] for role in ("root", *online)}
        root = state.root.signed
        for role in rotated:
            new = _keys.generate(repo.keys_dir, role, pending=True)
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(new.public_key, role)
            signers[role] = [new] if role != "root" else [*signers["root"], new]
        _store.renew(root, repo.expiries, moment)
        sign(state.root, signers["root"])
        commit(repo, state, signers, moment, targets="targets" in rotated,
               snapshot=any(role in rotated for role in online), root=True)
        retired = [name for role in rotated if (name := _keys.promote(repo.keys_dir, role)) is not None]
        return {"root_version": root.version, "rotated": list(rotated),
                "key_ids": {role: root.roles[role].keyids[0] for role in _keys.ROLES},
                "retired_key_files": [f"retired/{name}" for name in retired],
                "versions": versions_of(state), "expires": expiries_of(state), "root_expires": iso(root.expires)}
