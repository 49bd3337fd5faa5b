"""`dvc repro` in a temporary clone of the repository: every stage runs, then nothing does.

The clone is of the committed tree (HEAD), as a fresh checkout would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("CARRYON_PSEUDONYM_KEY", "CARRYON_PSEUDONYM_KEY_FILE"):
        env.pop(name, None)
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test needs git and the project's git repository")
    dest = tmp_path_factory.mktemp("repro") / "carryon"
    _run(["git", "clone", "--quiet", str(ROOT), str(dest)], cwd=ROOT)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["simulate"].update(creators=2, drops_per_creator=4, viewers_per_drop=80)
    params["train"].update(cta_families=["logreg", "lightgbm"], bonus_families=["lambdarank"])
    params["evaluation"].update(n_bootstrap=100)
    params["select"]["cta"]["limits"] = {}  # a tiny world's calibration is noisy; the rule is tested elsewhere
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "small"], cwd=dest)
    return dest


def test_repro_runs_every_stage_then_nothing(clone: Path) -> None:
    stages = set(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    first = _run([sys.executable, "-m", "dvc", "repro"], cwd=clone)
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout, first.stdout
    assert (clone / "data/features/cta.parquet").is_file()
    assert (clone / "data/features/feature_spec.json").is_file()
    selected = json.loads((clone / "metrics/select.json").read_text())
    assert set(selected) == {"cta", "bonus-ranker"}
    assert all(s["candidate"] >= 1 for s in selected.values())
    report = json.loads((clone / "metrics/ingest.json").read_text())
    assert report["records_read"] == (
        report["clean"] + report["quarantined"] + report["duplicates"] + report["excluded_no_consent"]
    )
    assert report["pseudonym_key"]["source"] == "dev-key"
    assert (clone / ".carryon/pseudonym.key").is_file()

    second = _run([sys.executable, "-m", "dvc", "repro"], cwd=clone)
    assert "Running stage" not in second.stdout, second.stdout
    status = _run([sys.executable, "-m", "dvc", "status", "--json"], cwd=clone)
    assert json.loads(status.stdout) == {}


def test_dev_key_is_not_tracked_by_git(clone: Path) -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", ".carryon/pseudonym.key"], cwd=clone, capture_output=True, check=False
    )
    assert ignored.returncode == 0
