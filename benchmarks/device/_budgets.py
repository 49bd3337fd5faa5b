"""Device budgets: does a measured model meet a profile's latency, cold-start and memory limits?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Profile(Protocol):
    """What a device profile gives (``pipeline.params.DeviceProfile`` has these fields)."""

    @property
    def p99_us(self) -> float: ...

    @property
    def session_create_ms(self) -> float: ...

    @property
    def peak_rss_mib(self) -> float: ...


def verdict(figures: Mapping[str, Any], profile: Profile) -> dict[str, Any]:
    """``{"met": bool, "failures": [...]}``; each failure names the figure, its value and the budget."""
    checks = (
        ("p99_us", float(figures["latency_us"]["p99"]), profile.p99_us),
        ("session_create_ms", float(figures["session_create_ms"]), profile.session_create_ms),
        ("peak_rss_mib", float(figures["peak_rss_mib"]), profile.peak_rss_mib),
    )
    failures = [f"{name} {value:.6g} > budget {limit:.6g}" for name, value, limit in checks if value > limit]
    return {"met": not failures, "failures": failures}


def verdicts(figures: Mapping[str, Any], profiles: Mapping[str, Profile], emulated: bool) -> dict[str, Any]:
    """One verdict per profile; none at all for emulated figures, which never judge budgets."""
    if emulated:
        return {}
    return {name: verdict(figures, profile) for name, profile in sorted(profiles.items())}
