"""The TUF repository `carryon publish` writes, read back by python-tuf's own client over real loopback HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.exceptions import ExpiredMetadataError, UnsignedMetadataError
from tuf.ngclient.updater import Updater
from typer.testing import CliRunner

from export.publish import (
    REVOCATIONS,
    BundleRefusedError,
    Expiries,
    PublishError,
    RepoConfig,
    RepoNotInitializedError,
    RoleKeyError,
    _keys,
    _store,
    init_repository,
    newest_bundle_version,
    publish_bundle,
    refresh,
    repository_status,
    revoke_creator_key,
    rotate_root,
)
from export.publish._manifest import read_bundle_info
from export.publish._tuf import CryptoSigner, Metadata, Root, Timestamp

ROOT = Path(__file__).resolve().parents[1]
EXPIRIES = Expiries(root_days=365, targets_days=90, snapshot_days=7, timestamp_hours=24)


# --- fixtures: bundle tars, a real HTTP server, python-tuf's client ------------------------------------------


def manifest(creator: str = "maya", version: int = 1, **fields: Any) -> dict[str, Any]:
    base = {"schema": 1, "creator_id": creator, "bundle_version": version, "personalization": True,
            "alias": "champion", "signing": {"key_id": "0123456789abcdef", "dev_key": True},
            "models": {"cta": {"file": "models/cta.onnx"}}}
    base.update(fields)
    return base


def tar_bytes(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def make_bundle(folder: Path, creator: str = "maya", version: int = 1, model: bytes = b"onnx-v1",
                **fields: Any) -> Path:
    """A small bundle tar in the transport form: manifest.json and model files at top level."""
    path = folder / f"{creator}-{version}-{hashlib.sha256(repr(fields).encode()).hexdigest()[:6]}.tar"
    path.write_bytes(tar_bytes({"manifest.json": json.dumps(manifest(creator, version, **fields)).encode(),
                                "models/cta.onnx": model}))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on loopback serving a directory; tests put repositories under it."""
    root = tmp_path_factory.mktemp("served")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def repo(served: tuple[Path, str], tmp_path: Path, request: pytest.FixtureRequest) -> RepoConfig:
    """An initialized repository under the served directory, its keys outside it."""
    config = RepoConfig(served[0] / request.node.name, tmp_path / "repo-keys", EXPIRIES)
    init_repository(config)
    return config


def updater(served: tuple[Path, str], config: RepoConfig, client: Path, bootstrap: bytes | None = None) -> Updater:
    """python-tuf's client, bootstrapped from root version 1 (or ``bootstrap``), on the served repository."""
    url = f"{served[1]}/{config.repository.name}"
    (client / "metadata").mkdir(parents=True, exist_ok=True)
    root = bootstrap if bootstrap is not None else (config.repository / "metadata" / "1.root.json").read_bytes()
    return Updater(str(client / "metadata"), f"{url}/metadata/", str(client / "targets"), f"{url}/targets/",
                   bootstrap=root)


def download(up: Updater, name: str) -> bytes:
    info = up.get_targetinfo(name)
    assert info is not None, f"{name} is not in the trusted targets"
    return Path(up.download_target(info)).read_bytes()


def timestamp_version(config: RepoConfig) -> int:
    return _store.load_state(config.repository).timestamp.signed.version


# --- init ------------------------------------------------------------------------------------------------------


def test_init_writes_consistent_snapshot_layout_and_private_role_keys(repo: RepoConfig) -> None:
    folder = repo.repository / "metadata"
    assert sorted(p.name for p in folder.iterdir()) == [
        "1.root.json", "1.snapshot.json", "1.targets.json", "root.json", "timestamp.json"]
    assert (folder / "root.json").read_bytes() == (folder / "1.root.json").read_bytes()
    root = Metadata.from_bytes((folder / "root.json").read_bytes()).signed
    assert isinstance(root, Root) and root.consistent_snapshot is True
    for role in _keys.ROLES:
        key = repo.keys_dir / f"{role}.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert _keys.load(repo.keys_dir, role, root).public_key.keyid in root.roles[role].keyids
    assert stat.S_IMODE(repo.keys_dir.stat().st_mode) == 0o700
    served_files = [p for p in repo.repository.rglob("*") if p.is_file()]
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in served_files)
    assert not any(p.suffix == ".pem" for p in served_files)
    expiry = {md: repository_status(repo.repository)["expires"][md] for md in ("root", "timestamp")}
    assert expiry["root"] > expiry["timestamp"]


