"""Attacks on the edge client, end to end: a real signed bundle, validly TUF-signed by the repository (as an
attacker holding its online keys, or a broken publisher, could), served by real nginx mirrors, pulled with
`carryon edge pull`. Each refusal is one `carryon: error:` line, exit status 1, and the installed bundle is
untouched (its tree hashed before and after; no half-installed version left in bundles/).

Covered elsewhere (not repeated here):
- every attack at the verifier's level, per file: tests/test_verify.py (flipped byte in each member, added and
  removed files, .git* names, symlinks, unknown, other and revoked keys, operator outside the allowlist,
  external data, golden disagreement via ``check_golden``);
- hostile tar members at the unpacker's level (absolute, ``..``, links, devices, fifos, too many, too large,
  fuzzed names): tests/test_edge_unpack.py;
- TUF attacks with stand-in bundles over a Python mirror: tests/test_edge_client.py (metadata rollback,
  freeze, targets mix-and-match, endless target and metadata, altered bytes, trickling and stalled mirrors,
  repository revocation, golden child crash, disagreement and timeout via a fake child);
- the publisher refusing hostile tars, older versions and non-champions: tests/test_publish.py;
- trickling, stalled, stopped and altering mirrors with real nginx: tests/test_edge_reliability.py.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from edge.home import EdgeHome
from export.bundle._sign import SIGNATURE, pack_tar
from export.publish import RepoConfig, publish_bundle, revoke_creator_key

sys.path.insert(0, str(Path(__file__).parent))
# The module name pytest gives tests/test_edge_reliability.py (no tests/__init__.py): one world per process.
from test_edge_reliability import EdgeWorld, copy_repo, edge_world, tree_digest

from tests.test_bundle import resign_bundle

pytestmark = pytest.mark.slow

MEMBERS = ("catalog.json", "feature_spec.json", "golden.json", "manifest.json", "model.sig",
           "models/bonus-ranker.onnx", "models/bonus-ranker.ort", "models/cta.onnx", "models/cta.ort")


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorld:
    return edge_world(tmp_path_factory.getbasetemp())


# --- the attacker's tools ----------------------------------------------------------------------------------------


def publish_raw(repo: RepoConfig, name: str, data: bytes | None, version: int | None = None,
                now: datetime | None = None) -> None:
    """Sign ``data`` into the repository as target ``name`` (None: remove it), past the publisher's own checks."""
    from export.publish import _store
    from export.publish._commit import commit, load_signers, locked, utc_now
    from export.publish._targets import _add_target

    with locked(repo):
        state = _store.load_state(repo.repository)
        signers = load_signers(repo, state, ("targets", "snapshot", "timestamp"))
        targets = state.targets.signed.targets
        if data is None:
            del targets[name]
        else:
            creator = name.split("/")[0]
            targets[name] = _add_target(repo.repository, name, data, {"creator": creator,
                                                                      "bundle_version": version or 2})
        commit(repo, state, signers, utc_now(now), targets=True)


def packed(folder: Path) -> bytes:
    tar = folder.parent / f"{folder.name}.tar"
    pack_tar(folder, tar)
    return tar.read_bytes()


def v2_copy(world: EdgeWorld, tmp_path: Path) -> Path:
    return Path(shutil.copytree(world.v2["dir"], tmp_path / "bundle"))


def tar_members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]  # type: ignore[union-attr]


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def served_release(world: EdgeWorld, tmp_path: Path, data: bytes, *, version: int = 2, installed: int = 1,
                   base: RepoConfig | None = None) -> EdgeHome:
    """A repository copy with ``data`` signed in as ``<creator>/<version>.tar``, on both mirrors; a node's home."""
    repo = copy_repo(base or world.repo_v1, tmp_path / "repo")
    publish_raw(repo, f"{world.creator}/{version}.tar", data, version)
    world.serve(repo)
    return world.home(installed, tmp_path / "home")


