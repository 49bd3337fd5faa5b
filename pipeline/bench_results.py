"""Benchmark reports back into MLflow, and the device budgets that ``select`` respects.

``ingest_reports`` finds each measured model's registered version by the sha256 of its
deployed ONNX (version tag ``carryon.deploy_sha256``) and attaches, per device, the figures
as run metrics (``latency_p95_us.<device>``, ...), the verdict as version tags
(``carryon.bench.<device>.*``) and the report as the run artifact ``bench/<device>.json``;
re-ingesting a report changes nothing. Budgets are judged here, with this machine's
params, never taken from the report; emulated measurements are kept but never judged.
``budget_check`` is the ``select`` rule's check: a version over the target profile's
budget on a measured, non-emulated device of that profile never qualifies.

    >>> ingest_reports(client, [Path("metrics/bench_report.json")], params.bench)
    >>> SelectRule("auc", extra_checks=(gates_passed, budget_check(params.bench)))
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from features.errors import DataError
from features.schema import ts_to_us
from pipeline.params import BenchConfig, DeviceProfile
from pipeline.registry import VersionRow

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "FIGURES",
    "TAG_DEPLOY_SHA256",
    "BenchIngestError",
    "BudgetCheck",
    "DeviceFigures",
    "budget_check",
    "budget_failures",
    "ingest_reports",
    "measured_devices",
    "metric_name",
]

TAG_DEPLOY_SHA256: Final = "carryon.deploy_sha256"  # version tag set by export: sha256 of the deployed ONNX
TAG_BENCH: Final = "carryon.bench."  # version tags carryon.bench.<device>.{profile,emulated,within_budget,...}
ARTIFACT_DIR: Final = "bench"  # run artifact bench/<device>.json: the report, cut to this version's entries
EMULATED_PREFIX: Final = "emulated."  # metric prefix of emulated figures: kept apart, never judged
REPORT_SCHEMA: Final = 1
REPORT_KIND: Final = "carryon-bench-report"
# Figure -> run metric name before ".<device>"; latency_<stat>_us is the name the creator report reads.
FIGURES: Final[Mapping[str, str]] = {
    "p50_us": "latency_p50_us", "p95_us": "latency_p95_us", "p99_us": "latency_p99_us", "mean_us": "latency_mean_us",
    "session_create_ms": "session_create_ms", "session_create_first_ms": "session_create_first_ms",
    "peak_rss_mib": "peak_rss_mib", "size_bytes": "size_bytes", "throughput_per_s": "throughput_per_s",
}
DEVICE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # safe in metric names, tags and file names
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_DEVICE_FIELDS: Final[Mapping[str, str]] = {  # field -> expected type, as contract C states it
    "device_id": "str", "arch": "str", "cpu_model": "str", "cores": "int", "os": "str", "python": "str",
    "onnxruntime": "str", "providers": "list", "emulated": "bool",
}
_RERUN: Final = "re-run `carryon bench run --device-id ID ...` with this version of carryon"


class BenchIngestError(DataError):
    """A benchmark report cannot be attached: unreadable, incomplete, or for a model version that does not exist."""


# --- figures and budgets --------------------------------------------------------------------------


def metric_name(figure: str, device_id: str, *, emulated: bool = False) -> str:
    """The run metric holding ``figure`` (a key of FIGURES) measured on ``device_id``."""
    return f"{EMULATED_PREFIX if emulated else ''}{FIGURES[figure]}.{device_id}"


def budget_failures(figures: Mapping[str, float | None], profile: DeviceProfile) -> list[str]:
    """Which of ``profile``'s budgets the figures break (empty: within budget); a missing figure breaks its budget."""
    limits = (("p99_us", profile.p99_us, "p99 latency", "µs"),
              ("session_create_ms", profile.session_create_ms, "session creation", "ms"),
              ("peak_rss_mib", profile.peak_rss_mib, "peak RSS", "MiB"))
    failures = []
    for key, bound, label, unit in limits:
        value = figures.get(key)
        if value is None or not math.isfinite(value):
            failures.append(f"{label} not measured")
        elif value > bound:
            failures.append(f"{label} {value:.4g} {unit} > {bound:g} {unit}")
    return failures