def test_init_refuses_twice_keys_inside_repository_and_leftover_keys(tmp_path: Path, repo: RepoConfig) -> None:
    with pytest.raises(PublishError, match="already a TUF repository"):
        init_repository(repo)
    inside = RepoConfig(tmp_path / "r", tmp_path / "r" / "keys", EXPIRIES)
    with pytest.raises(PublishError, match="inside the repository"):
        init_repository(inside)
    assert not (tmp_path / "r" / "keys").exists()
    with pytest.raises(RoleKeyError, match="role keys exist"):
        init_repository(RepoConfig(tmp_path / "other", repo.keys_dir, EXPIRIES))
    assert not (tmp_path / "other" / "metadata").exists()


def test_commands_on_a_missing_repository_name_the_fix(tmp_path: Path) -> None:
    config = RepoConfig(tmp_path / "none", tmp_path / "keys", EXPIRIES)
    bundle = make_bundle(tmp_path)
    calls: list[Callable[[], object]] = [lambda: publish_bundle(config, bundle), lambda: refresh(config),
             lambda: revoke_creator_key(config, "0123456789abcdef", "x"), lambda: rotate_root(config),
             lambda: repository_status(config.repository)]
    for call in calls:
        with pytest.raises(RepoNotInitializedError, match="carryon repo init --repo"):
            call()
    assert newest_bundle_version(config.repository, "maya") == 0


# --- publish ---------------------------------------------------------------------------------------------------


