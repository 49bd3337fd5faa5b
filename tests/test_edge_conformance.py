"""The tuf-conformance client CLI (``python -m edge.conformance``) against a real repository over loopback HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from edge_tufrepo import TufRepo
from httpmirror import Mirror


def client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.conformance", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TufRepo, Mirror]]:
    repo = TufRepo(tmp_path / "repo")
    repo.add_target("files/hello.txt", b"hello edge")
    repo.publish()
    mirror = Mirror(repo.dir)
    yield repo, mirror
    mirror.stop()


def test_init_refresh_download_and_cache(served: tuple[TufRepo, Mirror], tmp_path: Path) -> None:
    repo, mirror = served
    meta, targets = tmp_path / "client-meta", tmp_path / "client-targets"
    meta.mkdir()
    (tmp_path / "root.json").write_bytes(repo.root_bytes)
    assert client("--metadata-dir", str(meta), "init", str(tmp_path / "root.json")).returncode == 0
    assert mirror.requests == []  # init makes no request
    url = ["--metadata-dir", str(meta), "--metadata-url", f"{mirror.url}/metadata"]
    done = client(*url, "refresh")
    assert done.returncode == 0, done.stderr
    assert {"root.json", "timestamp.json", "snapshot.json", "targets.json"} <= {p.name for p in meta.iterdir()}
    download = [*url, "--target-name", "files/hello.txt", "--target-base-url", f"{mirror.url}/targets",
                "--target-dir", str(targets), "download"]
    assert client(*download).returncode == 0
    assert [p.read_bytes() for p in targets.iterdir()] == [b"hello edge"]
    before = [r for r in mirror.requests if "/targets/" in r[0]]
    assert client(*download).returncode == 0
    assert [r for r in mirror.requests if "/targets/" in r[0]] == before  # cached: not fetched again


def test_failures_exit_1(served: tuple[TufRepo, Mirror], tmp_path: Path) -> None:
    repo, mirror = served
    meta = tmp_path / "m"
    meta.mkdir()
    (tmp_path / "root.json").write_bytes(repo.root_bytes)
    client("--metadata-dir", str(meta), "init", str(tmp_path / "root.json"))
    url = ["--metadata-dir", str(meta), "--metadata-url", f"{mirror.url}/metadata"]
    assert client(*url, "refresh").returncode == 0
    missing = client(*url, "--target-name", "files/nope.txt", "--target-base-url", f"{mirror.url}/targets",
                     "--target-dir", str(tmp_path / "t"), "download")
    assert missing.returncode == 1 and "not in the trusted metadata" in missing.stderr
    mirror.behave("alter", match="/targets/")
    altered = client(*url, "--target-name", "files/hello.txt", "--target-base-url", f"{mirror.url}/targets",
                     "--target-dir", str(tmp_path / "t"), "download")
    assert altered.returncode == 1
    assert not list((tmp_path / "t").iterdir())
    repo.publish(timestamp_expires=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    expired = client(*url, "refresh")
    assert expired.returncode == 1 and "ExpiredMetadataError" in expired.stderr
    assert client("--metadata-dir", str(meta), "refresh").returncode == 1  # no --metadata-url
