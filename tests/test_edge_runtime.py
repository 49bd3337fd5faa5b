"""The edge runtime: consent-gated decisions from a bundle directory, and the decision log."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.decisions import DecisionLog, decision_events, read_decisions
from edge.runtime import BundleLoadError, Decision, EdgeRuntime, SessionError, bundle_for
from features.errors import DataError
from features.online import SessionFeatures, ViewerHistory
from features.policy import CtaPolicy, ExplorationSettings
from features.schema import COMMON_FIELDS, EVENT_TYPES, FIELD_KINDS, ts_to_us
from features.spec import FeatureSpec
from tests.world import run_data_stages, small_params

EXPLORATION = ExplorationSettings("epsilon_greedy", epsilon=0.2, max_exploration=0.3)


def build_bundle(root: Path) -> Path:
    """A contract-A bundle directory (unsigned) from a small world: real spec, catalog, logreg models + .ort."""
    from export.mobile import to_ort
    from export.networks import sklearn_to_onnx
    from models import _plots
    from models.bonus import train_bonus
    from models.cta import train_cta

    params = small_params()
    params = replace(params, train=replace(params.train, cta_families=("logreg",), bonus_families=("pointwise",)),
                     evaluation=replace(params.evaluation, n_bootstrap=20))
    world = run_data_stages(root / "world", params)
    candidates = train_cta(world.features, params.train, params.evaluation, params.policy.exploration)
    candidates += train_bonus(world.features, params.train, params.evaluation)
    bundle = root / "bundle"
    (bundle / "models").mkdir(parents=True)
    models: dict[str, Any] = {}
    for c in candidates:
        _plots.close(c.figures)
        meta = {"carryon.kind": c.kind, "carryon.spec_hash": c.spec_hash, "carryon.family": c.family,
                "carryon.registered_model": c.kind, "carryon.version": "1"}
        onnx_path = bundle / "models" / f"{c.kind}.onnx"
        onnx_path.write_bytes(sklearn_to_onnx(c.model, list(c.feature_names), metadata=meta).SerializeToString())
        work = root / "ort" / c.kind
        work.mkdir(parents=True)
        shutil.copy(onnx_path, work / "model.onnx")
        to_ort(work / "model.onnx", work)
        shutil.copy(work / "model.ort", bundle / "models" / f"{c.kind}.ort")
        models[c.kind] = {"file": f"models/{c.kind}.onnx", "ort_file": f"models/{c.kind}.ort", "quantization": "none",
                          "registered_model": c.kind, "version": 1, "family": c.family, "input": "features",
                          "output": "probability"}
    shutil.copy(world.features / "feature_spec.json", bundle / "feature_spec.json")
    spec = FeatureSpec.load(bundle / "feature_spec.json")
    full = json.loads((world.features / "catalog.json").read_text())
    creator = full["creators"][0]
    catalog = {"schema": 1, "creator_id": creator["creator_id"], "niche": creator["niche"],
               "currency": creator["currency"], "variants": creator["variants"], "bonuses": creator["bonuses"],
               "default_variant": creator["default_variant"], "default_bonus_order": creator["default_bonus_order"]}
    (bundle / "catalog.json").write_text(json.dumps(catalog))
    manifest = {"schema": 1, "creator_id": creator["creator_id"], "bundle_version": 3,
                "created_at": "2026-09-01T00:00:00Z", "expires_at": "2026-10-01T00:00:00Z", "personalization": True,
                "models": models, "feature_spec": {"file": "feature_spec.json", "hash": spec.hash},
                "exploration": EXPLORATION.to_dict()}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def set_manifest(bundle: Path, **changes: Any) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def session(consent: bool = True, **extra: Any) -> dict[str, Any]:
    """A consented viewer two minutes into a drop, after a few chats and reactions."""
    events = [
        {"type": "join", "ts": "2025-09-01T18:00:00Z", "device": "phone", "channel": "popup",
         "drop_started_at": "2025-09-01T17:55:00Z", "local_pickup": True, "viewer_id": "raw-viewer-7"},
        {"type": "chat", "ts": "2025-09-01T18:00:30Z"},
        {"type": "reaction", "ts": "2025-09-01T18:01:00Z"},
        {"type": "cta_impression", "ts": "2025-09-01T18:01:30Z", "variant": "x", "propensity": 0.5},
    ]
    return {"consent": {"personalization": consent}, "events": events, "at": "2025-09-01T18:02:00Z",
            "session_id": "s-123", "drop_id": "d-9", **extra}


@pytest.fixture(scope="module")
def bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("edge"))


@pytest.fixture
def bundle(bundle_src: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_src, copy)
    return copy


@pytest.fixture
def runtime(bundle: Path) -> EdgeRuntime:
    return EdgeRuntime.load(bundle, seed=5)


def run_model(bundle: Path, name: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(bundle / "models" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"features": x})[0]).reshape(-1)


def features_for(runtime: EdgeRuntime, s: dict[str, Any]) -> SessionFeatures:
    history = ViewerHistory(**s["history"]) if s.get("history") else None
    feats = SessionFeatures(runtime.spec, creator_niche=runtime.niche, history=history)
    for e in s["events"]:
        feats.update(e)
    return feats


def test_consented_decision_scores_every_variant_as_the_model_does(runtime: EdgeRuntime, bundle: Path) -> None:
    s = session()
    d = runtime.decide(s)
    assert d.personalized and d.reason == "consent" and d.at == "2025-09-01T18:02:00.000000Z"
    catalog = json.loads((bundle / "catalog.json").read_text())
    items = np.asarray([v["features"] for v in catalog["variants"]], np.float32)
    x = features_for(runtime, s).cta_matrix(s["at"], items)
    expected = run_model(bundle, "cta", x)
    assert d.cta_scores is not None and len(d.cta_scores) == len(items) == 8
    np.testing.assert_allclose(d.cta_scores, expected, rtol=0, atol=1e-6)
    bonus_items = np.asarray([b["features"] for b in catalog["bonuses"]], np.float32)
    bonus_scores = run_model(bundle, "bonus-ranker", features_for(runtime, s).bonus_matrix(s["at"], bonus_items))
    ids = [b["bonus_id"] for b in catalog["bonuses"]]
    assert d.bonus_scores is not None and list(d.bonus_scores) == sorted(d.bonus_scores, reverse=True)
    assert sorted(d.bonus_order) == sorted(ids) and len(d.bonus_order) == 20
    np.testing.assert_allclose(d.bonus_scores, [bonus_scores[ids.index(b)] for b in d.bonus_order], atol=1e-6)


def test_propensity_is_the_policys_probability_of_the_chosen_variant(runtime: EdgeRuntime) -> None:
    policy = CtaPolicy(EXPLORATION)
    chosen = set()
    for i in range(60):
        d = runtime.decide(session(history={"sessions": i % 4}))
        assert d.cta_scores is not None
        p = policy.probabilities(np.asarray([d.cta_scores]))[0]
        index = runtime.variants.index(d.variant)
        assert d.propensity == pytest.approx(p[index], abs=1e-12)
        chosen.add(d.variant)
    assert len(chosen) > 1  # epsilon 0.2 over 60 draws explores


def test_seeded_runtimes_draw_the_same_decisions(bundle: Path) -> None:
    a, b = EdgeRuntime.load(bundle, seed=9), EdgeRuntime.load(bundle, seed=9)
    assert [a.decide(session()).variant for _ in range(30)] == [b.decide(session()).variant for _ in range(30)]


def test_different_sessions_get_different_scores(runtime: EdgeRuntime) -> None:
    base = runtime.decide(session())
    returning = runtime.decide(session(history={"sessions": 6, "enrolls": 2, "claims": 3, "cta_clicks": 4}))
    later = runtime.decide(session(at="2025-09-01T18:30:00Z"))
    assert base.cta_scores != returning.cta_scores and base.cta_scores != later.cta_scores
    assert base.bonus_scores != returning.bonus_scores


def test_at_defaults_to_the_last_event(runtime: EdgeRuntime) -> None:
    s = session()
    del s["at"]
    assert runtime.decide(s).at == "2025-09-01T18:01:30.000000Z"


def test_prefers_the_ort_file_and_falls_back_to_onnx(bundle: Path) -> None:
    assert EdgeRuntime.load(bundle).health()["models"]["cta"]["format"] == "ort"
    (bundle / "models" / "cta.ort").write_bytes(b"not an ort file")
    runtime = EdgeRuntime.load(bundle, seed=1)
    assert runtime.health()["models"]["cta"]["format"] == "onnx"
    assert runtime.health()["models"]["bonus-ranker"]["format"] == "ort"
    assert runtime.decide(session()).personalized


class _Spy:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("features were computed for a viewer without consent")


def _forbid_models(runtime: EdgeRuntime) -> None:
    def boom() -> np.ndarray:
        raise AssertionError("a model ran for a viewer without consent")

    for scorer in runtime._scorers.values():
        scorer.run = boom  # type: ignore[method-assign]


@pytest.mark.parametrize("consent", [{"personalization": False}, {}, None, {"analytics": True}])
def test_without_consent_defaults_and_nothing_computed_or_logged(runtime: EdgeRuntime, bundle: Path,
                                                                  tmp_path: Path, consent: Any) -> None:
    runtime.feature_factory = _Spy  # type: ignore[assignment]
    _forbid_models(runtime)
    s = session()
    s["consent"] = consent
    # Bad viewer data is not even read: no error for garbage events or history.
    s["events"] = [{"garbage": True}]
    s["history"] = {"sessions": -4}
    d = runtime.decide(s)
    catalog = json.loads((bundle / "catalog.json").read_text())
    assert (d.personalized, d.reason, d.variant, d.propensity) == (False, "no_consent", catalog["default_variant"], 1.0)
    assert list(d.bonus_order) == catalog["default_bonus_order"]
    assert d.cta_scores is None and d.bonus_scores is None and d.at is None and d.session_id is None
    log = DecisionLog.open(tmp_path, runtime.creator_id)
    assert log.append(d) == 0 and not log.path.exists()


def test_kill_switch_gives_defaults_even_with_consent(bundle: Path, tmp_path: Path) -> None:
    set_manifest(bundle, personalization=False)
    runtime = EdgeRuntime.load(bundle)
    runtime.feature_factory = _Spy  # type: ignore[assignment]
    _forbid_models(runtime)
    d = runtime.decide(session())
    assert (d.personalized, d.reason, d.propensity) == (False, "kill_switch", 1.0)
    assert runtime.health()["personalization"] is False
    assert runtime.health()["models"] == {}  # the models it carries are never opened
    assert DecisionLog.open(tmp_path, runtime.creator_id).append(d) == 0


def make_kill_switch(bundle: Path, version: int) -> None:
    """What `carryon bundle build --kill-switch` ships: no models, personalization off."""
    shutil.rmtree(bundle / "models")
    set_manifest(bundle, personalization=False, models={}, bundle_version=version)


def test_a_kill_switch_bundle_without_models_loads_and_gives_defaults(bundle: Path) -> None:
    make_kill_switch(bundle, 4)
    runtime = EdgeRuntime.load(bundle)
    runtime.feature_factory = _Spy  # type: ignore[assignment]
    catalog = json.loads((bundle / "catalog.json").read_text())
    d = runtime.decide(session())
    assert (d.personalized, d.reason, d.bundle_version) == (False, "kill_switch", 4)
    assert d.variant == catalog["default_variant"]
    assert list(d.bonus_order) == catalog["default_bonus_order"]
    assert runtime.health()["models"] == {}


def test_a_personalized_bundle_without_models_is_refused(bundle: Path) -> None:
    make_kill_switch(bundle, 4)
    set_manifest(bundle, personalization=True)
    with pytest.raises(BundleLoadError, match=r"manifest.json: models.cta.file is missing"):
        EdgeRuntime.load(bundle)


@pytest.mark.parametrize(("change", "match"), [
    ({"consent": {"personalization": "yes"}}, "consent.personalization: expected true or false"),
    ({"consents": {}}, "unknown field.*consents"),
    ({"events": {"type": "join"}}, "events: expected a list"),
    ({"events": [{"type": "join"}]}, r"events\[0\]: event has no 'ts'"),
    ({"events": [{"type": "teleport", "ts": "2025-09-01T18:00:00Z"}]}, r"events\[0\]: unknown event type"),
    ({"events": [{"type": "chat", "ts": "2025-09-01T18:00:00Z"}, {"type": "chat", "ts": "2025-09-01T17:00:00Z"}]},
     r"events\[1\]: events must come in time order"),
    ({"at": "2025-09-01T18:00:00Z"}, "at: decision time .* is before the latest event"),
    ({"at": "yesterday"}, "at: not an ISO 8601 time"),
    ({"at": "2025-09-01T18:00:00"}, "at: not an ISO 8601 time"),
    ({"history": {"sessions": -1}}, "history: ViewerHistory.sessions must be an integer >= 0"),
    ({"history": {"visits": 1}}, "history: expected an object with fields"),
    ({"history": {"claims": 10**30}}, "history: counts must be at most 1000000"),
    ({"history": {"claims": 1.5}}, "history: ViewerHistory.claims must be an integer"),
    ({"viewer_ref": ""}, "viewer_ref: must be a non-empty string"),
    ({"session_id": "x" * 200}, "session_id: must be a non-empty string of at most 128"),
    ({"events": [], "at": None}, "give 'at'"),
])
def test_malformed_sessions_are_refused_with_the_field(runtime: EdgeRuntime, change: dict[str, Any],
                                                         match: str) -> None:
    s = session()
    s.update(change)
    with pytest.raises(SessionError, match=match):
        runtime.decide(s)


def test_a_non_mapping_session_is_refused(runtime: EdgeRuntime) -> None:
    with pytest.raises(SessionError, match="expected a JSON object, got list"):
        runtime.decide([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(("breakage", "match"), [
    (lambda b: (b / "manifest.json").unlink(), "manifest.json: cannot read"),
    (lambda b: (b / "catalog.json").write_text("{"), "catalog.json: not valid JSON"),
    (lambda b: set_manifest(b, exploration={"kind": "greedy"}), "manifest.json: missing or invalid field"),
    (lambda b: set_manifest(b, feature_spec={"file": "feature_spec.json", "hash": "0" * 64}), "hash does not match"),
    (lambda b: [(b / "models" / f"cta.{ext}").write_bytes(b"junk") for ext in ("onnx", "ort")],
     r"cannot load the cta model \(cta.ort: .*; cta.onnx: "),
    (lambda b: _edit_catalog(b, default_variant="nope"), "default_variant 'nope' is not one of its variants"),
    (lambda b: _edit_catalog(b, creator_id="cr-99"), "creator_id 'cr-99' is not the manifest's"),
])
def test_a_broken_bundle_is_refused_naming_the_file(bundle: Path, breakage: Callable[[Path], Any], match: str) -> None:
    breakage(bundle)
    with pytest.raises(BundleLoadError, match=match):
        EdgeRuntime.load(bundle)


def _edit_catalog(bundle: Path, **changes: Any) -> None:
    catalog = json.loads((bundle / "catalog.json").read_text())
    catalog.update(changes)
    (bundle / "catalog.json").write_text(json.dumps(catalog))


def test_a_model_of_another_spec_is_refused(bundle: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(bundle / "models" / "cta.onnx"))
    for prop in model.metadata_props:
        if prop.key == "carryon.spec_hash":
            prop.value = "f" * 64
    onnx.save(model, str(bundle / "models" / "cta.onnx"))
    (bundle / "models" / "cta.ort").unlink()
    with pytest.raises(BundleLoadError, match="another feature spec"):
        EdgeRuntime.load(bundle)


def test_bundle_for_resolves_the_current_symlink_once(bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "bundles" / "cr-01").mkdir(parents=True)
    shutil.move(bundle, home / "bundles" / "cr-01" / "3")
    (home / "current").mkdir()
    os.symlink("../bundles/cr-01/3", home / "current" / "cr-01")
    assert bundle_for(home, "cr-01") == (home / "bundles" / "cr-01" / "3").resolve()
    with pytest.raises(BundleLoadError, match="no bundle installed for creator 'cr-02'"):
        bundle_for(home, "cr-02")
    with pytest.raises(BundleLoadError, match="not a plain name"):
        bundle_for(home, "../etc")


# --- the decision log ---------------------------------------------------------------------------------

def _check_schema_v1(event: dict[str, Any]) -> None:
    """The schema-v1 contract of one logged event (what ingest validates), viewer_id aside."""
    kind = EVENT_TYPES[event["type"]]
    expected = {*COMMON_FIELDS, *kind.required} - {"viewer_id"}
    assert expected <= set(event), expected - set(event)
    assert set(event) <= {*COMMON_FIELDS, *kind.required, *kind.optional}
    for name, value in event.items():
        want = FIELD_KINDS[name]
        if want == "ts":
            ts_to_us(value)
        elif want == "float":
            assert isinstance(value, float) and 0.0 < value <= 1.0
        elif want == "int":
            assert isinstance(value, int) and value >= 1
        else:
            assert isinstance(value, str) and value


def test_decision_log_lines_are_schema_v1_events_without_a_viewer_id(runtime: EdgeRuntime, tmp_path: Path) -> None:
    log = DecisionLog.open(tmp_path, runtime.creator_id)
    d = runtime.decide(session())
    assert log.append(d) == 21
    assert log.append(runtime.decide(session(at="2025-09-01T18:05:00Z"))) == 21
    text = log.path.read_text()
    assert "raw-viewer-7" not in text and "viewer_id" not in text
    contents = read_decisions(log.path)
    assert contents.torn_tail == 0 and len(contents.events) == 42
    for event in contents.events:
        _check_schema_v1(event)
        assert (event["creator_id"], event["session_id"], event["drop_id"]) == (runtime.creator_id, "s-123", "d-9")
    first = contents.events[:21]
    assert first[0]["type"] == "cta_impression" and first[0]["variant"] == d.variant
    assert first[0]["propensity"] == d.propensity and first[0]["ts"] == d.at
    assert [e["bonus_id"] for e in first[1:]] == list(d.bonus_order)
    assert [e["position"] for e in first[1:]] == list(range(1, 21))
    assert len({e["slate_id"] for e in first[1:]}) == 1
    assert len({e["event_id"] for e in contents.events}) == 42
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"


def test_viewer_ref_becomes_the_viewer_id_and_ingest_accepts_the_log(runtime: EdgeRuntime, tmp_path: Path) -> None:
    from features.ingest import ingest
    from tests.world import TEST_KEY

    log = DecisionLog.open(tmp_path, runtime.creator_id)
    for minute in range(2, 6):
        log.append(runtime.decide(session(viewer_ref="ref-abc", at=f"2025-09-01T18:0{minute}:00Z")))
    events = read_decisions(log.path).events
    assert {e["viewer_id"] for e in events} == {"ref-abc"}
    params = small_params()
    report = ingest([log.path], tmp_path / "clean", tmp_path / "quarantine.jsonl", params.ingest, params.consent,
                    key=TEST_KEY)
    # Every line is a valid schema-v1 record: none quarantined, none carrying fields outside its type. (None
    # is clean either: the log holds no consent grants; those come from the platform's own consent events.)
    assert (report.records_read, report.quarantined, report.duplicates, report.extra_fields_ignored) == (84, 0, 0, 0)
    assert report.quarantine_reasons == {} and report.excluded_no_consent == 84


def test_a_torn_last_line_is_skipped_counted_and_cut_by_the_next_append(runtime: EdgeRuntime, tmp_path: Path) -> None:
    log = DecisionLog.open(tmp_path, runtime.creator_id)
    log.append(runtime.decide(session()))
    whole = log.path.read_bytes()
    with log.path.open("ab") as f:
        f.write(b'{"event_id":"dec-torn","ts":"2025-09-01T18')
    contents = read_decisions(log.path)
    assert contents.torn_tail == 1 and len(contents.events) == 21
    log.append(runtime.decide(session()))
    assert log.repaired_bytes == len(b'{"event_id":"dec-torn","ts":"2025-09-01T18')
    assert log.path.read_bytes().startswith(whole)
    contents = read_decisions(log.path)
    assert contents.torn_tail == 0 and len(contents.events) == 42


def test_the_log_follows_its_file_when_it_is_rotated_away(runtime: EdgeRuntime, tmp_path: Path) -> None:
    log = DecisionLog.open(tmp_path, runtime.creator_id)
    log.append(runtime.decide(session()))
    log.path.rename(tmp_path / "old.jsonl")
    log.append(runtime.decide(session()))
    assert len(read_decisions(log.path).events) == 21 and len(read_decisions(tmp_path / "old.jsonl").events) == 21
    log.path.unlink()
    log.append(runtime.decide(session()))
    assert len(read_decisions(log.path).events) == 21
    log.close()


def test_a_damaged_line_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(DataError, match="line 2 is not a JSON event"):
        read_decisions(path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=3), max_size=5),
       st.binary(max_size=40))
def test_the_reader_recovers_every_whole_line_before_any_tail(tmp_path_factory: pytest.TempPathFactory,
                                                              records: list[dict[str, Any]], tail: bytes) -> None:
    path = tmp_path_factory.mktemp("log") / "d.jsonl"
    tail = tail.replace(b"\n", b"")
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)
    contents = read_decisions(path)
    assert contents.events == records and contents.torn_tail == (1 if tail else 0)


def test_decision_events_of_a_default_decision_are_empty() -> None:
    d = Decision("cr-01", 1, False, "no_consent", "v", 1.0, ("b1", "b2"))
    assert decision_events(d) == []