def test_published_bundle_downloads_through_python_tuf_over_http(
        served: tuple[Path, str], repo: RepoConfig, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, version=3)
    result = publish_bundle(repo, bundle)
    assert result["target"] == "maya/3.tar" and result["forced"] is False
    assert result["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    stored = repo.repository / "targets" / "maya" / f"{result['sha256']}.3.tar"
    assert stored.read_bytes() == bundle.read_bytes()
    up = updater(served, repo, tmp_path / "client")
    info = up.get_targetinfo("maya/3.tar")
    assert info is not None
    assert info.custom == {"creator": "maya", "bundle_version": 3}
    assert info.hashes == {"sha256": result["sha256"]} and info.length == len(bundle.read_bytes())
    assert Path(up.download_target(info)).read_bytes() == bundle.read_bytes()
    assert newest_bundle_version(repo.repository, "maya") == 3


def test_bundle_versions_only_move_forward_per_creator(repo: RepoConfig, tmp_path: Path) -> None:
    publish_bundle(repo, make_bundle(tmp_path, version=2))
    before = timestamp_version(repo)
    for version in (1, 2):
        with pytest.raises(BundleRefusedError, match=f"bundle_version {version} of creator 'maya' is not newer "
                                                     "than the published version 2"):
            publish_bundle(repo, make_bundle(tmp_path, version=version, model=b"other"), force=True)
    assert timestamp_version(repo) == before
    assert not (repo.repository / "metadata" / f"{before + 1}.targets.json").exists()
    publish_bundle(repo, make_bundle(tmp_path, creator="ana", version=1))
    publish_bundle(repo, make_bundle(tmp_path, version=5))
    assert repository_status(repo.repository)["creators"] == {
        "ana": {"newest": 1, "versions": [1]}, "maya": {"newest": 5, "versions": [2, 5]}}


@pytest.mark.parametrize(("fields", "reason"), [
    ({"alias": "candidate"}, "alias 'candidate', not 'champion'"),
    ({"alias": None}, "alias None, not 'champion'"),
    ({"rehearsal": True}, "release rehearsal"),
])
def test_non_champion_bundles_need_force(repo: RepoConfig, tmp_path: Path, fields: dict[str, Any],
                                         reason: str) -> None:
    bundle = make_bundle(tmp_path, version=1, **fields)
    before = timestamp_version(repo)
    with pytest.raises(BundleRefusedError, match=f"not published: .*{reason}.*or pass --force"):
        publish_bundle(repo, bundle)
    assert timestamp_version(repo) == before
    assert list((repo.repository / "targets").iterdir()) == []
    result = publish_bundle(repo, bundle, force=True)
    assert result["forced"] is True and reason in result["not_champion_reason"]
    assert repository_status(repo.repository)["creators"]["maya"]["newest"] == 1


def _bad(fields: dict[str, Any]) -> bytes:
    return tar_bytes({"manifest.json": json.dumps(manifest(**fields)).encode()})


def _gzip_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = json.dumps(manifest()).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


BAD_TARS = [
    (b"not a tar at all", "not a readable uncompressed tar"),
    (b"", "not a readable uncompressed tar"),
    (_gzip_tar(), "not a readable uncompressed tar"),
    (tar_bytes({"golden.json": b"{}"}), "has no top-level manifest.json"),
    (tar_bytes({"x/manifest.json": json.dumps(manifest()).encode()}), "has no top-level manifest.json"),
    (tar_bytes({"manifest.json": json.dumps(manifest()).encode()}, links=("models/cta.onnx",)),
     "'models/cta.onnx' is not a regular file"),
    (tar_bytes({"manifest.json": b"{not json"}), "manifest.json is not valid JSON"),
    (tar_bytes({"manifest.json": b"[1, 2]"}), "must be a JSON object"),
    (_bad({"schema": 2}), "schema must be 1, got 2"),
    (_bad({"creator_id": "../etc"}), "creator_id '../etc' must be 1-64 letters"),
    (_bad({"creator_id": "a/b"}), "creator_id 'a/b' must be"),
    (_bad({"creator_id": 7}), "'creator_id' must be a creator id, got 7"),
    (_bad({"version": 0}), "'bundle_version' must be an integer >= 1, got 0"),
    (_bad({"bundle_version": "3"}), "'bundle_version' must be an integer >= 1, got '3'"),
    (_bad({"bundle_version": True}), "'bundle_version' must be an integer >= 1, got True"),
    (_bad({"personalization": "no"}), "'personalization' must be true or false, got 'no'"),
    (_bad({"rehearsal": "yes"}), "'rehearsal' must be true or false"),
    (_bad({"alias": 3}), "'alias' must be a string"),
]


@pytest.mark.parametrize(("data", "message"), BAD_TARS)
def test_unreadable_or_malformed_bundles_are_refused(repo: RepoConfig, tmp_path: Path, data: bytes,
                                                     message: str) -> None:
    bundle = tmp_path / "bad.tar"
    bundle.write_bytes(data)
    before = timestamp_version(repo)
    with pytest.raises(BundleRefusedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        publish_bundle(repo, bundle, force=True)
    assert timestamp_version(repo) == before
    assert list((repo.repository / "targets").iterdir()) == []


def test_duplicate_members_and_missing_file_are_refused(repo: RepoConfig, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for _ in range(2):
            data = json.dumps(manifest()).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "dup.tar").write_bytes(buffer.getvalue())
    with pytest.raises(BundleRefusedError, match=r"'manifest\.json' appears twice"):
        publish_bundle(repo, tmp_path / "dup.tar")
    with pytest.raises(BundleRefusedError, match=r"absent\.tar: cannot read the bundle tar"):
        publish_bundle(repo, tmp_path / "absent.tar")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_manifest_reader_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    try:
        read_bundle_info(data, "fuzz.tar")
    except BundleRefusedError as e:
        message = str(e)
    else:
        return
    assert message.startswith("fuzz.tar: ")


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["schema", "creator_id", "bundle_version", "personalization", "alias",
                                        "rehearsal"]), _JSON))
def test_manifest_reader_accepts_only_well_typed_fields(fields: dict[str, Any]) -> None:
    data = tar_bytes({"manifest.json": json.dumps({**manifest(), **fields}).encode()})
    try:
        info = read_bundle_info(data, "fuzz.tar")
    except BundleRefusedError:
        return
    assert isinstance(info.creator_id, str) and "/" not in info.creator_id and not info.creator_id.startswith(".")
    assert type(info.bundle_version) is int and info.bundle_version >= 1
    assert isinstance(info.personalization, bool) and isinstance(info.rehearsal, bool)


