"""Object storage on a local S3-compatible server (moto in server mode on loopback).

The bundle repository: `carryon repo sync` / `carryon publish --upload` copy the local TUF repository to a bucket
in the safe order (target files, versioned metadata, versioned roots, root.json, timestamp.json last), skip what
is already there, and refuse buckets that hold another history. Nodes pull over plain HTTP from the public-read
bucket with python-tuf and the edge client. The store going unreachable at every point of an upload leaves the
bucket publishing the previous state, whole; running the sync again finishes it.

The DVC remote: `dvc push` of a one-stage pipeline's output to s3:// with an endpointurl, `dvc pull` in a fresh
clone, same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient.updater import Updater

from edge.fetch import FetchSettings
from edge.home import EdgeHome
from edge.pull import PullOptions, pull
from edge.trust import add_key
from edge.tuf_store import bootstrap_root
from export.publish import (
    Expiries,
    ObjectStoreError,
    PublishError,
    RepoConfig,
    init_repository,
    publish_bundle,
    refresh,
    rotate_root,
    upload_repository,
)
from export.publish._s3 import BucketUrl, parse_bucket_url

sys.path.insert(0, str(Path(__file__).parent))
from edge_tufrepo import bundle_tar
from s3_server import S3Server, free_port

pytestmark = pytest.mark.scale

ROOT = Path(__file__).resolve().parents[1]
CREATOR = "ana"
EXPIRIES = Expiries(root_days=365, targets_days=90, snapshot_days=7, timestamp_hours=24)
FAST = FetchSettings(connect_timeout_s=2.0, read_timeout_s=5.0, deadline_s=30.0)


# --- fixtures: the server, a repository with its bucket, an edge node ------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto on loopback; this process talks to it with dummy credentials and no AWS config of the machine."""
    folder = tmp_path_factory.mktemp("s3")
    server = S3Server(folder).launch()
    empty = folder / "aws-config"
    empty.touch()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "CARRYON_S3_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in {**server.env(), "AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty),
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(name, value)
        yield server
    server.close()


def quick_client(s3: S3Server) -> Any:
    """One attempt per request: an unreachable store fails at once (the default client retries for seconds)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}))


def _public_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fake_verify(bundle: Path, trusted: dict[str, bytes], revoked: set[str]) -> dict[str, Any]:
    """Stands in for the model-signing check (tests/test_edge_client.py does the same): key trusted, files hashed."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["signing"]["key_id"] in trusted
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    return dict(manifest)


@dataclass
class Site:
    """A local repository, the bucket it is uploaded to, and one edge node pulling from that bucket over HTTP."""

    tmp: Path
    repo: RepoConfig
    url: str  # s3://bucket/prefix
    http: str  # the same over plain HTTP, anonymous
    home: EdgeHome
    key_id: str
    version: int = 0

    def release(self) -> dict[str, Any]:
        """Publish the next champion bundle locally (nothing uploaded)."""
        self.version += 1
        tar = self.tmp / f"{CREATOR}-{self.version}.tar"
        tar.write_bytes(bundle_tar(CREATOR, self.version, self.key_id, extra_manifest={"alias": "champion"}))
        return publish_bundle(self.repo, tar)

    def pull(self) -> dict[str, Any]:
        return pull(self.home, CREATOR, PullOptions(repo=self.http, fetch=FAST), verify=fake_verify,
                    golden=lambda d: {"ok": True})

    def updater(self, name: str = "node") -> Updater:
        """python-tuf's own client on the bucket (a persistent node when ``name`` repeats)."""
        client = self.tmp / "tuf-clients" / name
        (client / "metadata").mkdir(parents=True, exist_ok=True)
        (client / "targets").mkdir(exist_ok=True)
        known = client / "metadata" / "root.json"
        root = None if known.exists() else (self.repo.repository / "metadata" / "1.root.json").read_bytes()
        return Updater(str(client / "metadata"), f"{self.http}/metadata/", str(client / "targets"),
                       f"{self.http}/targets/", bootstrap=root)

    def local(self, relative: str) -> bytes:
        return (self.repo.repository / relative).read_bytes()


def make_site(s3: S3Server, tmp: Path, bucket: str, prefix: str = "carryon") -> Site:
    repo = RepoConfig(tmp / "repository", tmp / "repo-keys", EXPIRIES)
    init_repository(repo)
    http = s3.public_bucket(bucket, prefix)
    home = EdgeHome(tmp / "node")
    bootstrap_root(home.tuf, repo.repository / "metadata" / "1.root.json")
    (tmp / "ana.pub").write_bytes(_public_pem())
    key_id = add_key(home, tmp / "ana.pub", creator=CREATOR)["key_id"]
    return Site(tmp, repo, f"s3://{bucket}/{prefix}", http, home, key_id)


