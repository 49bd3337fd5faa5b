"""The onnxruntime on this node, and whether it is at least a bundle's ``min_onnxruntime``."""

from __future__ import annotations

import re

__all__ = ["installed_onnxruntime", "release", "too_old"]


def installed_onnxruntime() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def release(version: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a version string like '1.21' or '1.22.0.dev2025'; None if it has none."""
    parts = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version.strip())
    return None if parts is None else tuple(int(p or 0) for p in parts.groups())


def too_old(installed: str, needed: str) -> bool:
    """True when ``installed`` is an older release than ``needed`` (unreadable versions are not judged)."""
    have, want = release(installed), release(needed)
    return have is not None and want is not None and have < want
