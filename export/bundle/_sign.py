"""Sign a bundle directory with OpenSSF model signing (private-key mode), and pack it as a deterministic tar.

The signature covers every file: model-signing's default of ignoring git-related paths is
turned off (it would let an added ``.gitattributes`` pass), and only ``model.sig`` itself is
left out of the hashing. The tar is uncompressed, members at top level, regular files only,
sorted, with fixed mtime, owner and mode: the same directory always packs to the same bytes.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any, Final, cast

from features._fsutil import atomic_file

SIGNATURE: Final = "model.sig"
_MTIME: Final = 0
_MODE: Final = 0o644


def hashing_config() -> Any:
    """The hashing every carryon bundle is signed and verified with."""
    from model_signing import hashing

    config = hashing.Config()  # type: ignore[no-untyped-call]
    return config.set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False).set_allow_symlinks(False)


def sign_dir(bundle_dir: Path, private_key: Path, passphrase: bytes | None) -> None:
    """Write ``bundle_dir/model.sig`` over every other file of ``bundle_dir``."""
    from model_signing import signing

    # model-signing 1.1.1 annotates the password as str but hands it to cryptography, which wants bytes.
    config = signing.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_signer(private_key=private_key, password=cast(Any, passphrase))
    config.set_hashing_config(hashing_config()).sign(bundle_dir, bundle_dir / SIGNATURE)


def bundle_files(bundle_dir: Path) -> list[str]:
    """Every file of the bundle as a relative POSIX path, sorted."""
    return sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file())


def pack_tar(bundle_dir: Path, tar_path: Path) -> None:
    """Pack ``bundle_dir`` into an uncompressed, deterministic tar at ``tar_path`` (atomically)."""
    with atomic_file(tar_path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in bundle_files(bundle_dir):
            data = (bundle_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _MTIME, _MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
