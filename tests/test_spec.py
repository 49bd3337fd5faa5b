"""Feature spec: stable hash, lossless JSON round trip, tamper detection, total encoders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.errors import InputUnreadableError
from features.spec import UNKNOWN, Feature, FeatureSpec

NICHES = ("ceramics", "coding")
STYLES = ("plain", "scarcity", "pickup")
KINDS = ("workbook", "physical_kit")


def _spec(window: float = 120.0) -> FeatureSpec:
    return FeatureSpec.build(NICHES, STYLES, KINDS, window)


def test_names_and_order() -> None:
    spec = _spec()
    assert spec.cta_names[: len(spec.context)] == spec.context_names
    assert spec.cta_names[-3:] == ("variant_style", "variant_discount", "variant_urgency")
    assert spec.bonus_names[-3:] == ("bonus_kind", "bonus_value", "bonus_requires_pickup")
    assert spec["device"].categories == (UNKNOWN, "desktop", "phone", "tv")


def test_hash_is_stable_and_sensitive() -> None:
    assert _spec().hash == _spec().hash
    assert FeatureSpec.build(reversed(NICHES), STYLES, KINDS, 120).hash == _spec().hash  # vocab sorted
    assert _spec(60.0).hash != _spec().hash
    assert FeatureSpec.build((*NICHES, "yoga"), STYLES, KINDS, 120).hash != _spec().hash


def test_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "feature_spec.json"
    path.write_text(_spec().to_json())
    loaded = FeatureSpec.load(path)
    assert loaded == _spec()
    assert loaded.hash == json.loads(path.read_text())["hash"]


def test_edited_spec_is_refused(tmp_path: Path) -> None:
    raw = json.loads(_spec().to_json())
    raw["context"][0]["default"] = 5.0
    path = tmp_path / "feature_spec.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputUnreadableError, match="does not match its content"):
        FeatureSpec.load(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [("{", "not a valid feature spec"), ('{"context": []}', "not a valid feature spec")],
)
def test_malformed_spec(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "feature_spec.json"
    path.write_text(text)
    with pytest.raises(InputUnreadableError, match=match):
        FeatureSpec.load(path)


def test_missing_spec_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InputUnreadableError, match="run `carryon features`"):
        FeatureSpec.load(tmp_path / "absent.json")


def test_encoding_rules() -> None:
    spec = _spec()
    device, minute = spec["device"], spec["minute_in_drop"]
    assert device.encode("phone") == 2.0
    assert device.encode("fridge") == 0.0
    assert device.encode(None) == 0.0
    assert minute.encode(None) == -1.0
    assert minute.encode(float("nan")) == -1.0
    assert minute.encode(3) == 3.0
    assert spec.encode_row(("device", "sess_chats"), {"device": "tv"}) == [3.0, 0.0]


def test_bad_feature_definitions() -> None:
    with pytest.raises(ValueError, match="dtype must be float32 or category"):
        Feature("x", "int8", 0.0)
    with pytest.raises(ValueError, match="categories must start with 'unknown'"):
        Feature("x", "category", 0.0, ("a",))
    with pytest.raises(ValueError, match="unique"):
        FeatureSpec(_spec().context, _spec().context[:1], (), 120.0)


@given(st.one_of(st.none(), st.text(max_size=20), st.integers(), st.floats(allow_nan=True)))
def test_category_encoder_is_total(value: object) -> None:
    code = _spec()["channel"].encode(value)
    assert code in (0.0, 1.0, 2.0)


@given(
    st.lists(st.text(min_size=1, max_size=8).filter(lambda s: s != UNKNOWN), max_size=6),
    st.floats(min_value=1, max_value=86_400),
)
def test_round_trip_any_vocabulary(niches: list[str], window: float) -> None:
    spec = FeatureSpec.build(niches, STYLES, KINDS, window)
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec
    assert again.hash == spec.hash
    assert not math.isnan(again.label_window_s)
