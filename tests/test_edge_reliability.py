"""The edge client with real parts: real signed bundles, the real TUF publisher, two real nginx mirrors, and
`carryon edge pull|status|decide` in their own processes.

A mirror stopped, stalled, trickling or serving altered bytes mid-way hands over to the next one and the pull
ends on the new version. A kill -9 of the pull's whole process group at 100+ seeded random instants (refresh,
download, unpack, verify, golden child, switch) always leaves ``current`` on a complete version 1 or version 2,
never a mix, and `edge status` and `edge decide` work on it; a pull afterwards completes.

``edge_world`` (built once per test process, shared with tests/test_edge_attacks.py): the bundle world of
tests/test_bundle.py -> champion bundles v1 and v2 of one creator -> a TUF repository with v1 published and a
copy with v2 published -> two nginx mirrors serving whichever copy a test puts in their directories -> an edge
home with v1 installed and one with v2 installed, copied by each test.
"""

from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.fetch import FetchSettings
from edge.home import EdgeHome
from edge.pull import PullOptions, pull
from export.bundle import SigningKey, generate_keys, resolve_signing_key
from export.publish import Expiries, RepoConfig, init_repository, publish_bundle
from tests.test_bundle import BundleWorld, bundle_world

sys.path.insert(0, str(Path(__file__).parent))
from nginx_mirror import NginxMirror

ROOT = Path(__file__).resolve().parents[1]
KILL_RUNS = 100
KILL_SEED = 20261127
CLI_EVERY = 10  # status, decide and a recovery pull as separate processes on every 10th kill
SESSION = {"consent": {"personalization": True}, "at": "2025-09-01T18:02:00Z", "session_id": "s-1", "events": [
    {"type": "join", "ts": "2025-09-01T18:00:00Z", "device": "phone", "channel": "popup",
     "drop_started_at": "2025-09-01T17:55:00Z", "local_pickup": True},
    {"type": "chat", "ts": "2025-09-01T18:00:30Z"},
    {"type": "reaction", "ts": "2025-09-01T18:01:00Z"},
]}
# Short network limits for in-process pulls that must time out (the CLI's defaults wait 10 s for a silent mirror).
QUICK = FetchSettings(connect_timeout_s=2.0, read_timeout_s=1.0, min_rate_bytes_s=4096.0, rate_grace_s=1.0,
                      deadline_s=60.0)
