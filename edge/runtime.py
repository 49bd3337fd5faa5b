"""The edge runtime: an installed bundle in, consent-gated decisions out.

``EdgeRuntime.load`` opens a bundle directory (contract A; the client verified it before
installing, the runtime trusts it) and ``decide`` turns one viewer's session into the CTA
choice with its propensity and the bonus ranking. With personalization consent it computes
the online features and scores every CTA variant and every bonus in one model run each;
without consent, or when the bundle's kill switch is set, it returns the creator's
defaults and looks at nothing about the viewer. Base dependencies only.

    >>> runtime = EdgeRuntime.load(bundle_for(Path(".carryon-edge"), "cr-01"))
    >>> runtime.decide({"consent": {"personalization": True}, "events": [...]}).variant
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from math import isfinite
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from features.errors import CarryonError, DataError
from features.online import SessionFeatures, ViewerHistory
from features.policy import CtaPolicy, ExplorationSettings
from features.schema import MAX_ID_CHARS, ts_to_us
from features.spec import FeatureSpec

__all__ = ["BundleLoadError", "Decision", "EdgeRuntime", "SessionError", "bundle_for"]

KINDS = ("cta", "bonus-ranker")
SESSION_KEYS = frozenset({"consent", "events", "history", "at", "viewer_ref", "session_id", "drop_id"})
HISTORY_KEYS = ("sessions", "enrolls", "claims", "cta_clicks")
_HISTORY_FIELDS = frozenset(HISTORY_KEYS)
MAX_COUNT = 1_000_000  # history counts beyond this are not a viewer's history (float32 stays exact below 2**24)
_REINSTALL = "reinstall the bundle with `carryon edge pull`"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATES: dict[int, str] = {}  # day since the epoch -> its ISO date


class BundleLoadError(CarryonError):
    """An installed bundle cannot be loaded (missing or inconsistent files)."""


class SessionError(DataError):
    """A session handed to ``decide`` is malformed; the message names the field."""


class Decision(NamedTuple):  # immutable like a frozen dataclass, built in a third of the time
    """One decision. Scores, the decision time and the session's ids are set only when personalized."""

    creator_id: str
    bundle_version: int
    personalized: bool
    reason: str  # "consent", "no_consent" or "kill_switch"
    variant: str
    propensity: float
    bonus_order: tuple[str, ...]
    cta_scores: tuple[float, ...] | None = None  # catalog variant order
    bonus_scores: tuple[float, ...] | None = None  # bonus_order order, highest first
    at: str | None = None
    session_id: str | None = None
    drop_id: str | None = None
    viewer_ref: str | None = None

    def to_dict(self, variants: Sequence[str] | None = None) -> dict[str, Any]:
        """The decision as JSON-ready values (``variants``: catalog order, to name the CTA scores)."""
        scores: dict[str, float] | None = None
        if self.cta_scores is not None and variants is not None:
            scores = dict(zip(variants, self.cta_scores, strict=True))
        return {
            "creator_id": self.creator_id, "bundle_version": self.bundle_version,
            "personalized": self.personalized, "reason": self.reason, "at": self.at,
            "cta": {"variant": self.variant, "propensity": self.propensity, "scores": scores},
            "bonuses": {"order": list(self.bonus_order),
                        "scores": None if self.bonus_scores is None else list(self.bonus_scores)},
        }


class _Request(NamedTuple):  # a tuple: built once a decision, cheaper than a frozen dataclass
    events: Sequence[Mapping[str, Any]]
    history: ViewerHistory | None
    at: int | None
    viewer_ref: str | None
    session_id: str | None
    drop_id: str | None


