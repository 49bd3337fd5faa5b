"""python-tuf's ``Updater`` with crash-safe persistence of trusted metadata, and the node's TUF bootstrap.

python-tuf writes metadata with a rename but no fsync and replaces ``root.json`` by unlink + symlink; here every
metadata file is written temp + fsync + rename + fsync of the directory, and the root symlink is switched with
``os.replace``, so a power cut leaves the previous or the new trusted metadata, never an empty or missing file.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from edge.client_errors import TrustError
from features._fsutil import atomic_write_bytes, fsync_dir

__all__ = ["SafeUpdater", "bootstrap_root", "open_updater"]


class SafeUpdater(Updater):
    """``Updater`` whose metadata writes survive a crash at any instant."""

    def _persist_file(self, filename: str, data: bytes) -> None:
        atomic_write_bytes(filename, data)

    def _update_root_symlink(self) -> None:
        link = os.path.join(self._dir, "root.json")
        target = os.path.join("root_history", f"{self._trusted_set.root.version}.root.json")
        try:
            if os.readlink(link) == target:
                return
        except OSError:
            pass
        tmp = os.path.join(self._dir, ".root.json.tmp")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        fsync_dir(self._dir)


def bootstrap_root(tuf_dir: Path, root_file: Path) -> dict[str, object]:
    """Check that ``root_file`` is a root signed by its own threshold of keys and make it the trusted root."""
    try:
        data = root_file.read_bytes()
    except OSError as e:
        raise TrustError(f"cannot read TUF root {root_file} ({e.strerror}); pass the repository's root.json") from None
    try:
        md = Metadata[Root].from_bytes(data)
        if not isinstance(md.signed, Root):
            raise TrustError(f"{root_file} is {md.signed.type} metadata, not root; pass the repository's root.json")
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except tuf_errors.UnsignedMetadataError as e:
        raise TrustError(f"{root_file} is not signed by its own root keys ({e}); get the root from its publisher") \
            from None
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as e:
        raise TrustError(f"{root_file} is not valid TUF root metadata ({e})") from None
    tuf_dir.mkdir(parents=True, exist_ok=True)
    SafeUpdater(str(tuf_dir), "http://127.0.0.1/unused/", bootstrap=data)
    return {"root_version": md.signed.version, "expires": md.signed.expires.isoformat(),
            "consistent_snapshot": md.signed.consistent_snapshot}


def open_updater(tuf_dir: Path, metadata_url: str, fetcher: FetcherInterface, config: UpdaterConfig,
                 now: datetime | None = None, target_dir: str | None = None,
                 target_base_url: str | None = None) -> SafeUpdater:
    """An updater trusting the node's newest root; ``now`` pins the time expiry is judged against."""
    try:
        root = (tuf_dir / "root.json").read_bytes()
    except OSError as e:
        raise TrustError(f"no trusted TUF root in {tuf_dir} ({e.strerror}); run: carryon edge init --root ROOT.json") \
            from None
    try:
        updater = SafeUpdater(str(tuf_dir), metadata_url, target_dir, target_base_url, fetcher, config, bootstrap=root)
    except tuf_errors.RepositoryError as e:
        raise TrustError(f"the trusted TUF root in {tuf_dir} is invalid ({e}); run carryon edge init again") from None
    if now is not None:
        # The one public knob python-tuf's own conformance client uses to pin the clock.
        updater._trusted_set.reference_time = now
    return updater