# Trickling, not silent: nginx at 1 kB/s pauses up to ~1 s between bursts, so only the minimum rate may trip.
PATIENT = FetchSettings(connect_timeout_s=2.0, read_timeout_s=5.0, min_rate_bytes_s=4096.0, rate_grace_s=1.0,
                        deadline_s=60.0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> str:
    """One hash over every file's relative name and content (links refused): equal trees, equal digests."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        assert not path.is_symlink(), path
        if path.is_file():
            digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256(path)}\n".encode())
    return digest.hexdigest()


def copy_repo(src: RepoConfig, dest: Path) -> RepoConfig:
    """A copy of a repository and its role keys (same root: nodes of one trust either)."""
    shutil.copytree(src.repository, dest / "repository")
    shutil.copytree(src.keys_dir, dest / "keys")
    return RepoConfig(dest / "repository", dest / "keys", src.expiries)


def cli(*args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """`carryon ARGS` in its own process (python -m pipeline.cli: the console script's entry point)."""
    argv = [sys.executable, "-m", "pipeline.cli", *map(str, args)]
    env = {k: v for k, v in os.environ.items() if k != "CARRYON_EDGE_HOME"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False)


@dataclass
class EdgeWorld:
    bw: BundleWorld
    root: Path
    creator: str
    v1: dict[str, Any]
    v2: dict[str, Any]
    trees: dict[int, str]  # bundle version -> tree_digest of the signed bundle directory
    other_key: SigningKey
    repo_v1: RepoConfig
    repo_v2: RepoConfig
    a: NginxMirror
    b: NginxMirror
    home_v1: Path
    home_v2: Path
    session: Path
    extra: list[NginxMirror] = field(default_factory=list)

    @property
    def public_key(self) -> Path:
        return self.bw.root / "keys" / "creator.pub"

    def serve(self, repo: RepoConfig, *mirrors: NginxMirror) -> None:
        """Put ``repo`` (static files) in the directories the mirrors serve: copying it makes a mirror."""
        for mirror in mirrors or (self.a, self.b):
            shutil.rmtree(mirror.root, ignore_errors=True)
            shutil.copytree(repo.repository, mirror.root)

    def home(self, version: int, dest: Path) -> EdgeHome:
        """A fresh copy of the pristine home with ``version`` installed."""
        shutil.copytree(self.home_v1 if version == 1 else self.home_v2, dest, symlinks=True)
        return EdgeHome(dest)

    def mirror(self, root: Path, name: str, limit_rate: str | None = None) -> NginxMirror:
        """Another nginx (e.g. rate-limited) serving ``root``; stopped at exit."""
        mirror = NginxMirror(root, self.root / "nginx" / f"{name}-{len(self.extra)}", limit_rate=limit_rate)
        self.extra.append(mirror)
        atexit.register(mirror.stop)
        return mirror.start()

    def options(self, *mirrors: NginxMirror, fetch: FetchSettings | None = None) -> PullOptions:
        chosen = mirrors or (self.a, self.b)
        return PullOptions(repo=chosen[0].url, mirrors=tuple(m.url for m in chosen[1:]),
                           fetch=fetch or FetchSettings())

    def target_on(self, mirror: NginxMirror, version: int) -> Path:
        """The served file of ``<creator>/<version>.tar`` (consistent snapshots: ``<sha256>.<version>.tar``)."""
        (path,) = (mirror.root / "targets" / self.creator).glob(f"*.{version}.tar")
        return path

    def installed(self, home: EdgeHome) -> int:
        """The installed version, after checking it is one whole signed bundle (never a mix of two)."""
        link = home.current / self.creator
        version = home.installed_version(self.creator)
        assert version in (1, 2), f"current/{self.creator} -> {os.readlink(link) if link.is_symlink() else None}"
        assert os.readlink(link) == os.path.join("..", "bundles", self.creator, str(version))
        folder = link.resolve()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["bundle_version"] == version
        assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {
            *manifest["files"], "manifest.json", "model.sig"}
        for name, digest in manifest["files"].items():
            assert sha256(folder / name) == digest, name
        assert tree_digest(folder) == self.trees[version]
        return version

    def cli_works(self, home: EdgeHome, version: int) -> None:
        """`carryon edge status --json` names ``version``; `carryon edge decide` decides with it."""
        status = cli("edge", "status", "--home", home.root, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["creators"][self.creator]["version"] == version
        decided = cli("edge", "decide", self.session, "--home", home.root, "--creator", self.creator, "--seed", "7",
                      "--json")
        assert decided.returncode == 0, decided.stderr
        decision = json.loads(decided.stdout)
        assert (decision["bundle_version"], decision["personalized"]) == (version, True)
        assert 0.0 < decision["cta"]["propensity"] <= 1.0 and decision["bonuses"]["order"]


def _bundle_world(root: Path) -> BundleWorld:
    """The one bundle world of this process, whichever name pytest imported tests/test_bundle.py under."""
    for name in ("test_bundle", "tests.test_bundle"):
        module = sys.modules.get(name)
        if module is not None and module.bundle_world.cache_info().currsize:
            return module.bundle_world(root)  # type: ignore[no-any-return]
    return bundle_world(root)


@functools.lru_cache(maxsize=1)
def edge_world(base: Path) -> EdgeWorld:
    """Built once per test process under pytest's base temp dir (see the module docstring)."""
    from edge.trust import add_key
    from edge.tuf_store import bootstrap_root

    bw = _bundle_world(base / "bundle-world")
    root = base / "edge-world"
    root.mkdir()
    now = datetime.now(UTC)  # the bundles expire 30 days from now, whatever day the tests run
    counter = root / "counter.json"
    v1 = bw.build(root / "out", alias="champion", versions_file=counter, now=now)
    v2 = bw.build(root / "out", alias="champion", versions_file=counter, now=now)
    assert (v1["creator_id"], v1["bundle_version"], v2["bundle_version"]) == (v2["creator_id"], 1, 2)
    generate_keys(root / "keys", "other")
    other = resolve_signing_key(root / "keys" / "other.pem", {}, None, root)
    repo_v1 = RepoConfig(root / "repo-v1" / "repository", root / "repo-v1" / "keys", Expiries(365, 90, 7, 24))
    init_repository(repo_v1)
    publish_bundle(repo_v1, Path(v1["tar"]))
    repo_v2 = copy_repo(repo_v1, root / "repo-v2")
    publish_bundle(repo_v2, Path(v2["tar"]))
    mirrors = [NginxMirror(root / "served" / name, root / "nginx" / name) for name in ("a", "b")]
    for mirror in mirrors:
        atexit.register(mirror.stop)
        mirror.start()
    (root / "session.json").write_text(json.dumps(SESSION))
    world = EdgeWorld(bw, root, v1["creator_id"], v1, v2, {1: tree_digest(Path(v1["dir"])),
                      2: tree_digest(Path(v2["dir"]))}, other, repo_v1, repo_v2, mirrors[0], mirrors[1],
                      root / "home-v1", root / "home-v2", root / "session.json")
    home = EdgeHome(world.home_v1)
    bootstrap_root(home.tuf, repo_v1.repository / "metadata" / "1.root.json")
    add_key(home, world.public_key, creator=world.creator)
    world.serve(repo_v1)
    assert pull(home, world.creator, world.options())["version"] == 1
    shutil.copytree(world.home_v1, world.home_v2, symlinks=True)
    world.serve(repo_v2)
    assert pull(EdgeHome(world.home_v2), world.creator, world.options())["version"] == 2
    return world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorld:
    return edge_world(tmp_path_factory.getbasetemp())


pytestmark = pytest.mark.slow


def _wait_for_part(home: EdgeHome, timeout_s: float = 30.0) -> None:
    """Until the target's bytes start arriving in downloads/*.part."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in home.downloads.glob("*.part")):
            return
        time.sleep(0.01)
    raise AssertionError("the download never started")


def _log_mark(mirror: NginxMirror) -> int:
    """Where the mirror's access log ends now (the log outlives one test)."""
    log = mirror.workdir / "access.log"
    return log.stat().st_size if log.exists() else 0


def _requests_since(mirror: NginxMirror, mark: int, world: EdgeWorld, status: str = "") -> list[str]:
    """Access-log lines since ``mark`` for the creator's targets (with HTTP ``status`` when given)."""
    with open(mirror.workdir / "access.log", "rb") as f:
        f.seek(mark)
        lines = f.read().decode().splitlines()
    return [line for line in lines if f"/targets/{world.creator}/" in line and f'" {status}' in line]


# --- mirrors: stopped, stalled, trickling, altered ----------------------------------------------------------------


def test_mirror_killed_mid_download_hands_over_to_the_next_with_range(world: EdgeWorld, tmp_path: Path) -> None:
    world.serve(world.repo_v2)
    slow = world.mirror(world.a.root, "slow-a", limit_rate="24k")  # the 60 kB tar in 24 kB steps, 1 s apart
    home = world.home(1, tmp_path / "home")
    argv = [sys.executable, "-m", "pipeline.cli", "edge", "pull", "--repo", slow.url, "--mirror", world.b.url,
            "--creator", world.creator, "--home", str(home.root), "--json"]
    mark = _log_mark(world.b)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _wait_for_part(home)
        slow.stop()  # SIGKILL of nginx's master and worker mid-transfer
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert (result["status"], result["version"], result["previous_version"]) == ("installed", 2, 1)
    assert any(slow.url.split("//")[1] in f for f in result["mirror_failures"]), result["mirror_failures"]
    assert _requests_since(world.b, mark, world, "206"), "B did not continue the download with a Range request"
    assert world.installed(home) == 2
    world.cli_works(home, 2)


def test_mirror_stalled_mid_download_times_out_then_the_next(world: EdgeWorld, tmp_path: Path) -> None:
    world.serve(world.repo_v2)
    slow = world.mirror(world.a.root, "stall-a", limit_rate="24k")
    home = world.home(1, tmp_path / "home")
    outcome: dict[str, Any] = {}
    mark = _log_mark(world.b)

    def run() -> None:
        try:
            outcome["result"] = pull(home, world.creator, world.options(slow, world.b, fetch=QUICK))
        except Exception as e:  # reported by the assertion below
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _wait_for_part(home)
        slow.pause()  # SIGSTOP: connections stay open, no more bytes
        thread.join(timeout=60)
    finally:
        slow.resume()
        slow.stop()
    assert not thread.is_alive() and "error" not in outcome, outcome
    result = outcome["result"]
    assert (result["status"], result["version"]) == ("installed", 2)
    assert any("timed out" in f for f in result["mirror_failures"]), result["mirror_failures"]
    assert _requests_since(world.b, mark, world, "206"), "B did not continue the download with a Range request"
    assert world.installed(home) == 2
    world.cli_works(home, 2)


def test_trickling_mirror_times_out_then_the_next_and_all_trickling_keeps_v1(world: EdgeWorld,
                                                                              tmp_path: Path) -> None:
    world.serve(world.repo_v2)
    trickle = world.mirror(world.a.root, "trickle-a", limit_rate="1k")  # under the 4 kB/s minimum
    home = world.home(1, tmp_path / "home")
    before = tree_digest((home.current / world.creator).resolve())
    from edge.client_errors import RepositoryUnreachable

    with pytest.raises(RepositoryUnreachable, match=r"trickling at \d+ B/s.*still serving .* version 1"):
        pull(home, world.creator, world.options(trickle, fetch=PATIENT))
    assert world.installed(home) == 1 and tree_digest((home.current / world.creator).resolve()) == before
    result = pull(home, world.creator, world.options(trickle, world.b, fetch=PATIENT))
    assert result["version"] == 2 and any("trickling" in f for f in result["mirror_failures"])
    trickle.stop()
    assert world.installed(home) == 2
    world.cli_works(home, 2)


def test_mirror_serving_altered_bytes_fails_the_hash_then_the_next(world: EdgeWorld, tmp_path: Path) -> None:
    world.serve(world.repo_v2)
    target = world.target_on(world.a, 2)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    home = world.home(1, tmp_path / "home")
    marks = _log_mark(world.a), _log_mark(world.b)
    done = cli("edge", "pull", "--repo", world.a.url, "--mirror", world.b.url, "--creator", world.creator,
               "--home", home.root, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 2
    fetched = [_requests_since(m, mark, world, "200") for m, mark in zip((world.a, world.b), marks, strict=True)]
    assert [len(lines) for lines in fetched] == [1, 1], fetched  # A's altered bytes were fetched, then B's
    assert world.installed(home) == 2
    world.cli_works(home, 2)


# --- kill -9 at random points ----------------------------------------------------------------------------------


def _golden_child_running(pid: int) -> bool:
    """Whether the pull process has its golden-vector child right now (read from /proc)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return False
    for child in children:
        try:
            if b"edge.golden" in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _tuf_versions(home: EdgeHome) -> tuple[int, int]:
    def version(name: str) -> int:
        try:
            return int(json.loads((home.tuf / name).read_text())["signed"]["version"])
        except (OSError, ValueError, KeyError):
            return -1

    return version("timestamp.json"), version("targets.json")


def _phase(home: EdgeHome, creator: str, pristine: tuple[int, int], golden: bool) -> str:
    """How far the killed pull got, read from what it left on disk (and whether the golden child ran)."""
    state = home.load_state()["creators"].get(creator, {})
    current = home.installed_version(creator)
    bundles = home.bundles(creator)
    leftovers = [p for p in home.downloads.glob("*") if p.suffix == ".tar"] if home.downloads.is_dir() else []
    if current == 2:
        if state.get("version") != 2:
            return "7 switched, state.json not yet written"
        return "8 state written, cleaning up" if leftovers else "9 done (cleanup finished)"
    if (bundles / "2").is_dir():
        return "6 renamed to bundles/2, current not yet switched"
    if (bundles / ".tmp-2").is_dir():
        return "5 golden child running" if golden else "4 unpacking / verifying"
    if leftovers:
        return "3 downloaded, not yet unpacked"
    if home.downloads.is_dir() and any(home.downloads.glob("*.part")):
        return "2 downloading"
    timestamp, targets = _tuf_versions(home)
    if targets != pristine[1]:
        return "1b refreshed"
    if timestamp != pristine[0]:
        return "1a refreshing (timestamp only)"
    return "0 before refresh (interpreter start, imports)"


def test_kill_9_of_the_pull_at_random_points_leaves_v1_or_v2_never_a_mix(world: EdgeWorld, tmp_path: Path) -> None:
    from edge.runtime import EdgeRuntime, bundle_for
    from edge.status import node_status

    world.serve(world.repo_v2)
    # nginx sends a second's worth at once, the rest a second later: the 60 kB tar spends ~1 s of the pull's ~2 s
    # with 40 kB in downloads/*.part (a partial download, resumed with Range by the recovery pulls).
    slow = world.mirror(world.a.root, "kill-a", limit_rate="40k")
    home = EdgeHome(tmp_path / "home")
    pristine = _tuf_versions(EdgeHome(world.home_v1))
    argv = [sys.executable, "-m", "pipeline.cli", "edge", "pull", "--repo", slow.url, "--mirror", world.b.url,
            "--creator", world.creator, "--home", str(home.root), "--json"]

    def reset() -> None:
        shutil.rmtree(home.root, ignore_errors=True)
        shutil.copytree(world.home_v1, home.root, symlinks=True)

    def check(run: int) -> int:
        """After a kill: one whole version installed; status and decide work on it (CLI on every 10th run)."""
        version = world.installed(home)
        assert node_status(home)["creators"][world.creator]["version"] == version
        decision = EdgeRuntime.load(bundle_for(home.root, world.creator), seed=run).decide(SESSION)
        assert decision.bundle_version == version and decision.personalized
        if run % CLI_EVERY == 0:
            world.cli_works(home, version)
            recovered = pull(home, world.creator, world.options())  # from whatever the kill left behind
            assert recovered["version"] == 2 and world.installed(home) == 2
        return version

    reset()  # calibration: one whole pull, to draw kill instants over its length
    began = time.monotonic()
    calibration = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False, timeout=120)
    full_s = time.monotonic() - began
    assert calibration.returncode == 0, calibration.stderr
    rng = random.Random(KILL_SEED)
    phases: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[int] = collections.Counter()
    for run in range(KILL_RUNS):
        reset()
        delay = rng.uniform(0.0, full_s * 1.1)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                                start_new_session=True)  # the pull and its golden child: one process group
        golden = False
        try:
            proc.wait(timeout=delay)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
            golden = _golden_child_running(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if exited:
            assert proc.returncode == 0, stderr
            phases["9 done (the pull exited before the kill)"] += 1
        else:
            phases[_phase(home, world.creator, pristine, golden)] += 1
        outcomes[check(run)] += 1
    # Random instants rarely land in the few milliseconds of the switch: kill also the moment each step shows.
    bundles = home.bundles(world.creator)
    triggers: dict[str, Any] = {
        "download started": lambda pid: any(p.stat().st_size for p in home.downloads.glob("*.part")),
        "unpack started": lambda pid: (bundles / ".tmp-2").exists(),
        "golden child started": _golden_child_running,
        "renamed to bundles/2": lambda pid: (bundles / "2").exists(),
        "current switched to 2": lambda pid: home.installed_version(world.creator) == 2,
    }
    targeted: collections.Counter[str] = collections.Counter()
    for run, (name, trigger) in enumerate([*triggers.items()] * 2, start=KILL_RUNS):
        reset()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True)
        while proc.poll() is None and not trigger(proc.pid):
            time.sleep(0.0005)
        exited = proc.poll() is not None
        golden = not exited and _golden_child_running(proc.pid)
        if not exited:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        targeted[f"{name}: " + ("the pull exited first" if exited else _phase(home, world.creator, pristine,
                                                                              golden))] += 1
        outcomes[check(run)] += 1
    slow.stop()
    print(f"\nkill -9 of `carryon edge pull` at {KILL_RUNS} seeded random instants over 0-{full_s * 1.1:.2f} s "
          f"(a whole pull: {full_s:.2f} s; its phases: {json.loads(calibration.stdout)['timings_ms']}):")
    for phase, count in sorted(phases.items()):
        print(f"  {count:3d}  {phase}")
    print("  kills the moment a step showed on disk (trigger: phase found):")
    for phase, count in sorted(targeted.items()):
        print(f"  {count:3d}  {phase}")
    print(f"  installed after the kills: version 1 x{outcomes[1]}, version 2 x{outcomes[2]}")
    assert outcomes[1] > 0 and outcomes[2] > 0, outcomes  # the kills landed on both sides of the switch
    assert sum(count for phase, count in phases.items() if phase[0] in "123456") > KILL_RUNS // 4, phases
    final = cli("edge", "pull", "--repo", world.a.url, "--mirror", world.b.url, "--creator", world.creator,
                "--home", home.root, "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["status"] in ("installed", "up-to-date")
    assert world.installed(home) == 2
