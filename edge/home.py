"""The edge node's home directory (contract B): its paths, ``state.json`` and the installed version per creator.

``current/<creator>`` is the truth about what is installed; ``state.json`` adds when and how it got there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.client_errors import EdgeError, TrustError
from features._fsutil import atomic_write_text

__all__ = ["EdgeHome", "check_creator", "iso", "resolve_home"]

HOME_ENV = "CARRYON_EDGE_HOME"
DEFAULT_HOME = ".carryon-edge"
STATE_SCHEMA = 1
_CREATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def resolve_home(home: Path | None, environ: dict[str, str] | None = None) -> EdgeHome:
    """``--home`` if given, else $CARRYON_EDGE_HOME, else ./.carryon-edge."""
    env = os.environ if environ is None else environ
    return EdgeHome(home if home is not None else Path(env.get(HOME_ENV) or DEFAULT_HOME))


def check_creator(creator: str) -> str:
    """A creator id is a path component here: refuse anything that could leave ``bundles/``."""
    if not _CREATOR.match(creator) or creator.startswith(".."):
        raise EdgeError(f"creator id {creator!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'")
    return creator


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class EdgeHome:
    """Paths of one edge node's home."""

    root: Path

    @property
    def tuf(self) -> Path:
        return self.root / "tuf"

    @property
    def trust_file(self) -> Path:
        return self.root / "trust.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def current(self) -> Path:
        return self.root / "current"

    def bundles(self, creator: str) -> Path:
        return self.root / "bundles" / check_creator(creator)

    def require_init(self) -> None:
        if not (self.tuf / "root.json").exists():
            raise TrustError(f"edge home {self.root} has no trusted TUF root ({self.tuf}/root.json); "
                             "run: carryon edge init --root ROOT.json")

    def installed_version(self, creator: str) -> int | None:
        """The version ``current/<creator>`` points at, or None when nothing is installed."""
        link = self.current / check_creator(creator)
        try:
            target = os.readlink(link)
        except OSError:
            return None
        name = Path(target).name
        return int(name) if name.isdigit() else None

    def installed_creators(self) -> list[str]:
        if not self.current.is_dir():
            return []
        return sorted(p.name for p in self.current.iterdir() if p.is_symlink() and not p.name.startswith("."))

    def load_state(self) -> dict[str, Any]:
        """``state.json``, or an empty state when it does not exist yet."""
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"schema": STATE_SCHEMA, "creators": {}}
        except (OSError, ValueError) as e:
            raise EdgeError(f"{self.state_file} is unreadable ({e}); remove it and pull again") from None
        if not isinstance(data, dict) or not isinstance(data.get("creators"), dict):
            raise EdgeError(f"{self.state_file}: field 'creators' must be an object; remove the file and pull again")
        return data

    def update_state(self, creator: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the creator's entry and write ``state.json`` atomically."""
        state = self.load_state()
        entry = state["creators"].setdefault(check_creator(creator), {
            "version": None, "installed_at": None, "last_refresh_ok": None, "last_error": None})
        entry.update(fields)
        state["schema"] = STATE_SCHEMA
        atomic_write_text(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")
        return dict(entry)
