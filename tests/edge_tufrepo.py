"""A small TUF repository for edge client tests, written with python-tuf's Metadata API.

Consistent snapshots: ``metadata/<v>.root.json``, ``<v>.snapshot.json``, ``<v>.targets.json``,
``timestamp.json``; targets at ``targets/<dir>/<sha256>.<name>``. ``publish()`` bumps every role and signs.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "timestamp", "snapshot", "targets")


def _in(days: float) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


class TufRepo:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.metadata_dir = root / "metadata"
        self.targets_dir = root / "targets"
        self.metadata_dir.mkdir(parents=True)
        self.targets_dir.mkdir(parents=True)
        self.signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
        self.root = Root(expires=_in(365), consistent_snapshot=True)
        for role, signer in self.signers.items():
            self.root.add_key(signer.public_key, role)
        self.targets = Targets(expires=_in(30))
        self.snapshot = Snapshot(expires=_in(7))
        self.timestamp = Timestamp(expires=_in(1))
        self.targets.version = self.snapshot.version = self.timestamp.version = 0
        self._write_root()

    def _sign(self, signed: Any, role: str) -> bytes:
        md = Metadata(signed)
        md.sign(self.signers[role])
        if role == "root":
            for other in getattr(self, "_extra_root_signers", []):
                md.sign(other, append=True)
        return md.to_bytes(JSONSerializer(compact=False))

    def _write_root(self) -> None:
        data = self._sign(self.root, "root")
        (self.metadata_dir / f"{self.root.version}.root.json").write_bytes(data)
        (self.metadata_dir / "root.json").write_bytes(data)

    @property
    def root_bytes(self) -> bytes:
        return (self.metadata_dir / "1.root.json").read_bytes()

    def add_target(self, name: str, data: bytes, custom: dict[str, Any] | None = None) -> TargetFile:
        info = TargetFile.from_data(name, data, ["sha256"])
        if custom is not None:
            info.unrecognized_fields["custom"] = custom
        self.targets.targets[name] = info
        folder, _, base = name.rpartition("/")
        path = self.targets_dir / folder / f"{info.hashes['sha256']}.{base}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return info

    def target_file(self, name: str) -> Path:
        info = self.targets.targets[name]
        folder, _, base = name.rpartition("/")
        return self.targets_dir / folder / f"{info.hashes['sha256']}.{base}"

    def add_bundle(self, creator: str, version: int, data: bytes) -> TargetFile:
        return self.add_target(f"{creator}/{version}.tar", data, {"creator": creator, "bundle_version": version})

    def remove_target(self, name: str) -> None:
        del self.targets.targets[name]

    def publish(self, timestamp_expires: datetime | None = None) -> None:
        """A new release: targets, snapshot and timestamp each one version up, signed."""
        self.targets.version += 1
        (self.metadata_dir / f"{self.targets.version}.targets.json").write_bytes(self._sign(self.targets, "targets"))
        self.snapshot.meta["targets.json"] = MetaFile(version=self.targets.version)
        self.snapshot.version += 1
        (self.metadata_dir / f"{self.snapshot.version}.snapshot.json").write_bytes(
            self._sign(self.snapshot, "snapshot"))
        self.timestamp.snapshot_meta = MetaFile(version=self.snapshot.version)
        self.timestamp.version += 1
        self.timestamp.expires = timestamp_expires or _in(1)
        (self.metadata_dir / "timestamp.json").write_bytes(self._sign(self.timestamp, "timestamp"))

    def rotate_root_key(self, role: str) -> None:
        """Root version + 1 with a new key for ``role``, signed by the old and the new root keys."""
        old = self.signers[role]
        new = CryptoSigner.generate_ed25519()
        self.root.revoke_key(old.public_key.keyid, role)
        self.root.add_key(new.public_key, role)
        self.root.version += 1
        self._extra_root_signers = [old] if role == "root" else []
        self.signers[role] = new
        self._write_root()
        self._extra_root_signers = []


def bundle_tar(creator: str, version: int, key_id: str, files: dict[str, bytes] | None = None,
               extra_manifest: dict[str, Any] | None = None) -> bytes:
    """A small bundle tar (contract A layout, not really signed: tests pair it with a fake verifier)."""
    files = dict(files if files is not None else {
        "models/cta.onnx": b"cta-model-" + str(version).encode(),
        "golden.json": b'{"schema": 1, "atol": 1e-5, "cases": []}',
    })
    manifest = {"schema": 1, "creator_id": creator, "bundle_version": version, "personalization": True,
                "signing": {"key_id": key_id, "dev_key": True},
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                **(extra_manifest or {})}
    files["manifest.json"] = json.dumps(manifest).encode()
    files["model.sig"] = b"fake-signature"
    return make_tar(files)


def make_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
