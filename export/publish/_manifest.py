"""What publish needs from a bundle tar: its manifest.json, read without unpacking anything."""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
from typing import Any

from export.publish._errors import BundleRefusedError

MANIFEST = "manifest.json"
_MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# A creator id becomes a directory of the served repository: no separators, no leading dot.
_CREATOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class BundleInfo:
    """The manifest fields publish decides on."""

    creator_id: str
    bundle_version: int
    personalization: bool
    alias: str | None
    rehearsal: bool

    def not_champion_reason(self) -> str | None:
        if self.rehearsal:
            return "it is a release rehearsal (manifest rehearsal: true)"
        if self.alias != "champion":
            return f"it was built from alias {self.alias!r}, not 'champion'"
        return None


def _manifest_bytes(data: bytes, source: str) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            seen: set[str] = set()
            manifest = None
            for member in tar:
                if not member.isreg():
                    raise BundleRefusedError(f"{source}: tar member {member.name!r} is not a regular file; "
                                             "a bundle tar holds regular files only (rebuild it)")
                if member.name in seen:
                    raise BundleRefusedError(f"{source}: tar member {member.name!r} appears twice; rebuild the bundle")
                seen.add(member.name)
                if member.name == MANIFEST:
                    if member.size > _MANIFEST_MAX_BYTES:
                        raise BundleRefusedError(f"{source}: {MANIFEST} is {member.size} bytes, over the "
                                                 f"{_MANIFEST_MAX_BYTES} limit")
                    handle = tar.extractfile(member)
                    manifest = handle.read() if handle is not None else None
    except (tarfile.TarError, EOFError) as e:
        raise BundleRefusedError(f"{source}: not a readable uncompressed tar ({e}); "
                                 "give the <version>.tar that `carryon bundle build` wrote") from e
    if manifest is None:
        raise BundleRefusedError(f"{source}: the tar has no top-level {MANIFEST}; "
                                 "give the <version>.tar that `carryon bundle build` wrote")
    return manifest


def _field(manifest: dict[str, Any], source: str, key: str, kind: type, expected: str) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleRefusedError(f"{source}: {MANIFEST} field {key!r} must be {expected}, got {value!r}; "
                                 "rebuild the bundle")
    return value


def read_bundle_info(data: bytes, source: str) -> BundleInfo:
    """Parse and check the manifest of the bundle tar ``data`` (``source`` names it in errors)."""
    raw = _manifest_bytes(data, source)
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleRefusedError(f"{source}: {MANIFEST} is not valid JSON ({e}); rebuild the bundle") from e
    if not isinstance(manifest, dict):
        raise BundleRefusedError(f"{source}: {MANIFEST} must be a JSON object; rebuild the bundle")
    if manifest.get("schema") != 1:
        raise BundleRefusedError(f"{source}: {MANIFEST} schema must be 1, got {manifest.get('schema')!r}")
    creator = _field(manifest, source, "creator_id", str, "a creator id")
    if not _CREATOR_ID.match(creator):
        raise BundleRefusedError(f"{source}: {MANIFEST} creator_id {creator!r} must be 1-64 letters, digits, "
                                 "'.', '_' or '-', starting with a letter or digit")
    version = _field(manifest, source, "bundle_version", int, "an integer >= 1")
    if version < 1:
        raise BundleRefusedError(f"{source}: {MANIFEST} field 'bundle_version' must be an integer >= 1, "
                                 f"got {version}")
    personalization = _field(manifest, source, "personalization", bool, "true or false")
    alias = manifest.get("alias")
    rehearsal = manifest.get("rehearsal", False)
    if alias is not None and not isinstance(alias, str):
        raise BundleRefusedError(f"{source}: {MANIFEST} field 'alias' must be a string, got {alias!r}")
    if not isinstance(rehearsal, bool):
        raise BundleRefusedError(f"{source}: {MANIFEST} field 'rehearsal' must be true or false, got {rehearsal!r}")
    return BundleInfo(creator, version, personalization, alias, rehearsal)