def bucket_object(s3: S3Server, site: Site, relative: str) -> bytes | None:
    url = parse_bucket_url(site.url)
    try:
        body: bytes = s3.client().get_object(Bucket=url.bucket, Key=url.key(relative))["Body"].read()
    except s3.client().exceptions.NoSuchKey:
        return None
    return body


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pipeline.cli", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=ROOT, check=False,
                          env={**os.environ, **(env or {})})


# --- the URL parser --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("http://bucket/prefix", "must look like s3://BUCKET/PREFIX"),
    ("s3:/bucket", "must look like s3://BUCKET/PREFIX"),
    ("s3://", "bucket name ''"),
    ("s3://ab/p", "bucket name 'ab'"),
    ("s3://Bundles/p", "bucket name 'Bundles'"),
    ("s3://my..bucket/p", "bucket name 'my..bucket'"),
    ("s3://-bucket/p", "bucket name '-bucket'"),
    ("s3://bucket/a//b", "prefix segment ''"),
    ("s3://bucket/a/../b", "prefix segment '..'"),
    ("s3://bucket/./b", "prefix segment '.'"),
    ("s3://bucket/a\\b", "prefix segment"),
    ("s3://bucket/a\nb", "prefix segment"),
])
def test_bad_upload_urls_are_refused_with_the_rule(url: str, message: str) -> None:
    with pytest.raises(ObjectStoreError, match=re.escape(message)):
        parse_bucket_url(url)


@pytest.mark.parametrize(("url", "bucket", "prefix", "key"), [
    ("s3://bundles", "bundles", "", "metadata/timestamp.json"),
    ("s3://bundles/", "bundles", "", "metadata/timestamp.json"),
    ("s3://bundles/cdn/carryon/", "bundles", "cdn/carryon", "cdn/carryon/metadata/timestamp.json"),
    ("s3://my.bucket-1/x", "my.bucket-1", "x", "x/metadata/timestamp.json"),
])
def test_upload_urls_name_bucket_and_prefix(url: str, bucket: str, prefix: str, key: str) -> None:
    parsed = parse_bucket_url(url)
    assert parsed == BucketUrl(bucket, prefix)
    assert parsed.key("metadata/timestamp.json") == key
    assert parse_bucket_url(str(parsed)) == parsed


@given(st.text(max_size=80))
def test_url_parser_refuses_with_its_own_error_or_round_trips(text: str) -> None:
    for url in (text, "s3://" + text):
        try:
            parsed = parse_bucket_url(url)
        except ObjectStoreError:
            continue
        assert parse_bucket_url(str(parsed)) == parsed
        assert not parsed.prefix.startswith("/") and not parsed.prefix.endswith("/")
        assert ".." not in parsed.prefix.split("/")


# --- the bundle repository on a bucket -------------------------------------------------------------------------


def test_upload_goes_in_the_safe_order_and_a_rerun_uploads_nothing(s3: S3Server, tmp_path: Path) -> None:
    site = make_site(s3, tmp_path, "order-bucket")
    site.release()
    rotate_root(site.repo, ("timestamp",))  # root version 2, with a new timestamp key
    site.release()
    mark = s3.log_mark()
    result = upload_repository(site.repo.repository, site.url)
    puts = [path.removeprefix("/order-bucket/carryon/") for path, status in s3.requests_since(mark) if status == 200]
    assert puts == result["uploaded"]
    files = sorted(p.relative_to(site.repo.repository).as_posix() for p in site.repo.repository.rglob("*")
                   if p.is_file())
    assert sorted(puts) == files  # everything, once (no temp files exist after a whole publish)
    kinds = ["target" if p.startswith("targets/") else "root" if p.endswith(".root.json") and p[9].isdigit()
             else p.removeprefix("metadata/") if p in ("metadata/root.json", "metadata/timestamp.json")
             else "versioned" for p in puts]
    assert kinds == sorted(kinds, key=["target", "versioned", "root", "root.json", "timestamp.json"].index)
    assert puts[-2:] == ["metadata/root.json", "metadata/timestamp.json"]
    assert [p for p in puts if kinds[puts.index(p)] == "root"] == ["metadata/1.root.json", "metadata/2.root.json"]
    for relative in files:
        assert bucket_object(s3, site, relative) == site.local(relative), relative

    mark = s3.log_mark()
    again = upload_repository(site.repo.repository, site.url)
    assert again["uploaded"] == [] and again["skipped"] == len(files)
    assert s3.requests_since(mark) == []

    refresh(site.repo)  # a scheduled refresh changes only the timestamp
    assert upload_repository(site.repo.repository, site.url)["uploaded"] == ["metadata/timestamp.json"]


