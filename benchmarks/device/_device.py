"""Who measured: the device's identity as the report states it (contract C, ``device``).

Reads only the standard library and onnxruntime's version; never the network.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.device._errors import BenchError

DEVICE_ID_ENV = "CARRYON_DEVICE_ID"
EMULATED_ENV = "CARRYON_EMULATED"
_ARM = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")
_X86_VENDORS = ("GenuineIntel", "AuthenticAMD", "HygonGenuine")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def check_device_id(device_id: str | None) -> str:
    """The operator-set device id, validated; refuses a missing or odd one."""
    if device_id is None or not device_id.strip():
        raise BenchError(
            f"device id is missing: pass --device-id NAME or set {DEVICE_ID_ENV} "
            "(a stable name for this device, e.g. pixel7-lab or rpi5-popup-1)"
        )
    if not _DEVICE_ID.match(device_id):
        raise BenchError(
            f"device id {device_id!r} must be 1-128 characters of letters, digits and . _ : @ -, "
            "starting with a letter or digit"
        )
    return device_id


def _cpuinfo(path: Path) -> dict[str, str]:
    """First value of each key in /proc/cpuinfo (empty when unreadable)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return fields


def _device_tree_model() -> str | None:
    for path in (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model")):
        try:
            model = path.read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if model:
            return model
    return None


def cpu_model(cpuinfo: Mapping[str, str]) -> str:
    """The CPU or board as /proc/cpuinfo names it: x86 "model name", ARM "Model"/"Hardware"."""
    for key in ("model name", "Model", "Hardware"):
        if cpuinfo.get(key):
            return cpuinfo[key]
    board = _device_tree_model()
    if board:
        return board
    if cpuinfo.get("CPU part"):
        return f"ARM implementer {cpuinfo.get('CPU implementer', '?')} part {cpuinfo['CPU part']}"
    return platform.processor() or "unknown"


def looks_emulated(arch: str, cpuinfo: Mapping[str, str], environ: Mapping[str, str]) -> bool:
    """True under qemu-user: an ARM userland reading an x86 host's /proc/cpuinfo, or the env says so."""
    if environ.get(EMULATED_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return arch.lower() in _ARM and cpuinfo.get("vendor_id", "") in _X86_VENDORS


def describe_device(
    device_id: str, profile: str | None, emulated: bool | None, environ: Mapping[str, str] | None = None,
    cpuinfo_path: Path = Path("/proc/cpuinfo"),
) -> dict[str, Any]:
    """The report's ``device`` block; ``emulated=None`` detects qemu-user."""
    import onnxruntime as ort

    environ = os.environ if environ is None else environ
    arch = platform.machine() or "unknown"
    info = _cpuinfo(cpuinfo_path)
    return {
        "device_id": check_device_id(device_id),
        "profile": profile,
        "arch": arch,
        "cpu_model": cpu_model(info),
        "cores": os.cpu_count() or 1,
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": str(ort.__version__),
        "providers": [str(p) for p in ort.get_available_providers()],
        "emulated": bool(emulated) if emulated is not None else looks_emulated(arch, info, environ),
    }
