"""Sign and write a new repository state in the one safe order: targets, snapshot, root, timestamp last."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from export.publish import _keys, _store
from export.publish._errors import RoleKeyError
from export.publish._store import Expiries, State
from export.publish._tuf import Metadata, Signer


@dataclass(frozen=True)
class RepoConfig:
    """Where the repository and its role keys live, and how long each role's metadata stays valid."""

    repository: Path
    keys_dir: Path
    expiries: Expiries


@contextlib.contextmanager
def locked(repo: RepoConfig) -> Iterator[None]:
    """Serialize changes: a scheduled refresh racing a publish would otherwise drop the publish."""
    if not _store.is_initialized(repo.repository):
        raise _store.not_initialized(repo.repository)
    _keys.check_apart(repo.repository, repo.keys_dir)
    if not repo.keys_dir.is_dir():
        raise RoleKeyError(f"{repo.keys_dir}: the role keys directory is missing; restore it from your key backup "
                           "(or give --keys)")
    fd = os.open(repo.keys_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def utc_now(now: datetime | None) -> datetime:
    value = now or datetime.now(UTC)
    if value.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got {value!r}")
    return value.astimezone(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(md: Metadata, signers: list[Signer]) -> None:
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)


def load_signers(repo: RepoConfig, state: State, roles: tuple[str, ...]) -> dict[str, list[Signer]]:
    return {role: [_keys.load(repo.keys_dir, role, state.root.signed)] for role in roles}


def commit(repo: RepoConfig, state: State, signers: dict[str, list[Signer]], now: datetime, *,
           targets: bool = False, snapshot: bool = False, root: bool = False) -> None:
    """Write the next versions of the roles asked for, then always a new timestamp.

    Versioned files go first: until ``timestamp.json`` is replaced nothing refers to them, so a
    failure midway leaves the previous state published and whole.
    """
    if targets:
        _store.renew(state.targets.signed, repo.expiries, now)
        sign(state.targets, signers["targets"])
        state.snapshot.signed.meta["targets.json"] = _store.write_versioned(repo.repository, state.targets)
        snapshot = True
    if snapshot:
        _store.renew(state.snapshot.signed, repo.expiries, now)
        sign(state.snapshot, signers["snapshot"])
        state.timestamp.signed.snapshot_meta = _store.write_versioned(repo.repository, state.snapshot)
    if root:
        _store.write_root(repo.repository, state.root)
    _store.renew(state.timestamp.signed, repo.expiries, now)
    sign(state.timestamp, signers["timestamp"])
    _store.write_timestamp(repo.repository, state.timestamp)


def expiries_of(state: State) -> dict[str, str]:
    return {md.signed.type: iso(md.signed.expires)
            for md in (state.root, state.targets, state.snapshot, state.timestamp)}


def versions_of(state: State) -> dict[str, int]:
    return {md.signed.type: md.signed.version
            for md in (state.root, state.targets, state.snapshot, state.timestamp)}