def test_rollback_and_kill_switch_are_ordinary_new_versions(
        served: tuple[Path, str], repo: RepoConfig, tmp_path: Path) -> None:
    publish_bundle(repo, make_bundle(tmp_path, version=1, model=b"model-A"))
    publish_bundle(repo, make_bundle(tmp_path, version=2, model=b"model-B"))
    # kill switch: a bundle that turns personalization off, published like any other champion
    kill = publish_bundle(repo, make_bundle(tmp_path, version=3, model=b"model-B", personalization=False))
    assert kill["personalization"] is False and kill["forced"] is False
    # rollback: the older champion (model A) rebuilt as a new version
    publish_bundle(repo, make_bundle(tmp_path, version=4, model=b"model-A"))
    up = updater(served, repo, tmp_path / "client")
    versions = {name: up.get_targetinfo(name) for name in ("maya/1.tar", "maya/2.tar", "maya/3.tar", "maya/4.tar")}
    assert all(info is not None for info in versions.values())
    newest = max(info.custom["bundle_version"] for info in versions.values() if info is not None)
    assert newest == 4
    with tarfile.open(fileobj=io.BytesIO(download(up, "maya/3.tar"))) as tar:
        handle = tar.extractfile("manifest.json")
        assert handle is not None and json.load(handle)["personalization"] is False
    with tarfile.open(fileobj=io.BytesIO(download(up, "maya/4.tar"))) as tar:
        handle = tar.extractfile("models/cta.onnx")
        assert handle is not None and handle.read() == b"model-A"


# --- freshness: refresh and freeze -----------------------------------------------------------------------------


def test_without_refresh_nodes_see_a_frozen_repository_and_refresh_thaws_it(
        served: tuple[Path, str], tmp_path: Path) -> None:
    # python-tuf's Updater judges expiry by the system clock only, so the repository is made in the past.
    past = datetime.now(UTC) - timedelta(hours=30)
    config = RepoConfig(served[0] / "frozen", tmp_path / "keys", EXPIRIES)
    init_repository(config, now=past)
    publish_bundle(config, make_bundle(tmp_path, version=1), now=past)
    with pytest.raises(ExpiredMetadataError, match="timestamp"):
        updater(served, config, tmp_path / "client").refresh()
    old_expiry = _store.load_state(config.repository).timestamp.signed.expires
    result = refresh(config)
    assert result["resigned"] == ["timestamp"]
    new_expiry = _store.load_state(config.repository).timestamp.signed.expires
    assert new_expiry - old_expiry >= timedelta(hours=29)
    up = updater(served, config, tmp_path / "client")
    up.refresh()
    assert up.get_targetinfo("maya/1.tar") is not None


def test_refresh_resigns_snapshot_and_targets_past_half_their_lifetime(repo: RepoConfig) -> None:
    state = _store.load_state(repo.repository)
    versions = (state.targets.signed.version, state.snapshot.signed.version)
    soon = datetime.now(UTC) + timedelta(days=1)
    assert refresh(repo, now=soon)["resigned"] == ["timestamp"]
    later = datetime.now(UTC) + timedelta(days=4)  # past half of the 7-day snapshot lifetime
    assert refresh(repo, now=later)["resigned"] == ["snapshot", "timestamp"]
    state = _store.load_state(repo.repository)
    assert (state.targets.signed.version, state.snapshot.signed.version) == (versions[0], versions[1] + 1)
    assert state.snapshot.signed.expires >= later.replace(microsecond=0) + timedelta(days=7)
    result = refresh(repo, now=datetime.now(UTC) + timedelta(days=50))
    assert result["resigned"] == ["targets", "snapshot", "timestamp"]
    assert result["root_renewal_due"] is False
    assert refresh(repo, now=datetime.now(UTC) + timedelta(days=200))["root_renewal_due"] is True


# --- revocation list -------------------------------------------------------------------------------------------