def pull_refused(world: EdgeWorld, home: EdgeHome, match: str, installed: int = 1) -> str:
    """`carryon edge pull` refuses with one line matching ``match``, exit 1, and leaves ``installed`` untouched."""
    from pipeline.cli import app

    before = tree_digest((home.current / world.creator).resolve())
    versions = sorted(p.name for p in home.bundles(world.creator).iterdir())
    result = CliRunner().invoke(app, ["edge", "pull", "--repo", world.a.url, "--mirror", world.b.url, "--creator",
                                      world.creator, "--home", str(home.root)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("carryon: error: ") and not result.stdout.strip(), result.output
    assert re.search(match, lines[0]), lines[0]
    assert f"still serving {world.creator} version {installed}" in lines[0]
    assert world.installed(home) == installed
    assert tree_digest((home.current / world.creator).resolve()) == before
    assert sorted(p.name for p in home.bundles(world.creator).iterdir()) == versions  # no .tmp-*, no new version
    return lines[0]


# --- the bundle: altered, added, removed, wrong key -------------------------------------------------------------


def test_the_unaltered_release_installs(world: EdgeWorld, tmp_path: Path) -> None:
    """The control: the same path with the real v2 tar succeeds, so each refusal below is the attack's doing."""
    from pipeline.cli import app

    home = served_release(world, tmp_path, Path(world.v2["tar"]).read_bytes())
    result = CliRunner().invoke(app, ["edge", "pull", "--repo", world.a.url, "--creator", world.creator, "--home",
                                      str(home.root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == 2 and world.installed(home) == 2


@pytest.mark.parametrize("member", MEMBERS)
def test_a_flipped_byte_in_any_bundle_file_is_refused(world: EdgeWorld, tmp_path: Path, member: str) -> None:
    folder = v2_copy(world, tmp_path)
    data = bytearray((folder / member).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / member).write_bytes(bytes(data))
    home = served_release(world, tmp_path, packed(folder))
    line = pull_refused(world, home, rf"bundle {world.creator}/2\.tar refused: ")
    if member not in ("manifest.json", SIGNATURE):
        assert member in line  # the message names the altered file


def test_a_refusal_in_its_own_process_is_one_line_on_stderr_and_exit_1(world: EdgeWorld, tmp_path: Path) -> None:
    """The same as above through the console entry point in a fresh process (the others run it in-process)."""
    from test_edge_reliability import cli

    folder = v2_copy(world, tmp_path)
    data = bytearray((folder / "models" / "cta.onnx").read_bytes())
    data[100] ^= 0x01
    (folder / "models" / "cta.onnx").write_bytes(bytes(data))
    home = served_release(world, tmp_path, packed(folder))
    before = tree_digest((home.current / world.creator).resolve())
    done = cli("edge", "pull", "--repo", world.a.url, "--mirror", world.b.url, "--creator", world.creator, "--home",
               home.root)
    assert (done.returncode, done.stdout) == (1, "")
    assert re.fullmatch(rf"carryon: error: bundle {world.creator}/2\.tar refused: models/cta\.onnx: sha256 .*"
                        rf"still serving {world.creator} version 1 \(last refresh .*\)\n", done.stderr), done.stderr
    assert world.installed(home) == 1 and tree_digest((home.current / world.creator).resolve()) == before


@pytest.mark.parametrize(("change", "name", "match"), [
    ("add", "notes.txt", r"notes\.txt: file added to the bundle"),
    ("add", "models/cta.onnx.data", r"models/cta\.onnx\.data: file added to the bundle"),
    ("add", ".gitattributes", r"member '\.gitattributes' refused"),
    ("remove", "models/cta.ort", r"models/cta\.ort: file removed from the bundle"),
    ("remove", "golden.json", r"golden\.json: file removed from the bundle"),
])
def test_a_file_added_to_or_removed_from_the_bundle_is_refused(world: EdgeWorld, tmp_path: Path, change: str,
                                                               name: str, match: str) -> None:
    members = [(m, d) for m, d in tar_members(Path(world.v2["tar"]).read_bytes()) if m.name != name]
    if change == "add":
        info = tarfile.TarInfo(name)
        info.size = 3
        members.append((info, b"x=1"))
    home = served_release(world, tmp_path, make_tar(members))
    pull_refused(world, home, match)


@pytest.mark.parametrize("names_other_key", [True, False])
def test_a_bundle_signed_by_an_unknown_key_is_refused(world: EdgeWorld, tmp_path: Path,
                                                      names_other_key: bool) -> None:
    folder = v2_copy(world, tmp_path)
    other = world.other_key
    resign_bundle(folder, other, (lambda m: m["signing"].update(key_id=other.key_id)) if names_other_key else None)
    home = served_release(world, tmp_path, packed(folder))
    if names_other_key:
        pull_refused(world, home, rf"signed by key {other.key_id}, which this node does not trust")
    else:  # the manifest claims the trusted key; the signature is someone else's
        pull_refused(world, home, rf"model\.sig: the signature does not verify with key {world.v2['key_id']}")


def test_a_key_revoked_through_the_repository_is_refused(world: EdgeWorld, tmp_path: Path) -> None:
    repo = copy_repo(world.repo_v1, tmp_path / "repo")
    revoke_creator_key(repo, world.v2["key_id"], "laptop stolen")
    publish_bundle(repo, Path(world.v2["tar"]))  # validly signed, by the key now revoked
    world.serve(repo)
    home = world.home(1, tmp_path / "home")
    pull_refused(world, home, rf"signed by revoked key {world.v2['key_id']}")
    assert world.v2["key_id"] in json.loads(home.trust_file.read_text())["revoked"]


def test_a_key_revoked_on_the_node_is_refused(world: EdgeWorld, tmp_path: Path) -> None:
    from pipeline.cli import app

    home = served_release(world, tmp_path, Path(world.v2["tar"]).read_bytes())
    revoked = CliRunner().invoke(app, ["edge", "trust", "revoke", world.v2["key_id"], "--home", str(home.root)])
    assert revoked.exit_code == 0, revoked.output
    pull_refused(world, home, rf"signed by revoked key {world.v2['key_id']}")


# --- rollback, freeze, mix-and-match, endless data ------------------------------------------------------------------


def test_older_repository_metadata_re_served_is_refused(world: EdgeWorld, tmp_path: Path) -> None:
    world.serve(world.repo_v1)  # the release before: validly signed, older versions
    home = world.home(2, tmp_path / "home")
    pull_refused(world, home, r"TUF refused the repository metadata: .*BadVersionNumberError", installed=2)


def test_an_older_signed_bundle_re_published_as_a_new_version_is_refused(world: EdgeWorld, tmp_path: Path) -> None:
    """model-signing alone accepts v1's signature; the signed manifest's version gives it away."""
    home = served_release(world, tmp_path, Path(world.v1["tar"]).read_bytes(), version=3, installed=2,
                          base=world.repo_v2)
    pull_refused(world, home, rf"its manifest says creator '{world.creator}' version 1", installed=2)


def test_a_repository_whose_newest_bundle_is_older_than_installed_is_refused(world: EdgeWorld,
                                                                            tmp_path: Path) -> None:
    repo = copy_repo(world.repo_v2, tmp_path / "repo")
    publish_raw(repo, f"{world.creator}/2.tar", None)  # newer metadata, newest bundle v1
    world.serve(repo)
    home = world.home(2, tmp_path / "home")
    pull_refused(world, home, r"newest bundle .* is version 1, older than the installed version 2: refusing a "
                              r"rollback", installed=2)


def test_an_expired_timestamp_is_refused_as_a_freeze(world: EdgeWorld, tmp_path: Path) -> None:
    repo = copy_repo(world.repo_v1, tmp_path / "repo")
    publish_bundle(repo, Path(world.v2["tar"]), now=datetime.now(UTC) - timedelta(days=2))
    world.serve(repo)
    home = world.home(1, tmp_path / "home")
    pull_refused(world, home, r"stale metadata, refusing to trust it .*carryon publish --refresh")


def _served_versions(world: EdgeWorld) -> tuple[int, int]:
    metadata = world.a.root / "metadata"
    snapshot = json.loads((metadata / "timestamp.json").read_text())["signed"]["meta"]["snapshot.json"]["version"]
    targets = json.loads((metadata / f"{snapshot}.snapshot.json").read_text())["signed"]["meta"]["targets.json"]
    return snapshot, targets["version"]


@pytest.mark.parametrize("role", ["targets", "snapshot"])
def test_metadata_from_another_release_is_refused_as_mix_and_match(world: EdgeWorld, tmp_path: Path,
                                                                   role: str) -> None:
    home = served_release(world, tmp_path, Path(world.v2["tar"]).read_bytes())
    snapshot, targets = _served_versions(world)
    version = targets if role == "targets" else snapshot
    for mirror in (world.a, world.b):  # the new file name, the previous release's content
        folder = mirror.root / "metadata"
        (folder / f"{version}.{role}.json").write_bytes((folder / f"{version - 1}.{role}.json").read_bytes())
    pull_refused(world, home, r"TUF refused the repository metadata: .*LengthOrHashMismatchError")


@pytest.mark.parametrize("what", ["bundle", "snapshot", "timestamp"])
def test_metadata_or_a_bundle_larger_than_declared_is_refused(world: EdgeWorld, tmp_path: Path, what: str) -> None:
    home = served_release(world, tmp_path, Path(world.v2["tar"]).read_bytes())
    snapshot, _ = _served_versions(world)
    for mirror in (world.a, world.b):
        path = {"bundle": world.target_on(mirror, 2), "timestamp": mirror.root / "metadata" / "timestamp.json",
                "snapshot": mirror.root / "metadata" / f"{snapshot}.snapshot.json"}[what]
        extra = 20_000 if what == "timestamp" else 1_000  # past the 16 kB cap on timestamp.json
        path.write_bytes(path.read_bytes() + b" " * extra)  # still valid JSON, still the right hash prefix
    match = (rf"{world.creator}/2\.tar does not match its signed length and hashes on any mirror" if what == "bundle"
             else r"TUF refused the repository metadata: .*metadata larger than allowed")
    pull_refused(world, home, match)


# --- hostile tar members --------------------------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    data = b"owned\n" if kind == tarfile.REGTYPE else None
    info.size = len(data) if data else 0
    return info, data


@pytest.mark.parametrize(("hostile", "match"), [
    ([_member("/tmp/carryon-attack-absolute")], r"member '/tmp/carryon-attack-absolute' refused \(absolute path\)"),
    ([_member("../carryon-attack-dotdot")], r"member '\.\./carryon-attack-dotdot' refused \('\.\.' in path\)"),
    ([_member("models/../../carryon-attack")], r"'\.\.' in path"),
    ([_member("models/escape", tarfile.SYMTYPE, "/etc/passwd")], r"member 'models/escape' refused \(symlink\)"),
    ([_member("hard", tarfile.LNKTYPE, "manifest.json")], r"member 'hard' refused \(hardlink\)"),
    ([_member("dev", tarfile.CHRTYPE)], r"member 'dev' refused \(device\)"),
    ([_member("fifo", tarfile.FIFOTYPE)], r"member 'fifo' refused \(fifo\)"),
    ([_member(f"pad{i:03d}") for i in range(80)], r"more than 64 members"),
])
def test_hostile_tar_members_are_refused(world: EdgeWorld, tmp_path: Path,
                                         hostile: list[tuple[tarfile.TarInfo, bytes | None]], match: str) -> None:
    members = [*tar_members(Path(world.v2["tar"]).read_bytes()), *hostile]
    home = served_release(world, tmp_path, make_tar(members))
    pull_refused(world, home, match)
    assert not Path("/tmp/carryon-attack-absolute").exists()
    assert not list(home.root.parent.rglob("carryon-attack*"))


# --- models and golden vectors ----------------------------------------------------------------------------------------


def test_a_model_with_an_operator_outside_the_allowlist_is_refused(world: EdgeWorld, tmp_path: Path) -> None:
    folder = v2_copy(world, tmp_path)
    path = folder / "models" / "cta.onnx"
    model = onnx.load(str(path))
    (node,) = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    node.op_type = "HardSigmoid"  # standard ONNX, not on the edge allowlist
    onnx.save(model, str(path))
    resign_bundle(folder, world.bw.key)
    home = served_release(world, tmp_path, packed(folder))
    pull_refused(world, home, r"models/cta\.onnx is outside the edge runtime's operator allowlist.*HardSigmoid")


def test_a_model_with_external_data_is_refused(world: EdgeWorld, tmp_path: Path) -> None:
    folder = v2_copy(world, tmp_path)
    path = folder / "models" / "cta.onnx"
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="cta.weights", size_threshold=0)
    assert (folder / "models" / "cta.weights").is_file()
    resign_bundle(folder, world.bw.key)
    home = served_release(world, tmp_path, packed(folder))
    pull_refused(world, home, r"models/cta\.onnx: tensor\(s\) .* stored as external data")


def test_a_bundle_needing_a_newer_onnxruntime_is_refused_before_install(world: EdgeWorld, tmp_path: Path) -> None:
    folder = v2_copy(world, tmp_path)
    resign_bundle(folder, world.bw.key, lambda m: m.update(min_onnxruntime="99.0"))  # properly signed, honest
    home = served_release(world, tmp_path, packed(folder))
    pull_refused(world, home, r"need onnxruntime >= 99\.0, this node has \d+\.\d+.*upgrade it")


def test_golden_vectors_that_disagree_on_this_device_are_refused(world: EdgeWorld, tmp_path: Path) -> None:
    folder = v2_copy(world, tmp_path)
    golden = json.loads((folder / "golden.json").read_text())
    golden["cases"][0]["expected"][0] += 0.01  # validly signed, but not what this device computes
    (folder / "golden.json").write_text(json.dumps(golden))
    resign_bundle(folder, world.bw.key)
    home = served_release(world, tmp_path, packed(folder))
    pull_refused(world, home, r"golden vectors disagree on this device: case 0 \(models/cta\.onnx\): max \|diff\|")
