"""Safe extraction of a bundle tar: our own checks on every member first, then tarfile's ``data`` filter.

A member must be a regular file or a directory with a plain relative name (letters, digits, ``.``, ``_``,
``-`` per component; no absolute path, no ``..``, no empty or ``.`` component, no duplicates); links, devices
and fifos are refused, and so is a tar with too many members or too many bytes. Nothing is written unless
every member passes.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edge.client_errors import UnpackError

__all__ = ["UnpackLimits", "check_member_name", "safe_unpack"]

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class UnpackLimits:
    max_members: int = 64
    max_total_bytes: int = 512 * 1024 * 1024
    max_name_chars: int = 255


def check_member_name(name: str, limits: UnpackLimits = UnpackLimits()) -> str | None:
    """Why ``name`` must not be extracted, or None when it is a plain relative path."""
    if not name:
        return "empty name"
    if len(name) > limits.max_name_chars:
        return f"name longer than {limits.max_name_chars} characters"
    if name.startswith("/") or name.startswith("\\") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = name.rstrip("/").split("/") if name.endswith("/") else name.split("/")
    if any(part == ".." for part in parts):
        return "'..' in path"
    for part in parts:
        if not _COMPONENT.match(part):
            return f"path component {part!r} is not a plain name"
    return None


def _kind(member: tarfile.TarInfo) -> str | None:
    if member.isfile():
        return None if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else "sparse or contiguous file"
    if member.isdir():
        return None
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return "special file"


def _checked_members(tar: tarfile.TarFile, source: str, limits: UnpackLimits) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for member in tar:  # iterate, never getmembers(): a tar of a million entries stops at the cap
        if len(members) >= limits.max_members:
            raise UnpackError(f"{source}: more than {limits.max_members} members; a bundle has a handful")
        problem = check_member_name(member.name, limits) or _kind(member)
        if problem:
            raise UnpackError(f"{source}: member {member.name!r} refused ({problem})")
        name = member.name.rstrip("/")
        if name in seen:
            raise UnpackError(f"{source}: member {member.name!r} appears twice")
        seen.add(name)
        total += member.size
        if total > limits.max_total_bytes:
            raise UnpackError(f"{source}: members add up to more than {limits.max_total_bytes} bytes")
        members.append(member)
    names = {m.name.rstrip("/") for m in members if m.isfile()}
    for name in seen:
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        while parent:
            if parent in names:
                raise UnpackError(f"{source}: {parent!r} is a file and also a directory of {name!r}")
            parent = parent.rsplit("/", 1)[0] if "/" in parent else None
    return members


def safe_unpack(tar_path: Path, dest: Path, limits: UnpackLimits = UnpackLimits()) -> list[str]:
    """Extract ``tar_path`` (uncompressed) into the new directory ``dest``; return the file names extracted."""
    source = tar_path.name
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = _checked_members(tar, source, limits)
            dest.mkdir(parents=True, exist_ok=False)
            tar.extractall(dest, members=members, filter="data")
    except UnpackError:
        raise
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UnpackError(f"{source}: not a readable uncompressed tar ({e})") from None
    return sorted(m.name for m in members if m.isfile())
