"""The repository on disk: load the published state, write a new one so readers never see half of it.

Layout (consistent snapshots, servable by any static HTTP server):
``metadata/N.root.json``, ``metadata/root.json`` (the newest root, for bootstrapping nodes),
``metadata/N.targets.json``, ``metadata/N.snapshot.json``, ``metadata/timestamp.json`` and
``targets/<dir>/<sha256>.<name>``. The published state is what ``timestamp.json`` points at; files a
failed publish left behind are unreferenced and overwritten by the next one. ``timestamp.json`` is
always written last.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from tuf.api.exceptions import RepositoryError
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from export.publish._errors import PublishError, RepoNotInitializedError
from export.publish._tuf import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from features._fsutil import atomic_write_bytes


@dataclass(frozen=True)
class Expiries:
    """How long each role's metadata stays valid once signed."""

    root_days: float
    targets_days: float
    snapshot_days: float
    timestamp_hours: float

    def lifetime(self, role: str) -> timedelta:
        if role == Timestamp.type:
            return timedelta(hours=self.timestamp_hours)
        days = {Root.type: self.root_days, Targets.type: self.targets_days, Snapshot.type: self.snapshot_days}
        return timedelta(days=days[role])


@dataclass
class State:
    """The published metadata of every top-level role."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]


def metadata_dir(repo_dir: Path) -> Path:
    return repo_dir / "metadata"


def targets_dir(repo_dir: Path) -> Path:
    return repo_dir / "targets"


def is_initialized(repo_dir: Path) -> bool:
    return (metadata_dir(repo_dir) / "1.root.json").is_file()


def not_initialized(repo_dir: Path) -> RepoNotInitializedError:
    return RepoNotInitializedError(
        f"{repo_dir}: no TUF repository here (metadata/1.root.json is missing); "
        f"create it with: carryon repo init --repo {repo_dir}")


def _read(path: Path, kind: type[Root] | type[Targets] | type[Snapshot] | type[Timestamp]) -> Metadata:
    try:
        md = Metadata.from_bytes(path.read_bytes())
    except OSError as e:
        raise PublishError(f"{path}: cannot read repository metadata ({e.strerror}); the repository is damaged, "
                           "restore it from a backup") from e
    except (DeserializationError, RepositoryError, ValueError) as e:
        raise PublishError(f"{path}: not valid TUF metadata ({e}); restore it from a backup") from e
    if not isinstance(md.signed, kind):
        raise PublishError(f"{path}: expected {kind.type} metadata, got {md.signed.type}")
    return md


def newest_root_version(repo_dir: Path) -> int:
    folder = metadata_dir(repo_dir)
    version = 0
    while (folder / f"{version + 1}.root.json").is_file():
        version += 1
    return version


def load_state(repo_dir: Path) -> State:
    """Read the state ``timestamp.json`` publishes (and the newest root)."""
    if not is_initialized(repo_dir):
        raise not_initialized(repo_dir)
    folder = metadata_dir(repo_dir)
    root = _read(folder / f"{newest_root_version(repo_dir)}.root.json", Root)
    timestamp = _read(folder / "timestamp.json", Timestamp)
    snapshot = _read(folder / f"{timestamp.signed.snapshot_meta.version}.snapshot.json", Snapshot)
    targets_meta = snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise PublishError(f"{folder}: snapshot version {snapshot.signed.version} lists no targets.json; "
                           "restore the repository from a backup")
    targets = _read(folder / f"{targets_meta.version}.targets.json", Targets)
    return State(root=root, targets=targets, snapshot=snapshot, timestamp=timestamp)


def serialize(md: Metadata) -> bytes:
    return md.to_bytes(JSONSerializer(compact=False)) + b"\n"


def renew(signed: Root | Targets | Snapshot | Timestamp, expiries: Expiries, now: datetime) -> None:
    """Next version, expiring one lifetime after ``now``."""
    signed.version += 1
    signed.expires = now + expiries.lifetime(signed.type)


def write_root(repo_dir: Path, root: Metadata[Root]) -> None:
    data = serialize(root)
    folder = metadata_dir(repo_dir)
    atomic_write_bytes(folder / f"{root.signed.version}.root.json", data)
    atomic_write_bytes(folder / "root.json", data)


def write_versioned(repo_dir: Path, md: Metadata[Targets] | Metadata[Snapshot]) -> MetaFile:
    """Write ``N.<role>.json``; return the MetaFile that describes it (version, length, sha256)."""
    data = serialize(md)
    atomic_write_bytes(metadata_dir(repo_dir) / f"{md.signed.version}.{md.signed.type}.json", data)
    return meta_file(md.signed.version, data)


def meta_file(version: int, data: bytes) -> MetaFile:
    """How snapshot and timestamp describe a metadata file: version, length and sha256 (no endless data)."""
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def write_timestamp(repo_dir: Path, md: Metadata[Timestamp]) -> None:
    """The last write of every change: from here on readers see the new state."""
    atomic_write_bytes(metadata_dir(repo_dir) / "timestamp.json", serialize(md))


def target_file_path(repo_dir: Path, name: str, sha256: str) -> Path:
    """Where a consistent-snapshot client fetches target ``name``: ``targets/<dir>/<sha256>.<basename>``."""
    folder, _, base = name.rpartition("/")
    return targets_dir(repo_dir) / folder / f"{sha256}.{base}"