def test_objects_carry_their_sha256_and_cache_headers(s3: S3Server, tmp_path: Path) -> None:
    site = make_site(s3, tmp_path, "headers-bucket", prefix="a/b")
    target = site.release()
    upload_repository(site.repo.repository, site.url)
    client = s3.client()
    head = client.head_object(Bucket="headers-bucket", Key="a/b/metadata/timestamp.json")
    assert head["CacheControl"].startswith("no-cache") and head["ContentType"] == "application/json"
    key = f"a/b/targets/{CREATOR}/{target['sha256']}.1.tar"
    head = client.head_object(Bucket="headers-bucket", Key=key)
    assert head["Metadata"]["sha256"] == target["sha256"]
    assert "immutable" in head["CacheControl"] and head["ContentType"] == "application/x-tar"


def test_a_node_pulls_from_the_bucket_over_plain_http(s3: S3Server, tmp_path: Path) -> None:
    site = make_site(s3, tmp_path, "pull-bucket")
    site.release()
    upload_repository(site.repo.repository, site.url)
    assert site.pull()["version"] == 1
    site.release()
    assert site.pull()["status"] == "up-to-date"  # published locally, not uploaded yet: nodes cannot see it
    upload_repository(site.repo.repository, site.url)
    pulled = site.pull()
    assert (pulled["status"], pulled["version"], pulled["previous_version"]) == ("installed", 2, 1)
    up = site.updater("python-tuf")
    up.refresh()
    info = up.get_targetinfo(f"{CREATOR}/2.tar")
    assert info is not None
    assert Path(up.download_target(info)).read_bytes() == (tmp_path / f"{CREATOR}-2.tar").read_bytes()


def _published_versions(site: Site) -> list[int]:
    """A persistent python-tuf node refreshes on the bucket, downloads every trusted target (hash-checked)."""
    up = site.updater()
    up.refresh()
    versions = []
    trusted = Metadata[Targets].from_file(str(site.tmp / "tuf-clients" / "node" / "metadata" / "targets.json"))
    for name in trusted.signed.targets:
        info = up.get_targetinfo(name)
        assert info is not None
        up.download_target(info)
        versions.append(int(name.split("/")[1].removesuffix(".tar")))
    return sorted(versions)


def test_store_unreachable_at_each_point_of_an_upload_leaves_the_previous_state(
        s3: S3Server, tmp_path: Path) -> None:
    site = make_site(s3, tmp_path, "fault-bucket")
    site.release()
    upload_repository(site.repo.repository, site.url)
    assert site.pull()["version"] == 1
    assert _published_versions(site) == [1]
    cuts = 4  # a release uploads the tar, N.snapshot, N.targets and timestamp.json
    for cut in range(cuts):
        published = bucket_object(s3, site, "metadata/timestamp.json")
        site.release()
        sent: list[str] = []

        def on_put(relative: str, sent: list[str] = sent, cut: int = cut) -> None:
            sent.append(relative)
            if len(sent) == cut:
                s3.stop()

        if cut == 0:
            s3.stop()
        try:
            with pytest.raises(ObjectStoreError, match="unreachable") as failed:
                upload_repository(site.repo.repository, site.url, client=quick_client(s3), on_put=on_put)
        finally:
            s3.start()
        assert len(sent) == cut and "metadata/timestamp.json" not in sent
        assert ("the bucket is unchanged" if cut == 0 else "readers still see the previous state") in str(failed.value)
        assert f"carryon repo sync {site.url}" in str(failed.value)
        # The bucket still publishes the previous state, whole: python-tuf and the edge client both agree.
        assert bucket_object(s3, site, "metadata/timestamp.json") == published
        assert _published_versions(site) == list(range(1, site.version))
        assert (site.pull()["status"], site.home.installed_version(CREATOR)) == ("up-to-date", site.version - 1)
        # Running the sync again finishes the job: only what is missing goes up.
        finished = upload_repository(site.repo.repository, site.url)
        assert finished["uploaded"][-1] == "metadata/timestamp.json"
        assert not set(finished["uploaded"][:-1]) & set(sent)
        assert len(finished["uploaded"]) == cuts - cut
        assert _published_versions(site) == list(range(1, site.version + 1))
        assert site.pull()["version"] == site.version


