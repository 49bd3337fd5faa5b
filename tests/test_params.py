"""params.yaml loader: the shipped file loads, and every bad value is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
_LIGHTGBM = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["lightgbm"]


def _write(tmp_path: Path, mutate: dict[str, dict[str, Any]] | None = None, drop: str = "") -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in (mutate or {}).items():
        raw[section].update(values)
    if drop:
        section, _, key = drop.partition(".")
        if key:
            del raw[section][key]
        else:
            del raw[section]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_params_load() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.simulate.seed == 20261127
    assert params.consent.snapshot == "latest"
    assert params.ingest.max_ts is None
    assert params.features.label_window_s == 120.0
    assert params.train.lightgbm.early_stopping_rounds == 20
    assert params.train.lightgbm.validation_fraction == 0.15


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        ({"simulate": {"creators": 0}}, r"simulate\.creators must be an integer >= 1, got 0"),
        ({"simulate": {"seed": "x"}}, r"simulate\.seed must be an integer >= 0, got 'x'"),
        ({"simulate": {"scale": True}}, r"simulate\.scale must be a number"),
        ({"simulate": {"corrupt_fraction": 0.9}}, r"simulate\.corrupt_fraction must be a number in \[0.0, 0.5\]"),
        ({"simulate": {"start": "yesterday"}}, r"simulate\.start must be an ISO 8601 time"),
        ({"simulate": {"start": "2026-01-01T00:00:00"}}, r"simulate\.start must be an ISO 8601 time with UTC offset"),
        ({"ingest": {"partitions": 0}}, r"ingest\.partitions must be an integer >= 1"),
        ({"ingest": {"pseudonym_key_file": ""}}, r"ingest\.pseudonym_key_file must be a file path or null"),
        ({"ingest": {"max_ts": "soon"}}, r"ingest\.max_ts must be an ISO 8601"),
        ({"consent": {"snapshot": "newest"}}, r"consent\.snapshot must be 'latest' or an ISO 8601"),
        ({"features": {"label_window_s": 0}}, r"features\.label_window_s must be a number in \[1.0"),
        ({"train": {"lightgbm": {**_LIGHTGBM, "early_stopping_rounds": -1}}},
         r"train\.lightgbm\.early_stopping_rounds must be an integer >= 0, got -1"),
        ({"train": {"lightgbm": {**_LIGHTGBM, "validation_fraction": 0.95}}},
         r"train\.lightgbm\.validation_fraction must be a number in \[0\.01, 0\.9\]"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, mutate: dict[str, dict[str, Any]], match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        load_params(_write(tmp_path, mutate))


@pytest.mark.parametrize(
    ("drop", "match"),
    [
        ("consent", r"section 'consent' is missing"),
        ("ingest.partitions", r"ingest\.partitions is missing; add it"),
    ],
)
def test_missing_keys_are_named(tmp_path: Path, drop: str, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        load_params(_write(tmp_path, drop=drop))


def test_explicit_snapshot_and_max_ts_are_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"consent": {"snapshot": "2026-09-01T00:00:00Z"}, "ingest": {"max_ts": "2027-01-01T00:00:00Z"}},
    )
    params = load_params(path)
    assert params.consent.snapshot == "2026-09-01T00:00:00Z"
    assert params.ingest.max_ts == "2027-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("text", "match"),
    [("simulate: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "must be a mapping of sections")],
)
def test_malformed_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=match):
        load_params(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read params"):
        load_params(tmp_path / "nope.yaml")
