"""The edge client against real loopback mirrors: install, resume, failover, and every refusal leaving the
installed bundle untouched (rollback, freeze, mix-and-match, endless data, altered bytes, revoked keys, clock)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge._install import run_golden_child
from edge.client_errors import ClockError, EdgeError, PullRefused, RepositoryUnreachable, TrustError
from edge.fetch import FetchSettings
from edge.home import EdgeHome
from edge.pull import PullOptions, pull
from edge.status import node_status
from edge.trust import add_key, key_id_of, load_trust
from edge.tuf_store import bootstrap_root
from features.errors import CarryonError

sys.path.insert(0, str(Path(__file__).parent))
from edge_tufrepo import TufRepo, bundle_tar, make_tar
from httpmirror import Mirror

CREATOR = "ana"
FAST = FetchSettings(connect_timeout_s=1.0, read_timeout_s=0.5, min_rate_bytes_s=2000.0, rate_grace_s=0.3,
                     deadline_s=5.0, chunk_bytes=4096)


class FakeBundleError(CarryonError):
    pass


def fake_verify(bundle: Path, trusted: dict[str, bytes], revoked: set[str]) -> dict[str, Any]:
    """Stands in for edge.verify.verify_bundle: key trusted and not revoked, every file hashed."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    key_id = manifest["signing"]["key_id"]
    if key_id in revoked:
        raise FakeBundleError(f"signed by revoked key {key_id}")
    if key_id not in trusted:
        raise FakeBundleError(f"signed by unknown key {key_id}")
    for name, digest in manifest["files"].items():
        if hashlib.sha256((bundle / name).read_bytes()).hexdigest() != digest:
            raise FakeBundleError(f"{name} does not match the manifest")
    return dict(manifest)


def ok_golden(bundle: Path) -> dict[str, Any]:
    assert (bundle / "manifest.json").is_file()
    return {"ok": True}


def _public_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class World:
    tmp: Path
    repo: TufRepo
    a: Mirror
    b: Mirror
    home: EdgeHome
    key_id: str

    def options(self, *mirrors: Mirror, **kw: Any) -> PullOptions:
        chosen = mirrors or (self.a,)
        return PullOptions(repo=chosen[0].url, mirrors=tuple(m.url for m in chosen[1:]), fetch=FAST, **kw)

    def pull(self, *mirrors: Mirror, now: datetime | None = None, golden: Any = ok_golden,
             **kw: Any) -> dict[str, Any]:
        return pull(self.home, CREATOR, self.options(*mirrors, **kw), now=now, verify=fake_verify, golden=golden)

    def release(self, version: int, data: bytes | None = None, **kw: Any) -> None:
        self.repo.add_bundle(CREATOR, version, data or bundle_tar(CREATOR, version, self.key_id))
        self.repo.publish(**kw)

    def current(self) -> int | None:
        return self.home.installed_version(CREATOR)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    repo = TufRepo(tmp_path / "repo")
    a, b = Mirror(repo.dir), Mirror(repo.dir)
    home = EdgeHome(tmp_path / "home")
    (tmp_path / "root.json").write_bytes(repo.root_bytes)
    bootstrap_root(home.tuf, tmp_path / "root.json")
    pub = tmp_path / "ana.pub"
    pub.write_bytes(_public_pem())
    key_id = add_key(home, pub, creator=CREATOR)["key_id"]
    yield World(tmp_path, repo, a, b, home, key_id)
    a.stop()
    b.stop()


def _bundle_files(home: EdgeHome) -> dict[str, bytes]:
    root = (home.current / CREATOR).resolve()
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- happy paths ---------------------------------------------------------------------------------------------


def test_pull_installs_newest_and_switches_current_atomically(world: World) -> None:
    world.release(1)
    first = world.pull()
    assert (first["status"], first["version"], first["previous_version"]) == ("installed", 1, None)
    assert os.readlink(world.home.current / CREATOR) == os.path.join("..", "bundles", CREATOR, "1")
    assert json.loads(_bundle_files(world.home)["manifest.json"])["bundle_version"] == 1
    state = world.home.load_state()["creators"][CREATOR]
    assert state["version"] == 1 and state["last_error"] is None and state["last_refresh_ok"]
    assert not list(world.home.downloads.glob("*.part")) and not list(world.home.downloads.glob("*.tar"))

    again = world.pull()
    assert (again["status"], again["mirror_failures"]) == ("up-to-date", [])  # "no newer root" is no failure
    world.release(2)
    world.release(3)
    third = world.pull()
    assert (third["version"], third["previous_version"]) == (3, 1)
    assert world.current() == 3
    assert sorted(p.name for p in world.home.bundles(CREATOR).iterdir()) == ["1", "3"]  # last good kept


