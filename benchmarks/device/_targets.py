"""What to measure: the model files of a bundle, an export dir or a list of files.

Each :class:`Target` names the file measured, where it sits, what it is (from the ONNX
``metadata_props`` or the bundle manifest) and the sha256 of the deployed ONNX it came
from, which the build machine matches to MLflow model versions (``carryon.deploy_sha256``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.device._errors import BenchError

FORMATS = ("onnx", "ort", "both")
KINDS = ("cta", "bonus-ranker")
_VERSION_DIR = re.compile(r"^v[0-9]+$")


@dataclass(frozen=True)
class Target:
    """One model file to measure."""

    path: Path
    name: str  # relative name in the report: models/cta.onnx, cta/v7/model.onnx, model.onnx
    format: str  # onnx | ort
    kind: str
    registered_model: str
    version: int
    family: str
    onnx_sha256: str | None  # the deployed ONNX this file is (or was converted from)


@dataclass(frozen=True)
class Source:
    """Where the targets came from, and what it tells about call shapes and inputs."""

    kind: str  # bundle | export | files
    root: Path | None
    creator_id: str | None = None
    bundle_version: int | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise BenchError(f"{path}: cannot read the model file ({e.strerror}); check the path and permissions") from e
    return digest.hexdigest()


def read_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an .onnx or .ort file, read by onnxruntime (no graph optimization)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for unreadable models
        raise BenchError(f"{path}: onnxruntime cannot load the model ({_first_line(e)}); "
                         "re-export it or copy it again") from e
    return dict(session.get_modelmeta().custom_metadata_map)


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def _described(path: Path, name: str, fmt: str, onnx_sha: str | None, fallback: dict[str, Any]) -> Target:
    meta = read_metadata(path)
    kind = meta.get("carryon.kind") or fallback.get("kind")
    if kind not in KINDS:
        raise BenchError(f"{path}: metadata carryon.kind is {kind!r}, expected one of {list(KINDS)}; "
                         "measure models written by `carryon export`")
    version_text = meta.get("carryon.version", fallback.get("version"))
    try:
        version = int(str(version_text))
    except ValueError:
        raise BenchError(f"{path}: metadata carryon.version is {version_text!r}, expected an integer; "
                         "measure models written by `carryon export`") from None
    return Target(
        path=path, name=name, format=fmt, kind=str(kind),
        registered_model=str(meta.get("carryon.registered_model") or fallback.get("registered_model") or kind),
        version=version, family=str(meta.get("carryon.family") or fallback.get("family") or "unknown"),
        onnx_sha256=onnx_sha,
    )


def _formats(fmt: str) -> tuple[str, ...]:
    if fmt not in FORMATS:
        raise BenchError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return ("onnx", "ort") if fmt == "both" else (fmt,)


def _bundle(root: Path, fmt: str) -> tuple[Source, list[Target]]:
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        models = manifest["models"]
        if not isinstance(models, dict):
            raise KeyError("models")
    except OSError as e:
        raise BenchError(f"{manifest_path}: cannot read the bundle manifest ({e.strerror})") from e
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{manifest_path}: not a bundle manifest (field {e} missing or malformed); "
                         "pass a bundle built by `carryon bundle build`") from e
    if not models:
        why = "it is a kill-switch bundle" if manifest.get("personalization") is False else "models is empty"
        raise BenchError(f"{manifest_path}: the bundle carries no models ({why}): nothing to measure; "
                         "pass a bundle built with models")
    targets = []
    for kind, entry in sorted(models.items()):
        for form in _formats(fmt):
            field = "file" if form == "onnx" else "ort_file"
            if not isinstance(entry, dict) or not isinstance(entry.get(field), str):
                raise BenchError(f"{manifest_path}: models.{kind}.{field} is missing; rebuild the bundle")
            path = root / entry[field]
            if not path.is_file():
                raise BenchError(f"{path}: model file named by manifest models.{kind}.{field} is missing; "
                                 "copy the whole bundle directory")
            onnx_sha = sha256_file(root / entry["file"]) if isinstance(entry.get("file"), str) else None
            targets.append(_described(path, entry[field], form, onnx_sha, {**entry, "kind": kind}))
    version = manifest.get("bundle_version")
    source = Source("bundle", root, str(manifest.get("creator_id")) if manifest.get("creator_id") else None,
                    version if isinstance(version, int) and not isinstance(version, bool) else None)
    return source, targets


def _deployed(version_dir: Path) -> tuple[Path, Path]:
    """The deployed ONNX of an export version dir (int8 when present) and its .ort."""
    if (version_dir / "model.int8.onnx").is_file():
        return version_dir / "model.int8.onnx", version_dir / "model.int8.ort"
    return version_dir / "model.onnx", version_dir / "model.ort"


def _export(root: Path, fmt: str) -> tuple[Source, list[Target]]:
    targets = []
    for version_dir in sorted(p for p in root.glob("*/v*") if p.is_dir() and _VERSION_DIR.match(p.name)):
        onnx_path, ort_path = _deployed(version_dir)
        if not onnx_path.is_file():
            continue
        onnx_sha = sha256_file(onnx_path)
        for form in _formats(fmt):
            path = onnx_path if form == "onnx" else ort_path
            if not path.is_file():
                raise BenchError(f"{path}: the .ort file of {onnx_path.relative_to(root)} is missing; "
                                 "rerun `carryon export` or bench with --format onnx")
            targets.append(_described(path, path.relative_to(root).as_posix(), form, onnx_sha, {}))
    return Source("export", root), targets


def _file(path: Path, name: str) -> Target:
    if path.suffix == ".onnx":
        return _described(path, name, "onnx", sha256_file(path), {})
    if path.suffix == ".ort":
        beside = path.with_suffix(".onnx")
        return _described(path, name, "ort", sha256_file(beside) if beside.is_file() else None, {})
    raise BenchError(f"{path}: not a model file (expected .onnx or .ort)")


def _flat(root: Path, fmt: str) -> list[Target]:
    suffixes = {"onnx": (".onnx",), "ort": (".ort",), "both": (".onnx", ".ort")}[fmt]
    return [_file(p, p.name) for p in sorted(root.iterdir()) if p.is_file() and p.suffix in suffixes]


def find_targets(models: Sequence[str | Path], fmt: str = "onnx") -> tuple[Source, list[Target]]:
    """Expand a bundle dir, an export dir (``<name>/v<N>/``), a flat dir or model files into targets."""
    _formats(fmt)
    if not models:
        raise BenchError("no models given: pass --bundle DIR or --models DIR (or model files)")
    paths = [Path(m) for m in models]
    for path in paths:
        if not path.exists():
            raise BenchError(f"{path}: no such file or directory; pass a bundle dir, an export dir or model files")
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        if (root / "manifest.json").is_file():
            source, targets = _bundle(root, fmt)
        elif any(p.is_dir() and _VERSION_DIR.match(p.name) for p in root.glob("*/v*")):
            source, targets = _export(root, fmt)
        else:
            source, targets = Source("files", root), _flat(root, fmt)
    else:
        if any(p.is_dir() for p in paths):
            raise BenchError("pass one directory, or model files only, not both")
        source, targets = Source("files", None), [_file(p, p.name) for p in paths]
    if not targets:
        raise BenchError(f"{paths[0]}: no models to measure (no .onnx files, no <name>/v<N>/model.onnx, "
                         f"no bundle manifest.json, for --format {fmt})")
    return source, targets
