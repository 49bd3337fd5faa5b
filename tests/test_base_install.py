"""Device code stays light: with only the base dependencies the online feature runtime
and the CLI work, and no training-stack module is importable.

Builds a fresh venv from the project (no extras), as an edge node would install it.
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STACK = ("polars", "pandas", "pyarrow", "duckdb", "sklearn", "lightgbm", "mlflow", "dvc")

pytestmark = pytest.mark.slow

PROBE = """
import importlib.util, json, sys
import numpy as np
from features.spec import FeatureSpec
from features.online import SessionFeatures

stack = {name: importlib.util.find_spec(name) is not None for name in sys.argv[1].split(",")}
spec = FeatureSpec.build(["ceramics"], ["plain", "scarcity"], ["workbook"], 120)
session = SessionFeatures(spec, creator_niche="ceramics")
session.update({"type": "join", "ts": "2026-09-01T18:00:00Z", "device": "phone",
                "channel": "popup", "drop_started_at": "2026-09-01T17:55:00Z"})
session.update({"type": "chat", "ts": "2026-09-01T18:01:00Z"})
vector = session.context("2026-09-01T18:02:00Z")
from export.allowlist import load_allowlist
from features.policy import CtaPolicy, ExplorationSettings
allowed = load_allowlist().allows("ai.onnx.ml", "TreeEnsemble", 5)
choice, propensity = CtaPolicy(ExplorationSettings()).decide(np.array([0.1, 0.3, 0.2]), 0.5)
print(json.dumps({"stack": stack, "vector": vector.tolist(), "dtype": str(vector.dtype),
                  "allowed": allowed, "propensity": propensity,
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1].split(","))}))
"""


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("base") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True, capture_output=True
    )
    return python


def test_online_runtime_runs_without_training_stack(base_python: Path, tmp_path: Path) -> None:
    import json

    result = subprocess.run(
        [str(base_python), "-c", PROBE, ",".join(TRAIN_STACK)],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    out = json.loads(result.stdout)
    assert out["stack"] == {name: False for name in TRAIN_STACK}
    assert out["modules"] == []
    assert out["dtype"] == "float32"
    assert out["allowed"] is True  # the operator allowlist ships inside the package
    assert 0 < out["propensity"] <= 1
    spec_names = ["minute_in_drop", "secs_since_join", "secs_since_last_chat", "sess_chats"]
    values = dict(zip(spec_names, out["vector"][:4], strict=True))
    assert values == {"minute_in_drop": 7.0, "secs_since_join": 120.0,
                      "secs_since_last_chat": 60.0, "sess_chats": 1.0}


def test_cli_help_and_clear_refusal_without_training_stack(base_python: Path, tmp_path: Path) -> None:
    carryon = base_python.parent / "carryon"
    helped = subprocess.run([str(carryon), "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    assert "simulate" in helped.stdout
    refused = subprocess.run(
        [str(carryon), "features", "--params", str(ROOT / "params.yaml"),
         "--clean", str(tmp_path / "c"), "--out", str(tmp_path / "f")],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert refused.returncode == 1
    assert "pip install 'carryon[train]'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


SESSION = {
    "consent": {"personalization": True},
    "events": [{"type": "join", "ts": "2026-09-01T18:00:00Z", "device": "phone", "channel": "popup",
                "drop_started_at": "2026-09-01T17:55:00Z"},
               {"type": "chat", "ts": "2026-09-01T18:01:00Z"}],
    "history": {"sessions": 2, "enrolls": 1},
    "at": "2026-09-01T18:02:00Z",
}


def test_bundle_verify_and_edge_decide_run_on_the_base_install(
    base_python: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real signed bundle (built with the training stack here) verifies and decides on a device install."""
    import json

    from test_bundle import bundle_world

    bw = bundle_world(tmp_path_factory.getbasetemp() / "bundle-world")  # shared with the bundle tests
    built = bw.build(tmp_path / "bundles", alias="champion")
    public = tmp_path / "creator.pub"
    public.write_bytes(bw.key.public_pem)
    carryon = str(base_python.parent / "carryon")
    verified = subprocess.run([carryon, "bundle", "verify", built["tar"], "--key", str(public), "--json"],
                              cwd=tmp_path, capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert "training stack" not in verified.stderr

    session = tmp_path / "session.json"
    session.write_text(json.dumps(SESSION), encoding="utf-8")
    decided = subprocess.run([carryon, "edge", "decide", str(session), "--bundle", built["dir"], "--json"],
                             cwd=tmp_path, capture_output=True, text=True, check=False)
    assert decided.returncode == 0, decided.stderr
    decision = json.loads(decided.stdout)
    assert decision["personalized"] is True
    assert 0 < decision["cta"]["propensity"] <= 1
    assert decision["cta"]["variant"] in decision["cta"]["scores"]
    order = decision["bonuses"]["order"]
    assert len(order) == len(set(order)) > 1

    tampered = Path(built["dir"]) / "catalog.json"
    tampered.write_bytes(tampered.read_bytes().replace(b"{", b"{ ", 1))
    refused = subprocess.run([carryon, "bundle", "verify", built["dir"], "--key", str(public)],
                             cwd=tmp_path, capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    assert "catalog.json" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
