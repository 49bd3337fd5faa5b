"""The carryon CLI: help on every command, one-line refusals with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("simulate", "ingest", "features", "train cta", "train bonus", "export", "select", "report", "evaluate")


def _carryon(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd, capture_output=True, text=True, check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = _carryon(*command.split(), "--help")
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


def test_unreachable_mlflow_fails_before_training(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    report = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "train", "cta", "--features", str(tmp_path / "features"),
         "--report", str(report), "--params", str(ROOT / "params.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:9" in lines[0], result.stderr
    assert not report.exists()


def test_bandit_log_needs_a_declared_consent_basis(tmp_path: Path) -> None:
    example = ROOT / "tests/data/bandit/example.csv"
    refused = _carryon("ingest", "--log", str(example), "--out", str(tmp_path / "bandit"),
                       "--params", str(ROOT / "params.yaml"), cwd=tmp_path)
    assert refused.returncode == 1
    assert "--consent-column" in refused.stderr and "--consent-basis" in refused.stderr
    assert not (tmp_path / "bandit").exists()


def test_bandit_log_import_then_evaluate_uniform(tmp_path: Path) -> None:
    import json
    import os

    example = ROOT / "tests/data/bandit/example.csv"
    env_key = {"CARRYON_PSEUDONYM_KEY": "ab" * 32}
    imported = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", "--log", str(example), "--consent-column", "consented",
         "--params", str(ROOT / "params.yaml"), "--json"],
        cwd=tmp_path, env={**os.environ, **env_key}, capture_output=True, text=True, check=False,
    )
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["records_read"] == report["clean"] + report["quarantined"] + report["excluded_no_consent"]
    assert (tmp_path / "data/bandit/bandit.parquet").is_file()
    assert (tmp_path / "metrics/bandit_import.json").is_file()
    evaluated = _carryon("evaluate", "--log", "data/bandit", "--params", str(ROOT / "params.yaml"), "--json",
                         cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["policy"] == "uniform"
    assert metrics["policy_value_ips_ci_low"] <= metrics["policy_value_ips"] <= metrics["policy_value_ips_ci_high"]