@dataclass(frozen=True)
class DeviceFigures:
    """What the ingested reports say about one version on one device."""

    device_id: str
    profile: str | None
    emulated: bool
    figures: Mapping[str, float]  # keys of FIGURES present in the run's metrics


def measured_devices(row: VersionRow) -> list[DeviceFigures]:
    """Every device an ingested report measured ``row`` on, by device id."""
    found = []
    for key, profile in sorted(row.tags.items()):
        if not (key.startswith(TAG_BENCH) and key.endswith(".profile")):
            continue
        device = key[len(TAG_BENCH):-len(".profile")]
        emulated = row.tags.get(f"{TAG_BENCH}{device}.emulated") == "true"
        figures = {f: row.metrics[name] for f in FIGURES
                   if (name := metric_name(f, device, emulated=emulated)) in row.metrics}
        found.append(DeviceFigures(device, None if profile == "none" else profile, emulated, figures))
    return found


@dataclass(frozen=True)
class BudgetCheck:
    """A ``SelectRule`` check: over ``profile``'s budget on a measured, non-emulated device of it fails."""

    profile: DeviceProfile

    def __call__(self, row: VersionRow) -> str | None:
        over = []
        for device in measured_devices(row):
            if device.emulated or device.profile != self.profile.name:
                continue
            if failures := budget_failures(device.figures, self.profile):
                over.append(f"over the {self.profile.name} budget on device {device.device_id}: {', '.join(failures)}")
        return "; ".join(over) or None


def budget_check(bench: BenchConfig) -> BudgetCheck:
    """The check ``select`` adds for ``bench.target_profile``, judged with this machine's params."""
    return BudgetCheck(bench.profiles[bench.target_profile])


# --- reading reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    file: str
    sha256: str  # of the deployed ONNX: what carryon.deploy_sha256 holds
    registered_model: str
    version: int
    format: str
    figures: Mapping[str, float]
    entry: Mapping[str, Any]  # as the report holds it


@dataclass(frozen=True)
class _Report:
    path: Path
    data: Mapping[str, Any]
    device_id: str
    profile: str | None
    emulated: bool
    created_us: int
    models: tuple[_Model, ...]


def _load(path: Path) -> _Report:
    data = _validated(path)
    device = _field(path, data, "device", dict, "")
    for key, kind in _DEVICE_FIELDS.items():
        _field(path, device, key, {"str": str, "int": int, "list": list, "bool": bool}[kind], "device.")
    device_id = device["device_id"]
    if not DEVICE_ID.fullmatch(device_id):
        raise BenchIngestError(f"{path}: device.device_id must match {DEVICE_ID.pattern}, got {device_id!r}; {_RERUN}")
    if "profile" not in device or not (device["profile"] is None or isinstance(device["profile"], str)):
        raise BenchIngestError(f"{path}: device.profile must be a profile name or null; {_RERUN}")
    try:
        created_us = ts_to_us(_field(path, data, "created_at", str, ""))
    except (TypeError, ValueError) as e:
        raise BenchIngestError(f"{path}: created_at is not an ISO 8601 time with an offset ({e}); {_RERUN}") from None
    models = _field(path, data, "models", list, "")
    if not models:
        raise BenchIngestError(f"{path}: models is empty: the report measured nothing; {_RERUN} --models DIR")
    return _Report(path, data, device_id, device["profile"], device["emulated"], created_us,
                   tuple(_model(path, i, m) for i, m in enumerate(models)))


def _validated(path: Path) -> dict[str, Any]:
    """The report as JSON, checked against its schema by the job's own loader when it is installed."""
    load_report = _job_loader()
    if load_report is not None:
        data = load_report(path)  # its BenchError names the file, the field and the fix
    else:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise BenchIngestError(f"cannot read benchmark report {path}: {e.strerror or e}") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise BenchIngestError(f"{path} is not a JSON benchmark report ({e}); {_RERUN} --out FILE") from None
    if not isinstance(data, dict):
        raise BenchIngestError(f"{path}: a benchmark report is a JSON object, got {type(data).__name__}; {_RERUN}")
    if data.get("kind") != REPORT_KIND:
        raise BenchIngestError(f"{path}: kind must be {REPORT_KIND!r}, got {data.get('kind')!r}: "
                               "not a carryon benchmark report")
    if data.get("schema") != REPORT_SCHEMA or isinstance(data.get("schema"), bool):
        raise BenchIngestError(f"{path}: schema must be {REPORT_SCHEMA}, got {data.get('schema')!r}; "
                               "ingest it with the carryon version that wrote it, or " + _RERUN)
    return data