class _Scorer:
    """One model with its input bound once: fill ``inputs``, call ``run``, read ``outputs``."""

    def __init__(self, path: Path, fmt: str, entry: Mapping[str, Any], rows: int, width: int, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if fmt == "ort":
            options.add_session_config_entry("session.load_model_format", "ORT")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.format = fmt
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        in_name = str(entry.get("input", "features"))
        if len(inputs) != 1 or inputs[0].name != in_name or inputs[0].shape[-1] != width:
            raise BundleLoadError(
                f"{path.name}: expected one input {in_name!r} of width {width}, got "
                f"{[(i.name, i.shape) for i in inputs]}; rebuild the bundle with `carryon bundle build`")
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = str(entry.get("output", outputs[0]))
        if self.output not in outputs:
            raise BundleLoadError(f"{path.name}: the manifest names output {self.output!r}, the model has {outputs}")
        self.inputs = np.zeros((rows, width), np.float32)
        shape = self.session.run([self.output], {in_name: self.inputs})[0].shape
        if int(np.prod(shape)) != rows:
            raise BundleLoadError(f"{path.name}: {rows} input rows gave output shape {shape}, expected one score a row")
        self._out = np.zeros(shape, np.float32)
        self.outputs = self._out.reshape(rows)
        # Pre-bound input and output buffers: run_with_iobinding skips the per-call feed
        # conversion (a few µs here). No RunOptions: passing one costs ~30 µs in onnxruntime 1.32.
        self._binding = self.session.io_binding()
        if rows:
            self._binding.bind_input(in_name, "cpu", 0, np.float32, list(self.inputs.shape), self.inputs.ctypes.data)
            self._binding.bind_output(self.output, "cpu", 0, np.float32, list(shape), self._out.ctypes.data)

    def run(self) -> np.ndarray:
        self.session.run_with_iobinding(self._binding)
        return self.outputs


def bundle_for(home: Path, creator: str) -> Path:
    """The creator's current bundle in an edge home (``<home>/current/<creator>``, symlink resolved once)."""
    if not creator or creator in (".", "..") or "/" in creator or "\\" in creator:
        raise BundleLoadError(f"creator id {creator!r} is not a plain name; pass the id the bundle was pulled for")
    link = home / "current" / creator
    try:
        return link.resolve(strict=True)
    except OSError:
        raise BundleLoadError(
            f"{link}: no bundle installed for creator {creator!r}; run `carryon edge pull --creator {creator}`"
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BundleLoadError(f"{path}: cannot read ({e.strerror}); {_REINSTALL}") from e
    except ValueError as e:
        raise BundleLoadError(f"{path}: not valid JSON ({e}); {_REINSTALL}") from e
    if not isinstance(raw, dict):
        raise BundleLoadError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _items(catalog: Mapping[str, Any], key: str, id_key: str, width: int, source: Path) -> tuple[list[str], np.ndarray]:
    entries = catalog.get(key)
    if not isinstance(entries, list) or not entries:
        raise BundleLoadError(f"{source}: field {key!r} must be a non-empty list")
    try:
        ids = [str(e[id_key]) for e in entries]
        features = np.asarray([e["features"] for e in entries], np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleLoadError(f"{source}: {key} entries need {id_key!r} and numeric 'features' ({e})") from e
    if features.shape != (len(ids), width) or len(set(ids)) != len(ids):
        raise BundleLoadError(f"{source}: {key} must have unique ids and {width} features each, got {features.shape}")
    return ids, features


class EdgeRuntime:
    """A loaded bundle that decides. Calls to ``decide`` are serialized by a lock."""

    def __init__(self, root: Path, manifest: dict[str, Any], spec: FeatureSpec, catalog: dict[str, Any],
                 scorers: dict[str, _Scorer], seed: int | None) -> None:
        self.root = root
        self.manifest = manifest
        self.spec = spec
        self.creator_id = str(manifest["creator_id"])
        self.bundle_version = int(manifest["bundle_version"])
        self.personalization = manifest.get("personalization") is True
        self.policy = CtaPolicy(ExplorationSettings.from_dict(manifest["exploration"]))
        self.loaded_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        src = root / "catalog.json"
        self.niche = str(catalog.get("niche") or "") or None
        self.variants, cta_items = _items(catalog, "variants", "variant", len(spec.cta_item), src)
        self.bonuses, bonus_items = _items(catalog, "bonuses", "bonus_id", len(spec.bonus_item), src)
        self.default_variant = str(catalog.get("default_variant"))
        order = catalog.get("default_bonus_order")
        if self.default_variant not in self.variants:
            raise BundleLoadError(f"{src}: default_variant {self.default_variant!r} is not one of its variants")
        if not isinstance(order, list) or not set(map(str, order)) <= set(self.bonuses):
            raise BundleLoadError(f"{src}: default_bonus_order must list bonus ids of its bonuses")
        self.default_bonus_order = tuple(map(str, order))
        n = len(spec.context)
        self._n = n
        self._scorers = scorers
        self._cta: _Scorer
        self._bonus: _Scorer
        if self.personalization:  # a kill-switch bundle has no models: decide() never reaches them
            self._cta, self._bonus = scorers["cta"], scorers["bonus-ranker"]
            self._cta.inputs[:, n:] = cta_items
            self._bonus.inputs[:, n:] = bonus_items
        self._ctx = np.zeros(n, np.float32)
        self._bonus_ids = tuple(self.bonuses)
        self._bonus_rows = range(len(self.bonuses))
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.feature_factory = SessionFeatures  # tests swap in a spy

    @classmethod
    def load(cls, bundle_dir: str | Path, *, threads: int = 1, seed: int | None = None,
             prefer_ort: bool = True) -> EdgeRuntime:
        """Open a bundle directory; ``seed`` fixes the exploration draws (default: fresh entropy)."""
        root = Path(bundle_dir)
        manifest = _read_json(root / "manifest.json")
        try:
            creator, version = str(manifest["creator_id"]), int(manifest["bundle_version"])
            spec_entry, models = manifest["feature_spec"], manifest["models"]
            ExplorationSettings.from_dict(manifest["exploration"])
        except (KeyError, TypeError, ValueError) as e:
            raise BundleLoadError(f"{root / 'manifest.json'}: missing or invalid field ({e!r})") from e
        try:
            spec = FeatureSpec.load(root / str(spec_entry.get("file", "feature_spec.json")))
        except CarryonError as e:
            raise BundleLoadError(str(e)) from e
        if spec_entry.get("hash") != spec.hash:
            raise BundleLoadError(f"{root / 'manifest.json'}: feature_spec.hash does not match the bundle's spec")
        catalog = _read_json(root / "catalog.json")
        if catalog.get("creator_id") != creator:
            raise BundleLoadError(
                f"{root / 'catalog.json'}: creator_id {catalog.get('creator_id')!r} is not the manifest's {creator!r}")
        rows = {"cta": len(catalog.get("variants") or []), "bonus-ranker": len(catalog.get("bonuses") or [])}
        widths = {"cta": len(spec.cta_names), "bonus-ranker": len(spec.bonus_names)}
        # The kill switch ships no models (`carryon bundle build --kill-switch`); models it does carry stay closed.
        personalized = manifest.get("personalization") is True
        scorers = {k: _open_model(root, models.get(k), k, rows[k], widths[k], threads, prefer_ort, spec.hash)
                   for k in KINDS} if personalized else {}
        if version < 0:
            raise BundleLoadError(f"{root / 'manifest.json'}: bundle_version must be >= 0, got {version}")
        return cls(root, manifest, spec, catalog, scorers, seed)

    def health(self) -> dict[str, Any]:
        """What is installed: creator, version, models, the personalization flag, when it was loaded."""
        models = {}
        for kind, scorer in self._scorers.items():
            entry = self.manifest["models"][kind]
            models[kind] = {"registered_model": entry.get("registered_model", kind), "version": entry.get("version"),
                            "family": entry.get("family"), "quantization": entry.get("quantization"),
                            "format": scorer.format}
        return {"status": "ok", "creator_id": self.creator_id, "bundle_version": self.bundle_version,
                "personalization": self.personalization, "created_at": self.manifest.get("created_at"),
                "expires_at": self.manifest.get("expires_at"), "loaded_at": self.loaded_at, "models": models,
                "variants": len(self.variants), "bonuses": len(self.bonuses)}

    def decide(self, session: Mapping[str, Any]) -> Decision:
        """One decision for ``session`` (see the module docstring); SessionError when it is malformed."""
        consented = _consented(session)
        if not self.personalization or not consented:
            # Nothing about the viewer is read past the consent flag: no events, no history.
            return Decision(self.creator_id, self.bundle_version, False,
                            "kill_switch" if not self.personalization else "no_consent",
                            self.default_variant, 1.0, self.default_bonus_order)
        request = _parse(session)
        with self._lock:
            return self._personalized(request)

    def _personalized(self, request: _Request) -> Decision:
        features = self.feature_factory(self.spec, creator_niche=self.niche, history=request.history)
        for i, event in enumerate(request.events):
            if type(event) is not dict and not isinstance(event, Mapping):
                raise SessionError("session events: expected a list of event objects")
            try:
                features.update(event)
            except (ValueError, TypeError) as e:
                raise SessionError(f"session events[{i}]: {e}") from None
        at = request.at
        if at is None:
            if not request.events:
                raise SessionError("session: give 'at' (ISO time of the decision) or at least one event")
            at = ts_to_us(request.events[-1]["ts"])  # already parsed once by update()
        try:
            features.context(at, self._ctx)
        except ValueError as e:
            raise SessionError(f"session at: {e}") from None
        n = self._n
        self._cta.inputs[:, :n] = self._ctx
        self._bonus.inputs[:, :n] = self._ctx
        cta = self._cta.run()
        bonus = self._bonus.run().tolist()
        cta_scores = cta.tolist()
        # float32 scores as Python floats: the sums cannot overflow, so they are finite iff every score is.
        if not isfinite(sum(cta_scores) + sum(bonus)):
            raise DataError(f"bundle {self.creator_id} v{self.bundle_version}: a model returned a non-finite score")
        choice, propensity = self.policy.decide(cta, self._rng)
        # Highest first, ties in catalog order: a stable descending sort (as a stable argsort of -scores).
        order = sorted(self._bonus_rows, key=bonus.__getitem__, reverse=True)
        ids = self._bonus_ids
        return Decision(
            self.creator_id, self.bundle_version, True, "consent", self.variants[choice], propensity,
            tuple([ids[i] for i in order]), tuple(cta_scores), tuple([bonus[i] for i in order]),
            _iso(at), request.session_id, request.drop_id, request.viewer_ref,
        )


def _open_model(root: Path, entry: object, kind: str, rows: int, width: int, threads: int, prefer_ort: bool,
                spec_hash: str) -> _Scorer:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise BundleLoadError(f"{root / 'manifest.json'}: models.{kind}.file is missing")
    candidates: list[tuple[Path, str]] = []
    if prefer_ort and isinstance(entry.get("ort_file"), str) and (root / entry["ort_file"]).is_file():
        candidates.append((root / entry["ort_file"], "ort"))
    candidates.append((root / entry["file"], "onnx"))
    problems: list[str] = []
    for path, fmt in candidates:
        try:
            scorer = _Scorer(path, fmt, entry, rows, width, threads)
        except BundleLoadError:
            raise
        except Exception as e:  # onnxruntime raises its own untyped errors: try the next form
            problems.append(f"{path.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if scorer.metadata.get("carryon.spec_hash", spec_hash) != spec_hash:
            raise BundleLoadError(f"{path}: model was trained on another feature spec than the bundle's")
        return scorer
    raise BundleLoadError(f"{root}: cannot load the {kind} model ({'; '.join(problems)})")


def _iso(us: int) -> str:
    """``us_to_iso(us)``, formatting the date part once per day: decisions of a session share their day."""
    day, rest = divmod(us, 86_400_000_000)
    date = _DATES.get(day)
    if date is None:
        if len(_DATES) >= 64:
            _DATES.clear()
        date = _DATES[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
    seconds, micros = divmod(rest, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{date}T{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}Z"


def _optional_id(session: Mapping[str, Any], key: str) -> str | None:
    value = session.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise SessionError(f"session {key}: must be a non-empty string of at most {MAX_ID_CHARS} characters")
    return value


def _consented(session: Mapping[str, Any]) -> bool:
    """The request's personalization consent (absent = not granted), after checking its top-level shape."""
    if type(session) is not dict and not isinstance(session, Mapping):
        raise SessionError(f"session: expected a JSON object, got {type(session).__name__}")
    if not SESSION_KEYS.issuperset(session):
        unknown = sorted(set(session) - SESSION_KEYS)
        raise SessionError(f"session: unknown field(s) {', '.join(map(str, unknown))}; "
                           f"allowed: {', '.join(sorted(SESSION_KEYS))}")
    consent = session.get("consent") or {}
    if not isinstance(consent, Mapping):
        raise SessionError("session consent: expected an object like {\"personalization\": true}")
    granted = consent.get("personalization", False)
    if not isinstance(granted, bool):
        raise SessionError(f"session consent.personalization: expected true or false, got {granted!r}")
    return granted


def _parse(session: Mapping[str, Any]) -> _Request:
    """The consented request's fields; events themselves are checked as the features read them."""
    events = session.get("events") or []
    if not isinstance(events, list):  # each event's own type is checked as the features read it
        raise SessionError("session events: expected a list of event objects")
    at: int | None = None
    if session.get("at") is not None:
        try:
            at = ts_to_us(session["at"])
        except (TypeError, ValueError) as e:
            raise SessionError(f"session at: not an ISO 8601 time with offset ({e})") from None
    history = None
    raw = session.get("history")
    if raw is not None:
        if not isinstance(raw, Mapping) or not _HISTORY_FIELDS.issuperset(raw):
            raise SessionError(f"session history: expected an object with fields among {', '.join(HISTORY_KEYS)}")
        try:
            history = ViewerHistory(**raw)
        except (ValueError, TypeError) as e:
            raise SessionError(f"session history: {e}") from None
        if max(history.sessions, history.enrolls, history.claims, history.cta_clicks) > MAX_COUNT:
            raise SessionError(f"session history: counts must be at most {MAX_COUNT}")
    return _Request(events, history, at, _optional_id(session, "viewer_ref"),
                    _optional_id(session, "session_id"), _optional_id(session, "drop_id"))
