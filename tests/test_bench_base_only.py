"""The benchmark job runs where devices run it: a fresh venv holding only the base dependencies.

Installs the project without extras (as a phone or a Raspberry Pi would), then runs
``carryon bench run`` and the golden-vector check there on tiny models.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from tests.test_bench_job import TRAIN_STACK, make_export, make_model

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

PROBE = """
import importlib.util, json, sys
from pipeline.cli import main
stack = sys.argv[1].split(",")
sys.argv = ["carryon", *sys.argv[2:]]
try:
    main()
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "installed": [n for n in stack if importlib.util.find_spec(n) is not None],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in stack)}), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("bench-base") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True, capture_output=True)
    return python


def test_bench_run_in_a_base_only_venv(base_python: Path, tmp_path: Path) -> None:
    models = make_export(tmp_path / "export")
    out = tmp_path / "report.json"
    # Run outside the checkout, so the installed package (with its schema file) is what runs.
    result = subprocess.run(
        [str(base_python), "-c", PROBE, ",".join(TRAIN_STACK), "bench", "run", "--models", str(models),
         "--out", str(out), "--device-id", "base-venv", "--format", "both"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    probe = json.loads(result.stderr.strip().splitlines()[-1])
    assert probe == {"code": 0, "installed": [], "loaded": []}, result.stderr
    from benchmarks.device import load_report

    report = load_report(out)
    assert report["device"]["device_id"] == "base-venv"
    assert len(report["models"]) == 6 and all(m["peak_rss_mib"] > 0 for m in report["models"])
    assert "base-venv" in result.stdout  # the human summary


def test_golden_check_in_a_base_only_venv(base_python: Path, tmp_path: Path) -> None:
    make_model(tmp_path / "m" / "a.onnx", "cta", 1)
    make_model(tmp_path / "m" / "b.onnx", "bonus-ranker", 2)
    made = subprocess.run([str(base_python), "-m", "benchmarks.device.golden", "make", "--models",
                           str(tmp_path / "m"), "--out", str(tmp_path / "golden.json")],
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(made.stdout)["cases"] == 2
    checked = subprocess.run([str(base_python), "-m", "benchmarks.device.golden", "check", "--models",
                              str(tmp_path / "m"), "--golden", str(tmp_path / "golden.json")],
                             cwd=tmp_path, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["passed"] is True
    # A model that changed since the vectors were made fails the check.
    make_model(tmp_path / "m" / "b.onnx", "bonus-ranker", 2, seed=9)
    failed = subprocess.run([str(base_python), "-m", "benchmarks.device.golden", "check", "--models",
                             str(tmp_path / "m"), "--golden", str(tmp_path / "golden.json")],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert [m["passed"] for m in json.loads(failed.stdout)["models"]] == [True, False]