def _job_loader() -> Callable[[Path], Any] | None:
    """The benchmark job's own loader (it checks the report against its JSON schema), if this install has it."""
    try:
        loader = getattr(importlib.import_module("benchmarks.device"), "load_report", None)
    except ImportError:
        return None
    return loader if callable(loader) else None


def _model(path: Path, index: int, entry: object) -> _Model:
    where = f"models[{index}]."
    if not isinstance(entry, dict):
        raise BenchIngestError(f"{path}: models[{index}] must be an object, got {type(entry).__name__}; {_RERUN}")
    file = _field(path, entry, "file", str, where)
    sha = entry.get("onnx_sha256") or entry.get("sha256")  # null onnx_sha256: the measured file is the ONNX
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise BenchIngestError(f"{path}: {where}sha256 of {file} must be 64 lowercase hex digits, got {sha!r}; "
                               f"{_RERUN}")
    latency = _field(path, entry, "latency_us", dict, where)
    figures = {f"{stat}_us": _number(path, latency, stat, f"{where}latency_us.")
               for stat in ("p50", "p95", "p99", "mean")}
    figures |= {key: _number(path, entry, key, where) for key in ("session_create_ms", "peak_rss_mib")}
    _field(path, entry, "size", int, where)
    figures["size_bytes"] = _number(path, entry, "size", where)
    figures |= {key: _number(path, entry, key, where) for key in ("throughput_per_s", "session_create_first_ms")
                if key in entry}
    fmt = entry.get("format")
    if fmt not in ("onnx", "ort"):
        raise BenchIngestError(f"{path}: {where}format must be 'onnx' or 'ort', got {fmt!r}; {_RERUN}")
    return _Model(file, sha, _field(path, entry, "registered_model", str, where),
                  _field(path, entry, "version", int, where), fmt, figures, entry)