def test_revocation_list_reaches_nodes_as_a_signed_target(
        served: tuple[Path, str], repo: RepoConfig, tmp_path: Path) -> None:
    first = revoke_creator_key(repo, "0123456789abcdef", "laptop stolen")
    assert first["already_revoked"] is False
    revoke_creator_key(repo, "fedcba9876543210", "left the team")
    again = revoke_creator_key(repo, "0123456789abcdef", "again")
    assert again["already_revoked"] is True and again["targets_version"] == first["targets_version"] + 1
    listing = json.loads(download(updater(served, repo, tmp_path / "client"), REVOCATIONS))
    assert listing["schema"] == 1
    assert [(r["key_id"], r["reason"]) for r in listing["revoked"]] == [
        ("0123456789abcdef", "laptop stolen"), ("fedcba9876543210", "left the team")]
    assert all(r["revoked_at"].endswith("Z") for r in listing["revoked"])
    assert [r["key_id"] for r in repository_status(repo.repository)["revoked_keys"]] == [
        "0123456789abcdef", "fedcba9876543210"]


@pytest.mark.parametrize(("key_id", "reason", "message"), [
    ("0123", "x", "must be 16 lowercase hex"), ("0123456789ABCDEF", "x", "must be 16 lowercase hex"),
    ("0123456789abcdef", "  ", "--reason must say why"),
])
def test_bad_revocations_are_refused(repo: RepoConfig, key_id: str, reason: str, message: str) -> None:
    before = timestamp_version(repo)
    with pytest.raises(PublishError, match=message):
        revoke_creator_key(repo, key_id, reason)
    assert timestamp_version(repo) == before


# --- root rotation ---------------------------------------------------------------------------------------------


def _resign_with(path: Path, signer: CryptoSigner, bump: bool = True) -> None:
    md = Metadata.from_bytes(path.read_bytes())
    if bump:
        md.signed.version += 1
    md.sign(signer)
    path.write_bytes(_store.serialize(md))


def test_root_rotation_is_followed_by_an_old_client_and_retired_keys_are_refused(
        served: tuple[Path, str], repo: RepoConfig, tmp_path: Path) -> None:
    publish_bundle(repo, make_bundle(tmp_path, version=1))
    root_v1 = (repo.repository / "metadata" / "1.root.json").read_bytes()
    updater(served, repo, tmp_path / "client").refresh()  # the node trusts the pre-rotation timestamp
    result = rotate_root(repo, roles=("root", "targets", "snapshot", "timestamp"))
    assert result["root_version"] == 2 and result["rotated"] == ["root", "targets", "snapshot", "timestamp"]
    root2 = Metadata.from_bytes((repo.repository / "metadata" / "2.root.json").read_bytes())
    assert len(root2.signatures) == 2  # old and new root key
    retired = {p.name.split(".")[0]: p for p in (repo.keys_dir / "retired").iterdir()}
    assert sorted(retired) == ["root", "snapshot", "targets", "timestamp"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in retired.values())
    publish_bundle(repo, make_bundle(tmp_path, version=2))

    up = updater(served, repo, tmp_path / "client", bootstrap=root_v1)
    assert download(up, "maya/2.tar") == make_bundle(tmp_path, version=2).read_bytes()
    assert Metadata.from_bytes((tmp_path / "client" / "metadata" / "root.json").read_bytes()).signed.version == 2

    # A timestamp signed only by the retired timestamp key is refused.
    timestamp = repo.repository / "metadata" / "timestamp.json"
    good = timestamp.read_bytes()
    _resign_with(timestamp, _keys._read(retired["timestamp"]))
    with pytest.raises(UnsignedMetadataError, match="timestamp"):
        updater(served, repo, tmp_path / "client2", bootstrap=root_v1).refresh()
    timestamp.write_bytes(good)

    # A root version 3 signed only by the retired root key is refused too.
    root3 = repo.repository / "metadata" / "3.root.json"
    root3.write_bytes((repo.repository / "metadata" / "2.root.json").read_bytes())
    _resign_with(root3, _keys._read(retired["root"]))
    with pytest.raises(UnsignedMetadataError, match="root"):
        updater(served, repo, tmp_path / "client3", bootstrap=root_v1).refresh()
    root3.unlink()
    updater(served, repo, tmp_path / "client4", bootstrap=root_v1).refresh()


