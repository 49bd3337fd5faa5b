"""``carryon edge status``: what an edge node has installed, how old and how stale it is, which keys it trusts."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from edge._runtime_version import installed_onnxruntime, too_old
from edge.home import EdgeHome, iso, parse_iso
from edge.trust import load_trust

__all__ = ["metadata_freshness", "node_status", "stale_note"]


def metadata_freshness(home: EdgeHome, now: datetime) -> dict[str, Any]:
    """Expiry of the node's trusted timestamp metadata (read for display; pull verifies it)."""
    try:
        signed = json.loads((home.tuf / "timestamp.json").read_text(encoding="utf-8"))["signed"]
        expires = parse_iso(signed.get("expires"))
    except (OSError, ValueError, KeyError, TypeError):
        expires = None
    return {"metadata_expires": iso(expires) if expires else None,
            "metadata_expired": bool(expires and expires <= now)}


def _age_s(text: str | None, now: datetime) -> float | None:
    moment = parse_iso(text)
    return None if moment is None else round((now - moment).total_seconds(), 1)


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.0f} s ago"


def stale_note(home: EdgeHome, creator: str, now: datetime) -> str:
    """One clause for a refusal: what the node keeps serving and how stale it is."""
    version = home.installed_version(creator)
    if version is None:
        return f"nothing is installed for {creator}"
    entry = home.load_state()["creators"].get(creator, {})
    fresh = metadata_freshness(home, now)
    age = _human_age(_age_s(entry.get("last_refresh_ok"), now))
    note = f"still serving {creator} version {version} (last refresh {age}"
    if fresh["metadata_expired"]:
        note += f"; trusted metadata expired at {fresh['metadata_expires']}: stale"
    return note + ")"


def node_status(home: EdgeHome, now: datetime | None = None) -> dict[str, Any]:
    """Installed creators with version, ages, last refresh and error, staleness, whether this node's onnxruntime
    still runs them; trusted and revoked keys."""
    now = now or datetime.now(UTC)
    runtime = installed_onnxruntime()
    state = home.load_state()["creators"]
    fresh = metadata_freshness(home, now)
    creators: dict[str, Any] = {}
    trust = load_trust(home)
    for creator in sorted(set(state) | set(home.installed_creators())):
        entry = state.get(creator, {})
        version = home.installed_version(creator)
        bundle = home.current / creator
        manifest: dict[str, Any] = {}
        if version is not None:
            try:
                manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = {}
        key_id = (manifest.get("signing") or {}).get("key_id")
        needs = manifest.get("min_onnxruntime")
        creators[creator] = {
            "version": version,
            "bundle": os.path.join("current", creator) if version is not None else None,
            "installed_at": entry.get("installed_at"),
            "installed_age_s": _age_s(entry.get("installed_at"), now),
            "last_refresh_ok": entry.get("last_refresh_ok"),
            "refresh_age_s": _age_s(entry.get("last_refresh_ok"), now),
            "last_error": entry.get("last_error"),
            "bundle_expires_at": manifest.get("expires_at"),
            "personalization": manifest.get("personalization"),
            "signing_key_id": key_id,
            # Verified when installed; a key revoked since then does not stop it: a newer bundle replaces it.
            "signed_by_revoked_key": key_id in trust["revoked"],
            "min_onnxruntime": needs,
            # Checked when installed; onnxruntime downgraded since then cannot load its models.
            "runtime_too_old": bool(needs) and too_old(runtime, str(needs)),
            "stale": fresh["metadata_expired"] or entry.get("last_refresh_ok") is None,
        }
    return {
        "home": str(home.root),
        "initialized": (home.tuf / "root.json").exists(),
        "now": iso(now),
        "onnxruntime": runtime,
        **fresh,
        "creators": creators,
        "trusted_keys": {key_id: {k: v for k, v in entry.items() if k != "public_key_pem"}
                         for key_id, entry in sorted(trust["keys"].items())},
        "revoked_keys": sorted(trust["revoked"]),
    }


def render(status: dict[str, Any]) -> str:
    """The human form of ``node_status``."""
    lines = [f"edge home {status['home']}" + ("" if status["initialized"] else " (not initialized)")
             + f", onnxruntime {status['onnxruntime']}"]
    expiry = status["metadata_expires"] or "none yet"
    lines.append(f"trusted metadata expires {expiry}" + (" (EXPIRED: stale)" if status["metadata_expired"] else ""))
    if not status["creators"]:
        lines.append("no bundle installed")
    for creator, entry in status["creators"].items():
        version = "none" if entry["version"] is None else f"version {entry['version']}"
        lines.append(f"{creator}: {version}, installed {_human_age(entry['installed_age_s'])}, "
                     f"last refresh {_human_age(entry['refresh_age_s'])}" + (" [stale]" if entry["stale"] else ""))
        if entry["personalization"] is False:
            lines.append("  kill switch: personalization off, the creator's defaults only")
        if entry["signed_by_revoked_key"]:
            lines.append(f"  signed by key {entry['signing_key_id']}, revoked since it was installed: still in use "
                         f"until a newer bundle is pulled (carryon edge pull --creator {creator})")
        if entry["runtime_too_old"]:
            needs = entry["min_onnxruntime"]
            lines.append(f"  needs onnxruntime >= {needs}, this node has {status['onnxruntime']}: its models will "
                         f"not load; upgrade it (pip install 'onnxruntime>={needs}')")
        if entry["last_error"]:
            lines.append(f"  last error: {entry['last_error']}")
    for key_id, entry in status["trusted_keys"].items():
        scope = entry.get("creator") or "any creator"
        mark = " REVOKED" if key_id in status["revoked_keys"] else ""
        lines.append(f"key {key_id} ({scope}, added {entry.get('added_at')}){mark}")
    extra = [k for k in status["revoked_keys"] if k not in status["trusted_keys"]]
    if extra:
        lines.append("revoked: " + ", ".join(extra))
    return "\n".join(lines)
