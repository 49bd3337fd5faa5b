"""``run_bench``: measure each model in its own process and write what the device felt (contract C).

    >>> report = run_bench(["bundle/"], BenchSettings(), device_id="rpi5-lab", profile="arm-rig",
    ...                    profiles=params.bench.profiles)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.device._budgets import Profile, verdicts
from benchmarks.device._device import describe_device
from benchmarks.device._errors import BenchError
from benchmarks.device._inputs import decision_pool, find_spec, load_catalog, load_golden
from benchmarks.device._schema import REPORT_KIND, SCHEMA_VERSION, check_report
from benchmarks.device._spawn import run_child
from benchmarks.device._targets import Source, Target, find_targets, sha256_file
from features.spec import FeatureSpec


@dataclass(frozen=True)
class BenchSettings:
    """How each model is measured (params.yaml ``bench``; flags override)."""

    threads: int = 1  # onnxruntime intra-op threads; inter-op is always 1, execution sequential
    warmup: int = 200  # calls before measuring
    min_iterations: int = 3000  # calls measured, unless time_budget_s runs out first
    time_budget_s: float = 3.0  # per model: the timed loop stops here (after at least 100 calls)
    session_repeats: int = 5  # fresh sessions created; the median is the cold-start figure

    def __post_init__(self) -> None:
        checks = (("threads", self.threads, 1), ("warmup", self.warmup, 0),
                  ("min_iterations", self.min_iterations, 1), ("session_repeats", self.session_repeats, 1))
        for name, value, minimum in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise BenchError(f"bench setting {name} must be an integer >= {minimum}, got {value!r}; "
                                 f"fix --{name.replace('_', '-')} or bench.{name} in params.yaml")
        if not isinstance(self.time_budget_s, int | float) or not 0 < self.time_budget_s <= 3600:
            raise BenchError(f"bench setting time_budget_s must be in (0, 3600] seconds, got {self.time_budget_s!r}")


def _arrays(target: Target, source: Source, spec: FeatureSpec) -> dict[str, np.ndarray]:
    catalog = None
    if source.kind == "bundle" and source.root is not None:
        catalog = load_catalog(source.root / "catalog.json")
    arrays = {"pool": decision_pool(target.kind, spec, catalog)}
    golden = load_golden(source.root / "golden.json", target.kind) if source.kind == "bundle" and source.root else None
    if golden is not None:
        arrays["golden_inputs"], arrays["golden_expected"] = golden[0], golden[1]
        arrays["golden_atol"] = np.asarray(golden[2])
    return arrays


def _rounded(value: Any) -> Any:
    """Figures to 4 significant decimals (nanoseconds for µs): reports stay readable, nothing real is lost."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _entry(target: Target, figures: dict[str, Any], call_rows: int) -> dict[str, Any]:
    sha = sha256_file(target.path)
    return {
        "file": target.name, "sha256": sha,
        "onnx_sha256": sha if target.format == "onnx" else target.onnx_sha256,
        "size": target.path.stat().st_size, "kind": target.kind, "registered_model": target.registered_model,
        "version": target.version, "family": target.family, "format": target.format, "call_rows": call_rows,
        **{key: _rounded(figures[key]) for key in (
            "session_create_ms", "session_create_first_ms", "latency_us", "iterations", "time_budget_exhausted",
            "throughput_per_s", "peak_rss_mib", "call_api", "golden")},
    }


def run_bench(
    models: Sequence[str | Path], settings: BenchSettings, device_id: str | None, profile: str | None = None,
    profiles: Mapping[str, Profile] | None = None, *, fmt: str = "onnx", emulated: bool | None = None,
    spec: Path | None = None,
) -> dict[str, Any]:
    """Measure every model of a bundle dir, an export dir or a list of files; return the report.

    ``profiles`` (params.yaml ``bench.profiles``) adds a budget verdict per profile to each
    model, unless the device is emulated; ``emulated=None`` detects qemu-user.
    """
    profiles = dict(profiles or {})
    if profile is not None and profiles and profile not in profiles:
        raise BenchError(f"profile {profile!r} is not in params.yaml bench.profiles ({', '.join(sorted(profiles))}); "
                         "pass one of those to --profile")
    device = describe_device(str(device_id or ""), profile, emulated)
    source, targets = find_targets(models, fmt)
    feature_spec = find_spec(source.root, spec)
    job = {k: v for k, v in asdict(settings).items()}
    entries = []
    for target in targets:
        arrays = _arrays(target, source, feature_spec)
        figures = run_child(target.path, job, arrays)
        entry = _entry(target, figures, int(arrays["pool"].shape[1]))
        entry["budgets"] = verdicts(entry, profiles, device["emulated"])
        entries.append(entry)
    report = {
        "schema": SCHEMA_VERSION, "kind": REPORT_KIND,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": {"kind": source.kind, "creator_id": source.creator_id, "bundle_version": source.bundle_version},
        "device": device, "settings": asdict(settings), "models": entries,
    }
    return check_report(report, "the report just measured")