def _field(path: Path, data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if value is None or (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
        what = "missing" if value is None else f"a {type(value).__name__}, not a {kind.__name__}"
        raise BenchIngestError(f"{path}: {where}{key} is {what}; {_RERUN}")
    return value


def _number(path: Path, data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int beyond any float
        number = math.nan
    if not math.isfinite(number) or number < 0:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise BenchIngestError(f"{path}: {where}{key} must be a finite number >= 0, got {shown}; {_RERUN}")
    return number


# --- attaching ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    name: str
    version: int
    run_id: str | None


def ingest_reports(client: MlflowClient, reports: Sequence[Path], bench: BenchConfig) -> dict[str, Any]:
    """Attach every report to the versions it measured; refuse (attaching nothing) if any report is bad."""
    if isinstance(reports, str | Path):
        raise TypeError(f"reports must be a sequence of paths, not the single path {reports!r}")
    loaded = sorted((_load(Path(p)) for p in reports), key=lambda r: r.created_us)  # the newest report wins
    plans = [(report, _primary(report), _targets(client, report)) for report in loaded]
    return {"reports": [_attach(client, report, primary, targets, bench) for report, primary, targets in plans]}


def _primary(report: _Report) -> dict[str, _Model]:
    """Per deployed sha256, the entry whose figures stand for the version: the ONNX one if measured, else the ORT."""
    chosen: dict[str, _Model] = {}
    for model in report.models:
        held = chosen.get(model.sha256)
        if held is not None and held.format == model.format:
            raise BenchIngestError(f"{report.path}: {held.file} and {model.file} are the same {model.format} model "
                                   f"measured twice on one device; {_RERUN}")
        if held is None or model.format == "onnx":
            chosen[model.sha256] = model
    return chosen


def _targets(client: MlflowClient, report: _Report) -> dict[str, list[_Target]]:
    found = {}
    for model in report.models:
        versions = client.search_model_versions(f"tags.`{TAG_DEPLOY_SHA256}` = '{model.sha256}'")
        if not versions:
            ort = (" (an .ort entry is matched by onnx_sha256, the hash of the ONNX it was converted from)"
                   if model.format == "ort" and not model.entry.get("onnx_sha256") else "")
            raise BenchIngestError(
                f"{report.path}: {model.file} ({model.registered_model} version {model.version}, sha256 "
                f"{model.sha256[:12]}...) matches no registered model version's {TAG_DEPLOY_SHA256} in this tracking "
                f"store{ort}; benchmark the files `carryon export` wrote for this store (data/export), or point "
                "MLFLOW_TRACKING_URI at the store they came from"
            )
        found[model.sha256] = [_Target(str(mv.name), int(mv.version), mv.run_id or None)
                               for mv in sorted(versions, key=lambda mv: (mv.name, int(mv.version)))]
    return found


def _attach(client: MlflowClient, report: _Report, primary: Mapping[str, _Model],
            targets: Mapping[str, list[_Target]], bench: BenchConfig) -> dict[str, Any]:
    profile = bench.profiles.get(report.profile) if report.profile else None
    note = ("emulated: figures kept, never judged against budgets" if report.emulated
            else "the report names no profile" if report.profile is None
            else f"profile {report.profile!r} is not in params.yaml bench.profiles: not judged" if profile is None
            else None)
    rows = []
    for sha, model in primary.items():
        failures = None if report.emulated or profile is None else budget_failures(model.figures, profile)
        for target in targets[sha]:
            stale = _newer_on_record(client, target, report)
            if not stale:
                _write(client, target, report, model, failures)
            rows.append({
                "file": model.file, "format": model.format, "sha256": sha, "registered_model": target.name,
                "version": target.version, "within_budget": None if failures is None else not failures,
                "failures": failures or [], "stale": stale,
                "reported_as": None if (model.registered_model, model.version) == (target.name, target.version)
                else f"{model.registered_model} version {model.version}",
            })
    return {"file": report.path.name, "device_id": report.device_id, "profile": report.profile,
            "emulated": report.emulated, "created_at": report.data["created_at"], "note": note, "models": rows}


def _newer_on_record(client: MlflowClient, target: _Target, report: _Report) -> bool:
    """A report of this device newer than ``report`` is already attached (its figures and verdict stay)."""
    tags = client.get_model_version(target.name, str(target.version)).tags or {}
    recorded = tags.get(f"{TAG_BENCH}{report.device_id}.created_at")
    try:
        return recorded is not None and ts_to_us(recorded) > report.created_us
    except (TypeError, ValueError):
        return False


def _write(client: MlflowClient, target: _Target, report: _Report, model: _Model, failures: list[str] | None) -> None:
    from mlflow.entities import Metric

    device = report.device_id
    if target.run_id is not None:
        # One timestamp per report: logging it again adds nothing, and a newer report's figures win.
        stamp = report.created_us // 1000
        client.log_batch(target.run_id, metrics=[
            Metric(metric_name(figure, device, emulated=report.emulated), value, stamp, 0)
            for figure, value in sorted(model.figures.items())])
        entries = [m.entry for m in report.models if m.sha256 == model.sha256]
        artifact = {**report.data, "models": entries}
        client.log_text(target.run_id, json.dumps(artifact, indent=2, sort_keys=True) + "\n",
                        f"{ARTIFACT_DIR}/{device}.json")
    prefix = f"{TAG_BENCH}{device}."
    tags = {"profile": report.profile or "none", "emulated": str(report.emulated).lower(), "format": model.format,
            "created_at": str(report.data["created_at"])}
    for key, value in tags.items():
        client.set_model_version_tag(target.name, str(target.version), prefix + key, value)
    if failures is None:
        _delete_tag(client, target, prefix + "within_budget")
    else:
        client.set_model_version_tag(target.name, str(target.version), prefix + "within_budget",
                                     str(not failures).lower())


def _delete_tag(client: MlflowClient, target: _Target, key: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version_tag(target.name, str(target.version), key)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
