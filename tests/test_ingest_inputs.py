"""Inputs that cannot be read at all: one clear line, and nothing on disk changes.

Each case must raise InputUnreadableError naming the file, before any output is
touched: a clean directory and a quarantine from an earlier run stay byte-identical
and no temporary file or directory is left beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_ingest_support import event, generate_raw, grant, run, write_jsonl

from features.errors import InputUnreadableError


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _missing(tmp: Path) -> Path:
    return tmp / "inputs" / "absent.jsonl"


def _empty(tmp: Path) -> Path:
    path = tmp / "inputs" / "empty.jsonl"
    path.write_bytes(b"")
    return path


def _blank_only(tmp: Path) -> Path:
    path = tmp / "inputs" / "blank.jsonl"
    path.write_bytes(b"\n  \n\r\n")
    return path


def _empty_dir(tmp: Path) -> Path:
    path = tmp / "inputs" / "nothing"
    path.mkdir()
    (path / "catalog.json").write_text("{}")
    (path / "readme.txt").write_text("no events here")
    return path


def _wrong_suffix(tmp: Path) -> Path:
    path = tmp / "inputs" / "events.csv"
    path.write_text("event_id,ts\n")
    return path


def _not_parquet(tmp: Path) -> Path:
    path = tmp / "inputs" / "events.parquet"
    path.write_bytes(b'{"event_id": "e1"}\n' * 10)
    return path


def _truncated_parquet(tmp: Path) -> Path:
    whole = tmp / "inputs" / "whole.parquet"
    generate_raw(500, seed=1).write_parquet(whole)
    path = tmp / "inputs" / "cut.parquet"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return path


def _corrupt_parquet_pages(tmp: Path) -> Path:
    whole = tmp / "inputs" / "whole.parquet"
    generate_raw(500, seed=1).write_parquet(whole, compression="zstd")
    data = bytearray(whole.read_bytes())
    for i in range(8, len(data) // 2):  # keep magic bytes and footer, scramble the pages
        data[i] = (data[i] * 7 + 13) % 256
    path = tmp / "inputs" / "scrambled.parquet"
    path.write_bytes(bytes(data))
    whole.unlink()
    return path


def _empty_parquet(tmp: Path) -> Path:
    path = tmp / "inputs" / "rows0.parquet"
    generate_raw(10, seed=1).clear().write_parquet(path)
    return path


CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing file", _missing, r"absent\.jsonl: input not found"),
    ("empty file", _empty, r"empty\.jsonl: file is empty"),
    ("blank lines only", _blank_only, r"blank\.jsonl: holds no records"),
    ("directory without inputs", _empty_dir, r"nothing: directory holds no \.jsonl"),
    ("unsupported suffix", _wrong_suffix, r"events\.csv: unsupported input type '\.csv'"),
    ("not parquet", _not_parquet, r"events\.parquet: not a Parquet file"),
    ("truncated parquet", _truncated_parquet, r"cut\.parquet: not a Parquet file"),
    ("corrupt parquet pages", _corrupt_parquet_pages, r"scrambled\.parquet: "),
    ("parquet without rows", _empty_parquet, r"rows0\.parquet: holds no records"),
]


@pytest.mark.parametrize(("make", "match"), [(m, r) for _, m, r in CASES], ids=[n for n, _, _ in CASES])
def test_unreadable_input_raises_and_leaves_outputs_untouched(
    tmp_path: Path, make: Callable[[Path], Path], match: str
) -> None:
    good = write_jsonl(tmp_path / "inputs" / "good.jsonl", [grant("g0"), event("chat", "e1", at_s=1), "not json"])
    run(tmp_path, [good])  # an earlier, successful run
    before = _snapshot(tmp_path / "clean"), (tmp_path / "clean-quarantine.jsonl").read_bytes()
    siblings = sorted(p.name for p in tmp_path.iterdir())

    bad = make(tmp_path)
    with pytest.raises(InputUnreadableError, match=match) as caught:
        run(tmp_path, [good, bad])
    message = str(caught.value)
    assert "\n" not in message
    assert bad.name in message

    assert (_snapshot(tmp_path / "clean"), (tmp_path / "clean-quarantine.jsonl").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no temp dir or file left


def test_first_run_with_unreadable_input_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputUnreadableError):
        run(tmp_path / "out", [tmp_path / "absent.parquet"])
    assert not (tmp_path / "out").exists()


def test_no_input_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputUnreadableError, match="no input given"):
        run(tmp_path, [])


def test_own_outputs_are_refused_as_inputs(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "inputs" / "good.jsonl", [grant("g0"), "not json"])
    run(tmp_path, [good])
    with pytest.raises(InputUnreadableError, match=r"clean-quarantine\.jsonl: is one of ingest's own outputs"):
        run(tmp_path, [tmp_path / "clean-quarantine.jsonl"])
    with pytest.raises(InputUnreadableError, match=r"data\.parquet: is one of ingest's own outputs"):
        run(tmp_path, [next((tmp_path / "clean").rglob("data.parquet"))])