def test_cut_between_a_rotated_root_and_its_timestamp_fails_closed_until_the_rerun(
        s3: S3Server, tmp_path: Path) -> None:
    """TUF's one window no upload order closes: root N+1 names a new timestamp key before the new timestamp lands.

    Nodes refuse the old timestamp (signed by the retired key) and keep their bundle; the rerun heals them.
    """
    site = make_site(s3, tmp_path, "rotate-bucket")
    site.release()
    upload_repository(site.repo.repository, site.url)
    assert site.pull()["version"] == 1
    rotate_root(site.repo, ("timestamp",))

    def on_put(relative: str) -> None:
        if relative == "metadata/root.json":
            s3.stop()

    try:
        with pytest.raises(ObjectStoreError, match="unreachable"):
            upload_repository(site.repo.repository, site.url, client=quick_client(s3), on_put=on_put)
    finally:
        s3.start()
    from edge.client_errors import PullRefused

    with pytest.raises(PullRefused, match="timestamp"):
        site.pull()
    assert site.home.installed_version(CREATOR) == 1
    assert upload_repository(site.repo.repository, site.url)["uploaded"] == ["metadata/timestamp.json"]
    assert site.pull()["status"] == "up-to-date"


def test_buckets_holding_another_history_are_refused_before_any_upload(s3: S3Server, tmp_path: Path) -> None:
    site = make_site(s3, tmp_path / "a", "history-bucket")
    site.release()
    upload_repository(site.repo.repository, site.url)
    # A stale copy of the same repository (taken before the upload's release) must not roll the bucket back.
    stale = RepoConfig(tmp_path / "stale" / "repository", tmp_path / "stale" / "keys", EXPIRIES)
    shutil.copytree(site.repo.repository, stale.repository)
    shutil.copytree(site.repo.keys_dir, stale.keys_dir)
    site.release()
    upload_repository(site.repo.repository, site.url)
    before = bucket_object(s3, site, "metadata/timestamp.json")
    with pytest.raises(ObjectStoreError, match="timestamp version 3, the local repository version 2"):
        upload_repository(stale.repository, site.url)
    # A diverged copy at the same version: refused too.
    refresh(stale)
    with pytest.raises(ObjectStoreError, match="with other content"):
        upload_repository(stale.repository, site.url)
    # Another repository altogether (its own root): refused on 1.root.json.
    other = RepoConfig(tmp_path / "other" / "repository", tmp_path / "other" / "keys", EXPIRIES)
    init_repository(other)
    for _ in range(3):
        refresh(other)  # timestamp version 4: ahead of the bucket's
    mark = s3.log_mark()
    with pytest.raises(ObjectStoreError, match=r"\.json: the bucket holds different content for this published"):
        upload_repository(other.repository, site.url)
    assert s3.requests_since(mark) == []
    assert bucket_object(s3, site, "metadata/timestamp.json") == before


