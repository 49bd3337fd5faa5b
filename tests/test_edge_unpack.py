"""Safe unpacking of bundle tars: every hostile member refused before anything is written; names fuzzed."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge._unpack import UnpackLimits, check_member_name, safe_unpack
from edge.client_errors import UnpackError


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None, mode: str = "w") -> Path:
    data = data or {}
    with tarfile.open(path, mode) as tar:
        for info in members:
            body = data.get(info.name, b"x" * info.size) if info.isfile() else None
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 3, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info


GOOD = [_member("manifest.json"), _member("models/cta.onnx")]


def test_a_plain_bundle_unpacks(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "1.tar", [*GOOD, _member("models", tarfile.DIRTYPE)], {"manifest.json": b"{}"})
    assert safe_unpack(tar, tmp_path / "out") == ["manifest.json", "models/cta.onnx"]
    assert (tmp_path / "out" / "manifest.json").read_bytes() == b"{}"


@pytest.mark.parametrize(("member", "why"), [
    (_member("/etc/passwd"), "absolute path"),
    (_member("../escape"), r"'\.\.' in path"),
    (_member("models/../../escape"), r"'\.\.' in path"),
    (_member("link", tarfile.SYMTYPE, link="/etc/passwd"), "symlink"),
    (_member("models/inner", tarfile.SYMTYPE, link="../manifest.json"), "symlink"),
    (_member("hard", tarfile.LNKTYPE, link="manifest.json"), "hardlink"),
    (_member("dev", tarfile.CHRTYPE), "device"),
    (_member("blk", tarfile.BLKTYPE), "device"),
    (_member("pipe", tarfile.FIFOTYPE), "fifo"),
    (_member("./manifest.json"), "not a plain name"),
    (_member(".gitattributes"), "not a plain name"),
    (_member("a\\b"), "not a plain name"),
    (_member("models//x"), "not a plain name"),
])
def test_hostile_members_are_refused_before_anything_is_written(tmp_path: Path, member: tarfile.TarInfo,
                                                                 why: str) -> None:
    tar = _tar(tmp_path / "1.tar", [*GOOD, member])
    with pytest.raises(UnpackError, match=why):
        safe_unpack(tar, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_too_many_members_too_large_duplicates_and_conflicts_are_refused(tmp_path: Path) -> None:
    many = _tar(tmp_path / "many.tar", [_member(f"f{i}") for i in range(10)])
    with pytest.raises(UnpackError, match="more than 5 members"):
        safe_unpack(many, tmp_path / "a", UnpackLimits(max_members=5))
    big = _tar(tmp_path / "big.tar", [_member("a", size=600), _member("b", size=600)])
    with pytest.raises(UnpackError, match="more than 1000 bytes"):
        safe_unpack(big, tmp_path / "b", UnpackLimits(max_total_bytes=1000))
    twice = _tar(tmp_path / "twice.tar", [_member("a"), _member("a")])
    with pytest.raises(UnpackError, match="appears twice"):
        safe_unpack(twice, tmp_path / "c")
    clash = _tar(tmp_path / "clash.tar", [_member("models"), _member("models/cta.onnx")])
    with pytest.raises(UnpackError, match="is a file and also a directory"):
        safe_unpack(clash, tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_compressed_or_broken_tars_are_refused(tmp_path: Path) -> None:
    gz = _tar(tmp_path / "1.tar", GOOD, mode="w:gz")
    with pytest.raises(UnpackError, match="not a readable uncompressed tar"):
        safe_unpack(gz, tmp_path / "out")
    (tmp_path / "junk.tar").write_bytes(b"\0" * 100 + b"junk")
    with pytest.raises(UnpackError, match="not a readable uncompressed tar"):
        safe_unpack(tmp_path / "junk.tar", tmp_path / "out2")


_NAMES = st.one_of(
    st.text(min_size=0, max_size=40),
    st.lists(st.sampled_from(["..", ".", "", "a", "models", "x.onnx", "/", "\\", "C:", "~", "a b", ".git", "\0"]),
             min_size=1, max_size=6).map("/".join),
)


@given(name=_NAMES)
def test_check_member_name_accepts_only_plain_relative_paths(name: str) -> None:
    problem = check_member_name(name)
    if problem is None:
        parts = name.rstrip("/").split("/")
        assert not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)
        assert all(c.isascii() and (c.isalnum() or c in "._-") for p in parts for c in p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_NAMES)
def test_whatever_the_name_nothing_lands_outside_the_destination(tmp_path_factory: pytest.TempPathFactory,
                                                                 name: str) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    try:
        tar = _tar(root / "1.tar", [_member(name)])
    except (ValueError, UnicodeError):
        return  # tarfile cannot even write this name
    dest = root / "inside" / "out"
    try:
        extracted = safe_unpack(tar, dest)
    except UnpackError:
        assert sorted(p.name for p in root.iterdir()) == ["1.tar"]
        return
    written = [p for p in root.rglob("*") if p.is_file() and p.name != "1.tar"]
    assert written and all(dest.resolve() in p.resolve().parents for p in written)
    with tarfile.open(tar) as archive:  # what the archive holds: a tar header ends a name at its first NUL
        assert extracted == archive.getnames() == [name.split("\0")[0]]
