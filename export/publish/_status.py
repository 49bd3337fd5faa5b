"""What the repository publishes, read without any key: versions, expiries, bundles per creator."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from export.publish import _store
from export.publish._commit import expiries_of, utc_now, versions_of
from export.publish._targets import creator_versions, read_revocations


def repository_status(repo_dir: Path, now: datetime | None = None) -> dict[str, Any]:
    """Versions and expiries of each role, expired roles, bundle versions per creator, revoked creator keys."""
    moment = utc_now(now)
    state = _store.load_state(repo_dir)
    roles = (state.root, state.targets, state.snapshot, state.timestamp)
    root = state.root.signed
    return {
        "repository": str(repo_dir),
        "versions": versions_of(state),
        "expires": expiries_of(state),
        "expired": [md.signed.type for md in roles if md.signed.is_expired(moment)],
        "key_ids": {role: list(root.roles[role].keyids) for role in sorted(root.roles)},
        "creators": {creator: {"newest": versions[-1], "versions": versions}
                     for creator, versions in sorted(creator_versions(state.targets.signed).items())},
        "revoked_keys": read_revocations(repo_dir, state.targets.signed),
    }


def newest_bundle_version(repo_dir: Path, creator_id: str) -> int:
    """The newest bundle version published for ``creator_id``: 0 when none (or no repository yet)."""
    if not _store.is_initialized(repo_dir):
        return 0
    versions = creator_versions(_store.load_state(repo_dir).targets.signed).get(creator_id, [])
    return versions[-1] if versions else 0