def test_carryon_endpoint_variable_wins_over_boto3s(s3: S3Server, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(s3, tmp_path, "endpoint-bucket")
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("CARRYON_S3_ENDPOINT_URL", s3.url)
    assert upload_repository(site.repo.repository, site.url)["endpoint"] == s3.url
    monkeypatch.delenv("CARRYON_S3_ENDPOINT_URL")
    with pytest.raises(ObjectStoreError, match=f"the object store at {closed} is unreachable"):
        upload_repository(site.repo.repository, site.url, client=quick_client(s3))


def test_store_problems_are_one_clear_error(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(s3, tmp_path, "problems-bucket")
    with pytest.raises(ObjectStoreError, match="the bucket does not exist"):
        upload_repository(site.repo.repository, "s3://no-such-bucket/carryon")
    with pytest.raises(PublishError, match="no TUF repository here"):
        upload_repository(tmp_path / "nowhere", site.url)
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "boto3", None)
        with pytest.raises(ObjectStoreError, match=r"needs boto3 .* pip install 'carryon\[scale\]'"):
            upload_repository(site.repo.repository, site.url)
    with monkeypatch.context() as mp:
        mp.delenv("AWS_ACCESS_KEY_ID")
        mp.delenv("AWS_SECRET_ACCESS_KEY")
        with pytest.raises(ObjectStoreError, match=r"no usable credentials .* set AWS_ACCESS_KEY_ID"):
            upload_repository(site.repo.repository, site.url)
    # A damaged local repository is refused before the store is touched.
    target = site.release()
    (site.repo.repository / "targets" / CREATOR / f"{target['sha256']}.1.tar").unlink()
    with pytest.raises(PublishError, match=r"target ana/1\.tar of the published state is missing"):
        upload_repository(site.repo.repository, site.url)
    assert bucket_object(s3, site, "metadata/timestamp.json") is None


@pytest.mark.slow
def test_cli_publish_upload_and_repo_sync_with_the_store_down(s3: S3Server, tmp_path: Path) -> None:
    """The commands a cron job runs: the store down is one `carryon: error:` line and exit 1; a rerun finishes."""
    site = make_site(s3, tmp_path, "cli-bucket")
    where = ["--repo", site.repo.repository, "--keys", site.repo.keys_dir]
    tar = tmp_path / "v1.tar"
    tar.write_bytes(bundle_tar(CREATOR, 1, site.key_id, extra_manifest={"alias": "champion"}))
    done = cli("publish", tar, *where, "--upload", site.url, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["target"] == f"{CREATOR}/1.tar" and result["upload"]["uploaded"][-1] == "metadata/timestamp.json"
    site.version = 1
    assert site.pull()["version"] == 1
    published = bucket_object(s3, site, "metadata/timestamp.json")

    s3.stop()
    try:
        tar2 = tmp_path / "v2.tar"
        tar2.write_bytes(bundle_tar(CREATOR, 2, site.key_id, extra_manifest={"alias": "champion"}))
        began = time.monotonic()
        down = cli("publish", tar2, *where, "--upload", site.url)
        print(f"publish --upload with the store down failed after {time.monotonic() - began:.1f} s")
        refused = cli("repo", "sync", site.url, "--repo", site.repo.repository)
        local = site.local("metadata/timestamp.json")
        typo = cli("publish", "--refresh", *where, "--upload", "s3://Bad_Bucket/x")
        assert site.local("metadata/timestamp.json") == local  # refused before anything was signed
    finally:
        s3.start()
    for run in (down, refused, typo):
        assert run.returncode == 1 and run.stdout == ""
        assert run.stderr.startswith("carryon: error: ") and run.stderr.count("\n") == 1, run.stderr
    assert "published ana/2.tar in " in down.stderr and "but not uploaded" in down.stderr
    assert "unreachable" in down.stderr and f"carryon repo sync {site.url}" in down.stderr
    assert "unreachable" in refused.stderr and "the bucket is unchanged" in refused.stderr
    assert "bucket name 'Bad_Bucket'" in typo.stderr
    assert bucket_object(s3, site, "metadata/timestamp.json") == published
    assert site.pull()["status"] == "up-to-date"

    synced = cli("repo", "sync", site.url, "--repo", site.repo.repository)
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.startswith("uploaded 4 objects") and "timestamp.json last" in synced.stdout
    assert site.pull()["version"] == 2
    again = cli("repo", "sync", site.url, "--repo", site.repo.repository)
    assert again.returncode == 0 and "is up to date" in again.stdout


# --- the DVC remote on a bucket --------------------------------------------------------------------------------

MAKE = """import pathlib, random
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
rng = random.Random(7)
(out / "events.bin").write_bytes(bytes(rng.randrange(256) for _ in range(200_000)))
(out / "summary.json").write_text('{"events": 200000}\\n')
"""
DVC_YAML = """stages:
  make:
    cmd: python make.py
    deps: [make.py]
    outs: [out]
"""


def _run(argv: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _dvc(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_dvc_push_and_pull_through_an_s3_remote(s3: S3Server, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="dvc-store")
    work = tmp_path / "work"
    work.mkdir()
    (work / "make.py").write_text(MAKE)
    (work / "dvc.yaml").write_text(DVC_YAML)
    _run(["git", "init", "-q"], work)
    _dvc("init", "-q", cwd=work)
    _dvc("repro", "-q", cwd=work)
    _dvc("remote", "add", "-d", "store", "s3://dvc-store/cache", cwd=work)
    _dvc("remote", "modify", "store", "endpointurl", s3.url, cwd=work)
    _dvc("push", cwd=work)
    listed = s3.client().list_objects_v2(Bucket="dvc-store", Prefix="cache/files/md5/")
    assert len(listed.get("Contents", [])) == 3  # two files and the directory's .dir listing
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-q", "-m", "pipeline"], work)

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    assert not (clone / "out").exists()
    _dvc("pull", cwd=clone)
    assert _tree(clone / "out") == _tree(work / "out")
    assert "are in sync" in _dvc("status", "--cloud", cwd=clone)
