"""House rules on imports (ARCHITECTURE.md), checked on the source with ast.

Arrows point down the flow: features imports nothing of models/export/pipeline;
models may import features; export may import both; pipeline wires them. Device-side
modules import no training stack, not even lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STACK = {"sklearn", "lightgbm", "mlflow", "dvc", "polars", "pandas", "pyarrow", "duckdb",
               "onnxmltools", "skl2onnx", "dask"}
FORBIDDEN = {
    "features": {"models", "export", "pipeline", "edge"},
    "models": {"export", "pipeline", "edge"},
    "export": {"pipeline", "edge"},
    "edge": {"models", "pipeline"},
}
# What device code may take from export/: the operator allowlist and the model checks (base only).
DEVICE_SAFE_EXPORT = {"export", "export.allowlist", "export.checks"}
# Modules that run on devices: they and everything they import must avoid the training stack.
DEVICE_MODULES = (
    "features/online.py", "features/spec.py", "features/schema.py", "features/errors.py", "features/policy.py",
    "features/_fsutil.py", "export/__init__.py", "export/allowlist.py", "export/checks.py",
    *sorted(str(p.relative_to(ROOT)) for d in ("edge", "benchmarks/device") for p in (ROOT / d).rglob("*.py")),
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_arrows_point_down_the_flow(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("module", DEVICE_MODULES)
def test_device_modules_import_no_training_stack(module: str) -> None:
    path = ROOT / module
    assert path.is_file(), f"{module} is a device module and must exist"
    assert _imports(path) & TRAIN_STACK == set()


def _modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", [m for m in DEVICE_MODULES if m.startswith(("edge/", "benchmarks/device/"))])
def test_device_code_takes_only_the_device_safe_part_of_export_and_features(module: str) -> None:
    imported = _modules(ROOT / module)
    assert {m for m in imported if m.split(".")[0] == "export"} <= DEVICE_SAFE_EXPORT
    assert not any(m.startswith(("features.simulate", "features.ingest", "features.batch", "features.bandit",
                                 "benchmarks._", "models", "pipeline.")) for m in imported - {"pipeline.params"})


def test_cli_imports_stages_lazily() -> None:
    tree = ast.parse((ROOT / "pipeline/cli.py").read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
    assert top_level & TRAIN_STACK == set()
    assert not any(m.startswith(("features.simulate", "features.ingest", "features.batch")) for m in top_level)
