"""``edge.live``: a server follows the home's current bundle; a pull's new version or kill switch takes over live."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from edge.live import LiveRuntime
from edge.runtime import EdgeRuntime, bundle_for
from tests.test_edge_runtime import build_bundle, make_kill_switch, session, set_manifest
from tests.test_edge_serve import Server


@pytest.fixture(scope="module")
def bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("live"))


def _creator(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["creator_id"])


def install(home: Path, creator: str, source: Path, version: int, edit: Any = None) -> Path:
    """Install ``source`` as ``version`` the way a pull ends: the bundle dir, then an atomic switch of the link."""
    target = home / "bundles" / creator / str(version)
    shutil.copytree(source, target)
    set_manifest(target, bundle_version=version)
    if edit is not None:
        edit(target)
    (home / "current").mkdir(exist_ok=True)
    tmp = home / "current" / f".{creator}.tmp"
    os.symlink(f"../bundles/{creator}/{version}", tmp)
    os.replace(tmp, home / "current" / creator)
    return target


@pytest.fixture
def home(bundle_src: Path, tmp_path: Path) -> Path:
    install(tmp_path, _creator(bundle_src), bundle_src, 3)
    return tmp_path


def _live(home: Path, creator: str) -> LiveRuntime:
    return LiveRuntime(home, creator, EdgeRuntime.load(bundle_for(home, creator), seed=1), interval_s=0.05, seed=1)


def test_check_switches_to_a_newly_installed_version(home: Path, bundle_src: Path) -> None:
    creator = _creator(bundle_src)
    live = _live(home, creator)
    assert live.check() is False and live.runtime.bundle_version == 3 and live.switches == 0
    install(home, creator, bundle_src, 4)
    assert live.check() is True
    assert (live.runtime.bundle_version, live.switches, live.error) == (4, 1, None)
    assert live.runtime.decide(session()).bundle_version == 4
    assert live.check() is False  # the same target is not loaded twice


def test_a_kill_switch_release_turns_personalization_off_without_a_restart(home: Path, bundle_src: Path) -> None:
    creator = _creator(bundle_src)
    live = _live(home, creator)
    assert live.runtime.decide(session()).personalized is True
    install(home, creator, bundle_src, 4, edit=lambda d: make_kill_switch(d, 4))
    assert live.check() is True
    d = live.runtime.decide(session())
    assert (d.personalized, d.reason, d.bundle_version) == (False, "kill_switch", 4)


def test_a_broken_bundle_keeps_the_good_one_reports_once_and_retries_on_change(
        home: Path, bundle_src: Path, caplog: pytest.LogCaptureFixture) -> None:
    creator = _creator(bundle_src)
    live = _live(home, creator)
    install(home, creator, bundle_src, 4, edit=lambda d: (d / "catalog.json").write_text("{not json"))
    with caplog.at_level(logging.ERROR, logger="carryon.edge.serve"):
        assert live.check() is False
        assert live.check() is False  # not reloaded, not reported again
    assert live.runtime.bundle_version == 3 and live.runtime.decide(session()).personalized is True
    assert live.error is not None and "catalog.json: not valid JSON" in live.error
    assert [r.getMessage() for r in caplog.records] == [f"still serving {creator} bundle v3: {live.error}"]
    install(home, creator, bundle_src, 5)
    assert live.check() is True and (live.runtime.bundle_version, live.error) == (5, None)


def test_another_creators_bundle_behind_the_link_is_refused(home: Path, bundle_src: Path) -> None:
    creator = _creator(bundle_src)
    live = _live(home, creator)

    def other(d: Path) -> None:
        set_manifest(d, creator_id="someone-else")
        catalog = json.loads((d / "catalog.json").read_text())
        (d / "catalog.json").write_text(json.dumps({**catalog, "creator_id": "someone-else"}))

    install(home, creator, bundle_src, 4, edit=other)
    assert live.check() is False
    assert live.runtime.creator_id == creator and "holds creator 'someone-else'" in str(live.error)


def test_an_uninstalled_link_keeps_the_last_good_bundle(home: Path, bundle_src: Path) -> None:
    creator = _creator(bundle_src)
    live = _live(home, creator)
    os.unlink(home / "current" / creator)
    assert live.check() is False
    assert live.runtime.bundle_version == 3 and "no bundle installed" in str(live.error)
    assert live.status()["follows"] == f"current/{creator}" and live.status()["checked_at"].endswith("Z")


def test_the_interval_must_be_positive(home: Path, bundle_src: Path) -> None:
    runtime = EdgeRuntime.load(bundle_for(home, _creator(bundle_src)))
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        LiveRuntime(home, _creator(bundle_src), runtime, interval_s=0)


def _wait_for(server: Server, predicate: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        _, _, health = server.request("GET", "/health")
        if predicate(health) or time.monotonic() > deadline:
            return health  # type: ignore[no-any-return]
        time.sleep(0.05)


def test_a_running_server_follows_pulls_and_keeps_serving_through_a_broken_one(home: Path, bundle_src: Path) -> None:
    creator = _creator(bundle_src)
    server = Server(["--home", str(home), "--creator", creator, "--reload-every", "0.1", "--no-log"])
    try:
        assert f"follows current/{creator} every 0.1 s" in server.banner
        install(home, creator, bundle_src, 4)
        health = _wait_for(server, lambda h: h["bundle_version"] == 4)
        assert health["bundle_version"] == 4 and health["reload"]["switches"] == 1
        status, _, body = server.request("POST", "/decide", json.dumps(session()).encode())
        assert status == 200 and body["bundle_version"] == 4 and body["personalized"] is True

        install(home, creator, bundle_src, 5, edit=lambda d: (d / "manifest.json").write_text("[]"))
        health = _wait_for(server, lambda h: h["reload"]["error"] is not None)
        assert health["bundle_version"] == 4 and "manifest.json" in health["reload"]["error"]
        assert server.request("POST", "/decide", json.dumps(session()).encode())[2]["bundle_version"] == 4

        install(home, creator, bundle_src, 6, edit=lambda d: make_kill_switch(d, 6))
        health = _wait_for(server, lambda h: h["bundle_version"] == 6)
        assert (health["bundle_version"], health["personalization"], health["models"]) == (6, False, {})
        assert health["reload"] == {**health["reload"], "switches": 2, "error": None}
        body = server.request("POST", "/decide", json.dumps(session()).encode())[2]
        assert (body["personalized"], body["reason"], body["bundle_version"]) == (False, "kill_switch", 6)
    finally:
        err = server.stop()
    assert "Traceback" not in err
    assert "switched" in err and "from bundle v4 to v6 (kill switch: defaults only)" in err
    assert "still serving" in err and "bundle v4" in err


def test_a_fixed_bundle_or_reload_every_0_is_not_followed(home: Path, bundle_src: Path) -> None:
    creator = _creator(bundle_src)
    server = Server(["--home", str(home), "--creator", creator, "--reload-every", "0", "--no-log"])
    try:
        assert "fixed bundle" in server.banner
        _, _, health = server.request("GET", "/health")
        assert "reload" not in health and health["bundle_version"] == 3
    finally:
        server.stop()
