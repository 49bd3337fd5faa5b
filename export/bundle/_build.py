"""Assemble one creator's bundle directory, sign it, and pack it (see the bundle contract in DESIGN.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import onnx

from export.bundle._counter import peek_version, reserve_version
from export.bundle._golden import ATOL, golden_cases
from export.bundle._keys import SigningKey
from export.bundle._models import REGISTERED, BundleBuildError, ShippedModel, opsets, shipped_model
from export.bundle._sign import SIGNATURE, bundle_files, pack_tar, sign_dir
from export.checks import MIN_ONNXRUNTIME
from features._fsutil import atomic_dir
from features.errors import InputUnreadableError
from features.policy import ExplorationSettings
from features.spec import FeatureSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

SCHEMA: Final = 1
ALIASES: Final = ("candidate", "champion")
MANIFEST: Final = "manifest.json"
_CATALOG_KEYS: Final = ("creator_id", "niche", "currency", "course_title", "course_price", "creator_niche_code",
                        "variants", "bonuses", "default_variant", "default_bonus_order")


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_json(path: Path, what: str, fix: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputUnreadableError(f"{path.name}: cannot read the {what} ({e}); {fix}") from e


def _creator_catalog(features_dir: Path, creator: str | None) -> dict[str, Any]:
    catalog = _read_json(features_dir / "catalog.json", "feature catalog", "run `carryon features`")
    creators = catalog.get("creators") or []
    if not creators:
        raise BundleBuildError("catalog.json lists no creators; run `carryon features` on data with creators")
    chosen = creators[0] if creator is None else next((c for c in creators if c.get("creator_id") == creator), None)
    if chosen is None:
        known = ", ".join(str(c.get("creator_id")) for c in creators[:20])
        raise BundleBuildError(f"creator {creator!r} is not in catalog.json (creators: {known}); fix --creator "
                               "or bundle.creator in params.yaml")
    entry = {k: chosen[k] for k in _CATALOG_KEYS if k in chosen}
    missing = [k for k in ("creator_id", "variants", "bonuses", "default_variant", "default_bonus_order")
               if k not in entry]
    if missing:
        raise BundleBuildError(f"catalog.json: creator {chosen.get('creator_id')!r} lacks {', '.join(missing)}; "
                               "rebuild it with `carryon features`")
    return {"schema": SCHEMA, **entry, "cta_item_names": catalog.get("cta_item_names", []),
            "bonus_item_names": catalog.get("bonus_item_names", []), "spec_hash": catalog.get("spec_hash")}


def _items(catalog: Mapping[str, Any], kind: str) -> np.ndarray:
    rows = catalog["variants"] if kind == "cta" else catalog["bonuses"]
    return np.asarray([row["features"] for row in rows], dtype=np.float32)


def _operators(models: list[ShippedModel]) -> list[list[Any]]:
    found: set[tuple[str, str, int]] = set()
    for m in models:
        model = onnx.load(str(m.onnx_path), load_external_data=False)
        imports = opsets(model)
        found |= {(node.domain or "ai.onnx", node.op_type, imports.get(node.domain or "ai.onnx", 0))
                  for node in model.graph.node}
    return [list(op) for op in sorted(found)]


def _min_onnxruntime(models: list[ShippedModel]) -> str:
    versions = [MIN_ONNXRUNTIME]
    for m in models:
        meta = {p.key: p.value for p in onnx.load(str(m.onnx_path), load_external_data=False).metadata_props}
        versions.append(meta.get("carryon.min_onnxruntime", MIN_ONNXRUNTIME))
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))


def _check_spec(models: list[ShippedModel], spec: FeatureSpec) -> None:
    for m in models:
        meta = {p.key: p.value for p in onnx.load(str(m.onnx_path), load_external_data=False).metadata_props}
        if meta.get("carryon.spec_hash") != spec.hash:
            raise BundleBuildError(
                f"{m.name} version {m.version} was exported for feature spec "
                f"{str(meta.get('carryon.spec_hash'))[:12]}…, the features directory holds spec {spec.hash[:12]}…; "
                "a bundle needs both to match: retrain, or build from the features it was trained on"
            )


def _lineage(models: list[ShippedModel], build: Mapping[str, str], inputs: Mapping[str, str]) -> dict[str, Any]:
    """Build commit and params; data = the bundle's inputs and each model's training data, hashed together."""
    data = {**inputs, **{f"model:{m.kind}": m.lineage["data_sha256"] for m in models}}
    return {"git_commit": build.get("git_commit", "unknown"), "params_sha256": build.get("params_sha256", "unknown"),
            "data_sha256": _sha256(json.dumps(data, sort_keys=True).encode()),
            "models": {m.kind: dict(m.lineage) for m in models}}


def _golden_seed(creator: str, models: list[ShippedModel]) -> int:
    key = creator + "".join(f":{m.name}/{m.version}" for m in models)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def build_bundle(
    client: MlflowClient | None, *, alias: str, creator: str | None, export_dir: Path, features_dir: Path,
    out_dir: Path, key: SigningKey, versions_file: Path, exploration: ExplorationSettings,
    creator_caps: Mapping[str, float], expires_days: float, golden_per_model: int, build_lineage: Mapping[str, str],
    consent: Mapping[str, Any] | None, export_report: dict[str, Any] | None = None, kill_switch: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build, sign and pack ``creator``'s bundle from the versions carrying ``alias``; return what was written.

    ``alias`` "champion" reserves the next bundle version for good; "candidate" (the release rehearsal)
    uses it without reserving. ``kill_switch`` builds a bundle without models that turns personalization off.
    """
    if alias not in ALIASES:
        raise ValueError(f"alias must be one of {', '.join(ALIASES)}, got {alias!r}")
    catalog = _creator_catalog(features_dir, creator)
    creator_id = str(catalog["creator_id"])
    try:
        spec_bytes = (features_dir / "feature_spec.json").read_bytes()
    except OSError as e:
        raise InputUnreadableError(f"feature_spec.json: cannot read it from the features directory ({e.strerror}); "
                                   "run `carryon features`") from e
    spec = FeatureSpec.from_json(spec_bytes.decode("utf-8"), "feature_spec.json")
    models: list[ShippedModel] = []
    if not kill_switch:
        if client is None:
            raise ValueError("a bundle with models needs an MLflow client")
        models = [shipped_model(client, kind, alias, export_dir, export_report) for kind in REGISTERED]
        _check_spec(models, spec)
    rehearsal = alias != "champion"
    version = peek_version(versions_file, creator_id) if rehearsal else reserve_version(versions_file, creator_id)
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    cap = min(exploration.max_exploration, float(creator_caps.get(creator_id, 1.0)))
    catalog_bytes = _json(catalog)
    seed = _golden_seed(creator_id, models)
    cases = [case for m in models
             for case in golden_cases(spec, m.kind, m.onnx_path, _items(catalog, m.kind), golden_per_model, seed)]
    golden = {"schema": SCHEMA, "atol": ATOL, "seed": seed, "cases": cases}
    contents: dict[str, bytes] = {"catalog.json": catalog_bytes, "feature_spec.json": spec_bytes,
                                  "golden.json": (json.dumps(golden, separators=(",", ":")) + "\n").encode()}
    entries: dict[str, Any] = {}
    for m in models:
        onnx_bytes, ort_bytes = m.onnx_path.read_bytes(), m.ort_path.read_bytes()
        contents[f"models/{m.kind}.onnx"], contents[f"models/{m.kind}.ort"] = onnx_bytes, ort_bytes
        entries[m.kind] = m.manifest_entry(_sha256(onnx_bytes), len(onnx_bytes), _sha256(ort_bytes))
    inputs = {"catalog.json": _sha256(catalog_bytes), "feature_spec.json": _sha256(spec_bytes)}
    consent = dict(consent or {})
    manifest = {
        "schema": SCHEMA, "creator_id": creator_id, "bundle_version": version, "alias": alias,
        "rehearsal": rehearsal, "created_at": _iso(created),
        "expires_at": _iso(created + timedelta(days=expires_days)), "personalization": not kill_switch,
        "signing": {"key_id": key.key_id, "dev_key": key.dev_key},
        "models": entries, "required_operators": _operators(models), "min_onnxruntime": _min_onnxruntime(models),
        "feature_spec": {"file": "feature_spec.json", "hash": spec.hash},
        "exploration": replace(exploration, max_exploration=cap).to_dict(),
        "offline_metrics": {m.kind: m.metrics for m in models},
        "benchmarks": {m.kind: m.benchmarks for m in models},
        "lineage": _lineage(models, build_lineage, inputs),
        "consent": {"snapshot": consent.get("snapshot_id", "unknown"), "snapshot_time": consent.get("snapshot"),
                    "counts": {k: v for k, v in consent.items() if isinstance(v, int) and not isinstance(v, bool)}},
        "files": {name: _sha256(data) for name, data in sorted(contents.items())},
    }
    contents[MANIFEST] = _json(manifest)
    folder = out_dir / creator_id
    bundle_dir, tar_path = folder / str(version), folder / f"{version}.tar"
    with atomic_dir(bundle_dir) as work:
        for name, data in contents.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(data)
        sign_dir(work, key.path, key.passphrase)
        if bundle_files(work) != sorted([*contents, SIGNATURE]):  # the signer wrote only model.sig
            raise BundleBuildError(f"{bundle_dir}: unexpected files after signing")
        pack_tar(work, tar_path)
    tar_bytes = tar_path.read_bytes()
    return {
        "creator_id": creator_id, "bundle_version": version, "alias": alias, "rehearsal": rehearsal,
        "personalization": not kill_switch, "dir": bundle_dir.as_posix(), "tar": tar_path.as_posix(),
        "tar_sha256": _sha256(tar_bytes), "tar_size": len(tar_bytes), "key_id": key.key_id, "dev_key": key.dev_key,
        "key": key.display, "expires_at": manifest["expires_at"], "golden_cases": len(cases),
        "models": {m.kind: {"registered_model": m.name, "version": m.version, "family": m.family,
                            "quantization": m.quantization} for m in models},
    }