def test_trusted_metadata_is_persisted_with_a_root_symlink(world: World) -> None:
    world.release(1)
    world.pull()
    names = sorted(p.name for p in world.home.tuf.iterdir())
    assert names == ["root.json", "root_history", "snapshot.json", "targets.json", "timestamp.json"]
    assert os.readlink(world.home.tuf / "root.json") == os.path.join("root_history", "1.root.json")
    assert not [p for p in world.home.tuf.iterdir() if p.name.startswith(("tmp", "."))]


def test_root_rotation_is_followed(world: World) -> None:
    world.release(1)
    world.pull()
    world.repo.rotate_root_key("timestamp")
    world.release(2)
    assert world.pull()["version"] == 2
    assert os.readlink(world.home.tuf / "root.json") == os.path.join("root_history", "2.root.json")


# --- network: resume, failover, timeouts ----------------------------------------------------------------------


def test_interrupted_download_resumes_with_range(world: World) -> None:
    big = {"models/cta.onnx": os.urandom(300_000), "golden.json": b"{}"}
    world.release(1, bundle_tar(CREATOR, 1, world.key_id, files=big))
    world.a.behave("cut", match=r"/targets/", times=1)
    with pytest.raises(RepositoryUnreachable, match=r"interrupted.*the next pull resumes it.*nothing is installed"):
        world.pull()
    parts = list(world.home.downloads.glob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept < 300_000
    result = world.pull()
    assert (result["status"], result["resumed_bytes"]) == ("installed", kept)
    assert not parts[0].exists()
    ranged = [(path, rng, status) for path, rng, status in world.a.requests if rng]
    assert len(ranged) == 1 and ranged[0][2] == 206
    assert _bundle_files(world.home)["models/cta.onnx"] == big["models/cta.onnx"]


def test_mirror_that_ignores_range_still_completes(world: World) -> None:
    big = {"models/cta.onnx": os.urandom(200_000), "golden.json": b"{}"}
    world.release(1, bundle_tar(CREATOR, 1, world.key_id, files=big))
    world.a.behave("cut", match=r"/targets/", times=1)
    with pytest.raises(RepositoryUnreachable):
        world.pull()
    world.a.behave("no-range", match=r"/targets/")
    assert world.pull()["status"] == "installed"
    assert _bundle_files(world.home)["models/cta.onnx"] == big["models/cta.onnx"]


def test_mirror_down_falls_over_to_next(world: World) -> None:
    world.release(1)
    world.a.stop()
    result = world.pull(world.a, world.b)
    assert result["version"] == 1
    assert any(world.a.url.split("//")[1] in f and "refused" in f for f in result["mirror_failures"])


def test_mirror_cut_mid_file_hands_over_to_next_with_range(world: World) -> None:
    big = {"models/cta.onnx": os.urandom(200_000), "golden.json": b"{}"}
    world.release(1, bundle_tar(CREATOR, 1, world.key_id, files=big))
    world.a.behave("cut", match=r"/targets/")
    assert world.pull(world.a, world.b)["version"] == 1
    assert [status for _, rng, status in world.b.requests if rng] == [206]


@pytest.mark.parametrize(("mode", "why"), [("trickle", "trickling"), ("stall", "timed out"), ("error", "HTTP 503")])
def test_bad_mirror_times_out_then_next(world: World, mode: str, why: str) -> None:
    world.release(1)
    world.a.behave(mode)
    result = world.pull(world.a, world.b)
    assert result["version"] == 1
    assert any(why in f for f in result["mirror_failures"]), result["mirror_failures"]


def test_every_mirror_trickling_is_offline_and_keeps_the_installed_bundle(world: World) -> None:
    world.release(1)
    world.pull()
    world.release(2)
    world.a.behave("trickle")
    with pytest.raises(RepositoryUnreachable, match=r"trickling.*still serving ana version 1"):
        world.pull()
    assert world.current() == 1


# --- attacks ---------------------------------------------------------------------------------------------------


def test_altered_bytes_are_refused_and_nothing_is_installed(world: World) -> None:
    world.release(1)
    world.a.behave("alter", match=r"/targets/")
    with pytest.raises(PullRefused, match=r"does not match its signed length and hashes"):
        world.pull()
    assert world.current() is None
    assert not list(world.home.downloads.glob("*.part"))


def test_altered_bytes_on_one_mirror_take_the_next(world: World) -> None:
    world.release(1)
    world.a.behave("alter", match=r"/targets/")
    assert world.pull(world.a, world.b)["version"] == 1


def test_bundle_rollback_is_refused(world: World) -> None:
    world.release(1)
    world.release(2)
    world.pull()
    world.repo.remove_target(f"{CREATOR}/2.tar")
    world.repo.publish()
    with pytest.raises(PullRefused, match=r"version 1, older than the installed version 2: refusing a rollback"):
        world.pull()
    assert world.current() == 2


def test_metadata_rollback_is_refused(world: World) -> None:
    world.release(1)
    old_timestamp = (world.repo.metadata_dir / "timestamp.json").read_bytes()
    world.release(2)
    world.pull()
    (world.repo.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(PullRefused, match=r"BadVersionNumberError"):
        world.pull()
    assert world.current() == 2


def test_freeze_expired_timestamp_is_refused(world: World) -> None:
    world.release(1)
    world.pull()
    world.release(2, timestamp_expires=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    with pytest.raises(PullRefused, match=r"stale metadata.*carryon publish --refresh.*still serving ana version 1"):
        world.pull()
    assert world.current() == 1


def test_mix_and_match_targets_from_another_release_is_refused(world: World) -> None:
    world.release(1)
    world.pull()
    world.release(2)
    metadata = world.repo.metadata_dir
    (metadata / "2.targets.json").write_bytes((metadata / "1.targets.json").read_bytes())
    with pytest.raises(PullRefused, match=r"BadVersionNumberError"):
        world.pull()
    assert world.current() == 1


def test_endless_target_is_refused(world: World) -> None:
    world.release(1)
    target = world.repo.target_file(f"{CREATOR}/1.tar")
    target.write_bytes(target.read_bytes() + b"\0" * 100_000)
    with pytest.raises(PullRefused, match=r"does not match its signed length"):
        world.pull()
    assert world.current() is None


def test_endless_metadata_is_refused(world: World) -> None:
    world.release(1)
    world.a.behave("endless", match=r"timestamp.json")
    with pytest.raises(PullRefused, match=r"metadata larger than allowed"):
        world.pull()


def test_bundle_signed_by_unknown_key_is_refused(world: World) -> None:
    world.release(1)
    world.pull()
    world.release(2, bundle_tar(CREATOR, 2, "0123456789abcdef"))
    with pytest.raises(PullRefused, match=r"unknown key 0123456789abcdef"):
        world.pull()
    assert world.current() == 1


def test_manifest_naming_another_version_is_refused(world: World) -> None:
    world.release(1, bundle_tar(CREATOR, 7, world.key_id))
    with pytest.raises(PullRefused, match=r"its manifest says creator 'ana' version 7"):
        world.pull()
    assert world.current() is None


def test_repository_revocation_reaches_the_node(world: World) -> None:
    world.release(1)
    world.pull()
    entry = {"key_id": world.key_id, "reason": "laptop stolen", "revoked_at": "2025-01-01T00:00:00Z"}
    world.repo.add_target("revocations.json", json.dumps({"schema": 1, "revoked": [entry]}).encode())
    world.release(2)
    with pytest.raises(PullRefused, match=f"revoked key {world.key_id}"):
        world.pull()
    assert world.key_id in load_trust(world.home)["revoked"]
    assert world.current() == 1


def test_no_trusted_key_for_creator_is_refused(world: World, tmp_path: Path) -> None:
    pub = tmp_path / "other.pub"
    pub.write_bytes(_public_pem())
    add_key(world.home, pub, creator="bob")
    other = world.home.trust_file.read_text()
    data = json.loads(other)
    del data["keys"][world.key_id]
    world.home.trust_file.write_text(json.dumps(data))
    world.release(1)
    with pytest.raises(TrustError, match=r"no trusted key for creator ana"):
        world.pull()


# --- clock, offline, child crash ---------------------------------------------------------------------------------


def test_unset_clock_refuses_to_judge_expiry(world: World) -> None:
    world.release(1)
    with pytest.raises(ClockError, match=r"1970-01-01.*plainly unset.*nothing is installed"):
        world.pull(now=datetime(1970, 1, 1, tzinfo=UTC))
    assert world.current() is None
    assert world.a.requests == []
    assert "plainly unset" in world.home.load_state()["creators"][CREATOR]["last_error"]


def test_offline_with_expired_metadata_keeps_serving_and_says_so(world: World) -> None:
    world.release(1)
    world.pull()
    world.a.stop()
    later = datetime.now(UTC) + timedelta(days=3)
    with pytest.raises(RepositoryUnreachable, match=r"cannot reach the repository.*still serving ana version 1.*"
                                                     r"expired at .*stale"):
        world.pull(now=later)
    assert world.current() == 1
    status = node_status(world.home, later)
    assert status["metadata_expired"] is True
    entry = status["creators"][CREATOR]
    assert entry["version"] == 1 and entry["stale"] is True and entry["refresh_age_s"] > 2 * 86400
    assert "cannot reach the repository" in entry["last_error"]


def test_status_flags_an_installed_bundle_whose_key_was_revoked_since(world: World) -> None:
    from edge.status import render
    from edge.trust import revoke_key

    world.release(1)
    world.pull()
    entry = node_status(world.home)["creators"][CREATOR]
    assert entry["signed_by_revoked_key"] is False and entry["signing_key_id"]
    assert "revoked since" not in render(node_status(world.home))
    revoke_key(world.home, entry["signing_key_id"])
    status = node_status(world.home)
    assert status["creators"][CREATOR]["signed_by_revoked_key"] is True
    assert f"signed by key {entry['signing_key_id']}, revoked since it was installed" in render(status)
    assert world.current() == 1  # still installed: the operator decides, status says so


def test_status_says_which_onnxruntime_runs_here_and_flags_one_too_old_for_the_bundle(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from edge import status as status_module
    from edge.status import render

    world.release(1)
    world.pull()
    assert node_status(world.home)["creators"][CREATOR]["min_onnxruntime"] is None  # this fake bundle declares none
    assert node_status(world.home)["creators"][CREATOR]["runtime_too_old"] is False
    manifest_path = world.home.current / CREATOR / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "min_onnxruntime": "1.21"}))  # what real bundles declare
    status = node_status(world.home)
    entry = status["creators"][CREATOR]
    assert status["onnxruntime"] == onnxruntime.__version__ and entry["min_onnxruntime"] == "1.21"
    assert entry["runtime_too_old"] is False and "will not load" not in render(status)
    # onnxruntime downgraded below the installed bundle's minimum after it was verified and installed
    monkeypatch.setattr(status_module, "installed_onnxruntime", lambda: "1.19.0")
    status = node_status(world.home)
    assert status["creators"][CREATOR]["runtime_too_old"] is True
    assert (f"needs onnxruntime >= {entry['min_onnxruntime']}, this node has 1.19.0: its models will not load"
            in render(status))


def test_golden_child_crash_refuses_the_bundle_and_the_client_survives(world: World) -> None:
    world.release(1)
    world.pull()
    world.release(2)

    def crashing(bundle: Path) -> dict[str, Any]:
        return run_golden_child(bundle, 20, [sys.executable, "-c", "import os; os.abort()"])

    with pytest.raises(PullRefused, match=r"golden check crashed on this device \(signal SIGABRT\)"):
        world.pull(golden=crashing)
    assert world.current() == 1
    assert not [p for p in world.home.bundles(CREATOR).iterdir() if p.name.startswith(".tmp")]


def test_golden_disagreement_and_timeout_refuse(world: World) -> None:
    world.release(1)
    disagree = [sys.executable, "-c", "import json; print(json.dumps({'error': 'cta case 3 off by 0.2'})); exit(1)"]
    with pytest.raises(PullRefused, match=r"golden vectors disagree on this device: cta case 3 off by 0.2"):
        world.pull(golden=lambda d: run_golden_child(d, 20, disagree))
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(PullRefused, match=r"did not finish within 0.5 s"):
        world.pull(golden=lambda d: run_golden_child(d, 0.5, hang))
    assert world.current() is None


def test_pull_needs_init_and_a_valid_creator(tmp_path: Path) -> None:
    home = EdgeHome(tmp_path / "fresh")
    with pytest.raises(TrustError, match=r"carryon edge init --root"):
        pull(home, CREATOR, PullOptions(repo="http://127.0.0.1:9"))
    with pytest.raises(EdgeError, match=r"creator id '../x' is not valid"):
        pull(home, "../x", PullOptions(repo="http://127.0.0.1:9"))


# --- trust ---------------------------------------------------------------------------------------------------------


def test_trust_add_revoke(tmp_path: Path) -> None:
    from edge.trust import revoke_key, trusted_keys_for

    home = EdgeHome(tmp_path / "home")
    pem = _public_pem()
    (tmp_path / "k.pub").write_bytes(pem)
    key_id = add_key(home, tmp_path / "k.pub")["key_id"]
    assert key_id == key_id_of(pem) and len(key_id) == 16
    assert trusted_keys_for(home, "anyone")[0] == {key_id: pem}
    assert revoke_key(home, key_id) == {"key_id": key_id, "was_trusted": True}
    assert trusted_keys_for(home, "anyone") == ({}, {key_id})
    with pytest.raises(TrustError, match=r"is revoked on this node"):
        add_key(home, tmp_path / "k.pub")
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(TrustError, match=r"bad.pub is not a PEM public key"):
        add_key(home, tmp_path / "bad.pub")
    with pytest.raises(TrustError, match=r"must be lowercase hex"):
        revoke_key(home, "ZZ")


def test_init_refuses_a_root_not_signed_by_itself(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    data = json.loads(repo.root_bytes)
    data["signed"]["version"] = 5
    (tmp_path / "root.json").write_text(json.dumps(data))
    with pytest.raises(TrustError, match=r"not signed by its own root keys"):
        bootstrap_root(tmp_path / "tuf", tmp_path / "root.json")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(TrustError, match=r"not valid TUF root metadata"):
        bootstrap_root(tmp_path / "tuf", tmp_path / "junk.json")


# --- end to end: a real signed bundle, the real publisher, the real verifier and golden child ----------------------


def _features_dir(folder: Path) -> Path:
    """The smallest features directory a kill-switch bundle needs: a spec and one creator's catalog."""
    from features.spec import FeatureSpec

    folder.mkdir(parents=True)
    spec = FeatureSpec.build(["baking"], ["urgent", "calm"], ["workbook", "live_qa"], 600.0)
    (folder / "feature_spec.json").write_text(spec.to_json())
    creator = {"creator_id": CREATOR, "niche": "baking", "currency": "EUR",
               "variants": [{"variant": "v1", "style": "urgent", "features": [0.0, 0.0, 1.0]}],
               "bonuses": [{"bonus_id": "b1", "kind": "workbook", "features": [0.0, 10.0, 0.0]}],
               "default_variant": "v1", "default_bonus_order": ["b1"]}
    (folder / "catalog.json").write_text(json.dumps({"schema": 1, "creators": [creator], "spec_hash": spec.hash}))
    return folder


def test_end_to_end_real_bundle_through_the_real_publisher(tmp_path: Path) -> None:
    from export.bundle import build_bundle, generate_keys, resolve_signing_key
    from export.publish import Expiries, RepoConfig, init_repository, publish_bundle
    from features.policy import ExplorationSettings

    features = _features_dir(tmp_path / "features")
    generate_keys(tmp_path / "keys", "ana")
    key = resolve_signing_key(tmp_path / "keys" / "ana.pem", {}, None, tmp_path)
    repo = RepoConfig(tmp_path / "served" / "repo", tmp_path / "repo-keys", Expiries(365, 90, 7, 24))
    init_repository(repo)
    mirror = Mirror(tmp_path / "served")
    home = EdgeHome(tmp_path / "home")
    try:
        def release() -> dict[str, Any]:
            built = build_bundle(None, alias="champion", creator=CREATOR, export_dir=tmp_path / "export",
                                 features_dir=features, out_dir=tmp_path / "out", key=key,
                                 versions_file=tmp_path / "counter.json", exploration=ExplorationSettings(),
                                 creator_caps={}, expires_days=30.0, golden_per_model=2,
                                 build_lineage={"git_commit": "test"}, consent=None, kill_switch=True)
            return publish_bundle(repo, Path(built["tar"]))

        assert release()["bundle_version"] == 1
        bootstrap_root(home.tuf, repo.repository / "metadata" / "1.root.json")
        (tmp_path / "ana.pub").write_bytes(key.public_pem)
        add_key(home, tmp_path / "ana.pub", creator=CREATOR)
        options = PullOptions(repo=f"{mirror.url}/repo", fetch=FAST, golden_timeout_s=60)
        result = pull(home, CREATOR, options)
        assert (result["status"], result["version"], result["key_id"]) == ("installed", 1, key.key_id)
        assert result["golden"]["ok"] is True and result["personalization"] is False
        from edge.runtime import EdgeRuntime, bundle_for  # the installed kill switch runs: defaults, no models
        decided = EdgeRuntime.load(bundle_for(home.root, CREATOR)).decide({"consent": {"personalization": True}})
        assert (decided.personalized, decided.reason, decided.variant) == (False, "kill_switch", "v1")
        from edge.status import render
        assert "kill switch: personalization off" in render(node_status(home))

        release()
        mirror.behave("alter", match="/targets/")
        with pytest.raises(PullRefused, match=r"does not match its signed length and hashes"):
            pull(home, CREATOR, options)
        assert home.installed_version(CREATOR) == 1
        mirror.reset()
        assert pull(home, CREATOR, options)["version"] == 2

        # A flipped byte inside the bundle, published with valid TUF metadata: the model signature refuses it.
        built = build_bundle(None, alias="champion", creator=CREATOR, export_dir=tmp_path / "export",
                             features_dir=features, out_dir=tmp_path / "out3", key=key,
                             versions_file=tmp_path / "counter.json", exploration=ExplorationSettings(),
                             creator_caps={}, expires_days=30.0, golden_per_model=2,
                             build_lineage={"git_commit": "test"}, consent=None, kill_switch=True)
        with tarfile.open(built["tar"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
        members["catalog.json"] = members["catalog.json"].replace(b"baking", b"bakinG")
        tampered = tmp_path / "3.tar"
        tampered.write_bytes(make_tar(members))
        publish_bundle(repo, tampered)
        with pytest.raises(PullRefused, match=r"bundle ana/3.tar refused: .*catalog.json"):
            pull(home, CREATOR, options)
        assert home.installed_version(CREATOR) == 2
    finally:
        mirror.stop()


# --- the commands ----------------------------------------------------------------------------------------------


def test_edge_commands_init_trust_pull_status(world: World, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    home = tmp_path / "cli-home"
    env = {"CARRYON_EDGE_HOME": str(home)}

    def run(*args: str) -> Any:
        return runner.invoke(app, ["edge", *args], env=env)

    assert run("init", "--root", str(tmp_path / "root.json")).exit_code == 0
    again = run("init", "--root", str(tmp_path / "root.json"))
    assert again.exit_code == 1 and "already trusts a TUF root" in again.output
    added = run("trust", "add", str(tmp_path / "ana.pub"), "--creator", CREATOR, "--json")
    assert json.loads(added.stdout) == {**json.loads(added.stdout), "key_id": world.key_id, "creator": CREATOR}
    assert json.loads(run("trust", "list", "--json").stdout)["keys"][world.key_id]["creator"] == CREATOR

    world.release(1)
    offline = run("pull", "--repo", "http://127.0.0.1:9", "--creator", CREATOR)  # port 9: nothing listens
    assert offline.exit_code == 1
    lines = [line for line in offline.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("carryon: error: cannot reach the repository")
    assert not (home / "current").exists()

    status = json.loads(run("status", "--json").stdout)
    assert status["creators"][CREATOR]["version"] is None
    assert "cannot reach the repository" in status["creators"][CREATOR]["last_error"]
    assert run("trust", "revoke", world.key_id).exit_code == 0
    status = json.loads(run("status", "--json").stdout)
    assert status["revoked_keys"] == [world.key_id]
    assert "REVOKED" in run("status").stdout
