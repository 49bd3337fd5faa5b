"""The online-runtime benchmark runs at a tiny size and prints the figures it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_online_benchmark_reports_percentiles() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "online_runtime.py"), "--sessions", "40",
         "--repeat", "2"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in ("update_int_ts", "update_iso_ts", "context", "cta_matrix_8", "bonus_matrix"):
        figures = out[key]
        assert figures["calls"] > 0
        assert 0 < figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
    assert out["context_features"] == 18
    assert set(out["target"]) == {"feature_vector_p99_us", "passed"}
