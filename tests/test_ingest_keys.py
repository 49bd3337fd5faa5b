"""Where the pseudonymization key comes from, and that it never shows.

Env ``CARRYON_PSEUDONYM_KEY`` beats env ``CARRYON_PSEUDONYM_KEY_FILE`` beats
``ingest.pseudonym_key_file`` beats the local development key; a configured key that
cannot be used is a ConfigError naming where it came from.
"""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from test_ingest_support import CONFIG, event, grant, run, write_jsonl

from features.errors import ConfigError
from features.ingest import PseudonymKey, resolve_key

HEX_A = "aa" * 32
HEX_B = "bb" * 32
HEX_C = "cc" * 40


def test_env_key_beats_key_files(tmp_path: Path) -> None:
    (tmp_path / "k.hex").write_text(HEX_B)
    (tmp_path / "c.hex").write_text(HEX_C)
    config = replace(CONFIG, pseudonym_key_file="c.hex")
    env = {"CARRYON_PSEUDONYM_KEY": HEX_A, "CARRYON_PSEUDONYM_KEY_FILE": str(tmp_path / "k.hex")}
    key = resolve_key(config, tmp_path, env)
    assert (key.key, key.source, key.path) == (bytes.fromhex(HEX_A), "env", None)


def test_env_key_file_beats_the_configured_file(tmp_path: Path) -> None:
    (tmp_path / "k.hex").write_text(HEX_B + "\n")
    (tmp_path / "c.hex").write_text(HEX_C)
    key = resolve_key(replace(CONFIG, pseudonym_key_file="c.hex"), tmp_path, {"CARRYON_PSEUDONYM_KEY_FILE": "k.hex"})
    assert (key.key, key.source) == (bytes.fromhex(HEX_B), "file")


def test_configured_file_resolves_against_the_project(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "c.hex").write_text(HEX_C)
    key = resolve_key(replace(CONFIG, pseudonym_key_file="secrets/c.hex"), tmp_path, {})
    assert (key.key, key.source) == (bytes.fromhex(HEX_C), "file")
    assert not (tmp_path / ".carryon").exists()


@pytest.mark.parametrize(
    ("env", "config_file", "content", "match"),
    [
        ({"CARRYON_PSEUDONYM_KEY": "abcd"}, None, None, r"CARRYON_PSEUDONYM_KEY: .*2 bytes, it must be >= 32"),
        ({"CARRYON_PSEUDONYM_KEY": "zz" * 32}, None, None, r"CARRYON_PSEUDONYM_KEY: .*not hex"),
        ({"CARRYON_PSEUDONYM_KEY_FILE": "absent.hex"}, None, None,
         r"absent\.hex \(from CARRYON_PSEUDONYM_KEY_FILE\).*cannot read"),
        ({}, "absent.hex", None, r"absent\.hex \(from ingest\.pseudonym_key_file\).*cannot read"),
        ({}, "k.hex", "ab" * 16, r"k\.hex .*16 bytes, it must be >= 32"),
        ({}, "k.hex", "not a key at all", r"k\.hex .*not hex"),
        ({}, "k.hex", "é" * 40, r"k\.hex .*not hex"),
        ({}, "k.hex", "", r"k\.hex .*0 bytes"),
    ],
    ids=["env short", "env not hex", "env file missing", "config file missing", "file short", "file not hex",
         "file not ascii", "file empty"],
)
def test_unusable_configured_key_is_a_config_error(
    tmp_path: Path, env: dict[str, str], config_file: str | None, content: str | None, match: str
) -> None:
    if content is not None:
        (tmp_path / "k.hex").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as caught:
        resolve_key(replace(CONFIG, pseudonym_key_file=config_file), tmp_path, env)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / ".carryon").exists()  # never falls back to a dev key silently


def test_a_key_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "k.hex").mkdir()
    with pytest.raises(ConfigError, match=r"k\.hex .*cannot read"):
        resolve_key(replace(CONFIG, pseudonym_key_file="k.hex"), tmp_path, {})


def test_dev_key_is_created_private_and_reused(tmp_path: Path) -> None:
    first = resolve_key(CONFIG, tmp_path, {})
    path = tmp_path / ".carryon" / "pseudonym.key"
    assert (first.source, first.path) == ("dev-key", ".carryon/pseudonym.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(first.key) == 32
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]  # no temp file left
    second = resolve_key(CONFIG, tmp_path, {})
    assert second == first
    other = resolve_key(CONFIG, tmp_path / "elsewhere", {})
    assert other.key != first.key  # made with secrets, not a constant


def test_damaged_dev_key_is_a_config_error_not_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / ".carryon" / "pseudonym.key"
    path.parent.mkdir()
    path.write_text("garbage")
    with pytest.raises(ConfigError, match=r"\.carryon/pseudonym\.key.*delete it to make a new one"):
        resolve_key(CONFIG, tmp_path, {})
    assert path.read_text() == "garbage"


def test_key_never_appears_in_repr_report_or_outputs(tmp_path: Path) -> None:
    key = resolve_key(CONFIG, tmp_path, {})
    assert key.key.hex() not in repr(key)
    assert key.key_id != key.key.hex()[:12]
    assert len(key.key_id) == 12
    path = write_jsonl(tmp_path / "in.jsonl", [grant("g0"), event("chat", "e1", at_s=1)])
    report = run(tmp_path, [path], key=key)
    text = json.dumps(report.to_dict())
    assert report.to_dict()["pseudonym_key"] == {"source": "dev-key", "key_id": key.key_id,
                                                 "path": ".carryon/pseudonym.key"}
    for out in [*(tmp_path / "clean").rglob("*.parquet"), tmp_path / "clean-quarantine.jsonl"]:
        data = out.read_bytes()
        assert key.key not in data and key.key.hex().encode() not in data
    assert key.key.hex() not in text


def test_short_key_cannot_be_constructed() -> None:
    with pytest.raises(ValueError, match=">= 32 bytes"):
        PseudonymKey(b"short", "env")