def test_rotate_root_without_roles_renews_root_with_the_same_keys(repo: RepoConfig) -> None:
    before = _store.load_state(repo.repository).root.signed
    result = rotate_root(repo, roles=(), now=datetime.now(UTC) + timedelta(days=300))
    after = _store.load_state(repo.repository).root.signed
    assert result["rotated"] == [] and result["retired_key_files"] == []
    assert after.version == before.version + 1 and after.expires > before.expires
    assert {r: after.roles[r].keyids for r in _keys.ROLES} == {r: before.roles[r].keyids for r in _keys.ROLES}
    with pytest.raises(PublishError, match="--role 'admin' is not a TUF role"):
        rotate_root(repo, roles=("admin",))


def test_rotation_cut_short_before_key_promotion_still_publishes(
        served: tuple[Path, str], repo: RepoConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(keys_dir: Path, role: str) -> str | None:
        raise OSError("power cut")

    monkeypatch.setattr(_keys, "promote", crash)
    with pytest.raises(OSError, match="power cut"):
        rotate_root(repo, roles=("targets",))
    monkeypatch.undo()
    assert (repo.keys_dir / "targets.pem.new").exists()
    publish_bundle(repo, make_bundle(tmp_path, version=1))  # finds the new key and promotes it
    assert not (repo.keys_dir / "targets.pem.new").exists()
    assert download(updater(served, repo, tmp_path / "client"), "maya/1.tar")


# --- atomicity: a publish that fails midway ---------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["snapshot", "timestamp"])
def test_a_publish_failing_midway_leaves_the_previous_state_published(
        served: tuple[Path, str], repo: RepoConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        failing: str) -> None:
    publish_bundle(repo, make_bundle(tmp_path, version=1))
    real_versioned, real_timestamp = _store.write_versioned, _store.write_timestamp

    def versioned(repo_dir: Path, md: Any) -> Any:
        if md.signed.type == failing:
            raise OSError("disk full")
        return real_versioned(repo_dir, md)

    def timestamp(repo_dir: Path, md: Metadata[Timestamp]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_store, "write_versioned", versioned)
    if failing == "timestamp":
        monkeypatch.setattr(_store, "write_timestamp", timestamp)
    before = (repo.repository / "metadata" / "timestamp.json").read_bytes()
    with pytest.raises(OSError, match="disk full"):
        publish_bundle(repo, make_bundle(tmp_path, version=2))
    monkeypatch.setattr(_store, "write_versioned", real_versioned)
    monkeypatch.setattr(_store, "write_timestamp", real_timestamp)
    assert (repo.repository / "metadata" / "timestamp.json").read_bytes() == before
    up = updater(served, repo, tmp_path / "client")
    up.refresh()
    assert up.get_targetinfo("maya/1.tar") is not None and up.get_targetinfo("maya/2.tar") is None
    assert newest_bundle_version(repo.repository, "maya") == 1
    # the next publish overwrites what the failed one left behind
    publish_bundle(repo, make_bundle(tmp_path, version=2))
    assert download(updater(served, repo, tmp_path / "client2"), "maya/2.tar")


def test_changes_wait_for_each_other(repo: RepoConfig, tmp_path: Path) -> None:
    """A scheduled refresh racing a publish must not drop the publish: changes take a lock in turn."""
    import fcntl
    import os

    bundle = make_bundle(tmp_path, version=1)
    fd = os.open(repo.keys_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    worker = threading.Thread(target=publish_bundle, args=(repo, bundle))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive()  # waiting for the lock, nothing written yet
    assert newest_bundle_version(repo.repository, "maya") == 0
    os.close(fd)
    worker.join(30)
    assert not worker.is_alive()
    assert newest_bundle_version(repo.repository, "maya") == 1


# --- role keys -------------------------------------------------------------------------------------------------


def test_role_key_problems_are_refused_with_the_fix(repo: RepoConfig, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, version=1)
    key = repo.keys_dir / "targets.pem"
    key.chmod(0o644)
    with pytest.raises(RoleKeyError, match=r"readable by others.*chmod 600"):
        publish_bundle(repo, bundle)
    key.chmod(0o600)
    saved = key.read_bytes()
    key.unlink()
    with pytest.raises(RoleKeyError, match="targets role key file is missing"):
        publish_bundle(repo, bundle)
    _keys.generate(repo.keys_dir, "targets")
    with pytest.raises(RoleKeyError, match="not the one root version 1 names"):
        publish_bundle(repo, bundle)
    key.write_bytes(b"garbage")
    with pytest.raises(RoleKeyError, match="not an unencrypted PEM private key"):
        publish_bundle(repo, bundle)
    key.write_bytes(saved)
    assert list((repo.repository / "targets").iterdir()) == []
    publish_bundle(repo, bundle)


# --- CLI -------------------------------------------------------------------------------------------------------


def test_cli_init_publish_refresh_revoke_rotate_status(tmp_path: Path) -> None:
    from pipeline.cli import app

    runner = CliRunner()
    where = ["--repo", str(tmp_path / "repo"), "--keys", str(tmp_path / "keys"), "--params", str(ROOT / "params.yaml")]

    def run(*args: str) -> Any:
        return runner.invoke(app, list(args))

    status = run("repo", "status", "--repo", str(tmp_path / "repo"))
    assert status.exit_code == 1
    assert status.stderr.strip() == (f"carryon: error: {tmp_path / 'repo'}: no TUF repository here "
                                     "(metadata/1.root.json is missing); create it with: carryon repo init "
                                     f"--repo {tmp_path / 'repo'}")
    init = run("repo", "init", *where)
    assert init.exit_code == 0 and "carryon edge init --root" in init.stdout
    bundle = make_bundle(tmp_path, version=1)
    published = run("publish", str(bundle), *where, "--json")
    assert published.exit_code == 0 and json.loads(published.stdout)["target"] == "maya/1.tar"
    again = run("publish", str(bundle), *where)
    assert again.exit_code == 1 and len(again.stderr.strip().splitlines()) == 1
    assert "is not newer than the published version 1" in again.stderr
    candidate = make_bundle(tmp_path, version=2, alias="candidate")
    refused = run("publish", str(candidate), *where)
    assert refused.exit_code == 1 and "or pass --force" in refused.stderr
    forced = run("publish", str(candidate), *where, "--force")
    assert forced.exit_code == 0 and "--force published a non-champion" in forced.stdout
    assert run("publish", *where).exit_code == 1
    assert run("publish", str(bundle), "--refresh", *where).exit_code == 1
    fresh = run("publish", "--refresh", *where, "--json")
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["resigned"] == ["timestamp"]
    assert run("repo", "revoke", "0123456789abcdef", "--reason", "stolen", *where).exit_code == 0
    rotated = run("repo", "rotate-root", "--role", "root", "--role", "timestamp", *where, "--json")
    assert rotated.exit_code == 0 and json.loads(rotated.stdout)["rotated"] == ["root", "timestamp"]
    assert run("repo", "rotate-root", "--role", "root", "--keep-keys", *where).exit_code == 1
    renewed = run("repo", "rotate-root", "--keep-keys", *where, "--json")
    assert renewed.exit_code == 0 and json.loads(renewed.stdout)["rotated"] == []
    default = run("repo", "rotate-root", *where, "--json")
    assert default.exit_code == 0 and json.loads(default.stdout)["rotated"] == ["root"]
    status = run("repo", "status", "--repo", str(tmp_path / "repo"), "--json")
    data = json.loads(status.stdout)
    assert data["creators"] == {"maya": {"newest": 2, "versions": [1, 2]}}
    assert data["versions"]["root"] == 4 and data["revoked_keys"][0]["key_id"] == "0123456789abcdef"
    human = run("repo", "status", "--repo", str(tmp_path / "repo"))
    assert "creator maya: newest version 2" in human.stdout and "revoked creator key 0123456789abcdef" in human.stdout
