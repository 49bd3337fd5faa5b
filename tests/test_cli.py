"""The carryon CLI: help on every command, one-line refusals with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("simulate", "ingest", "features")


def _carryon(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd, capture_output=True, text=True, check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = _carryon(command, "--help")
    assert result.returncode == 0
    assert "--json" in result.stdout
    assert "--params" in result.stdout


def test_missing_params_is_one_clear_line(tmp_path: Path) -> None:
    result = _carryon("simulate", "--params", str(tmp_path / "none.yaml"), "--out", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("carryon: error: ")
    assert "cannot read params" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_format_is_refused(tmp_path: Path) -> None:
    result = _carryon("simulate", "--format", "csv", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "--format must be parquet or jsonl, got 'csv'" in result.stderr


def test_missing_input_writes_nothing(tmp_path: Path) -> None:
    out, quarantine, report = tmp_path / "clean", tmp_path / "q.jsonl", tmp_path / "r.json"
    result = _carryon(
        "ingest", str(tmp_path / "absent.parquet"), "--out", str(out),
        "--quarantine", str(quarantine), "--report", str(report),
        "--params", str(ROOT / "params.yaml"), cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "absent.parquet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert not quarantine.exists()
    assert not report.exists()
