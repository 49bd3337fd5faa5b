"""The engine-choice benchmark runs at a tiny size: both engines, same answer, JSON out.

No assertion on speed (benchmarks are not timed tests); this checks the command, its
JSON, and that the duckdb SQL and the polars engine agree row for row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_choice_agrees_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "engine_choice.py"), "--events", "6000",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["equal"] is True
    assert out["decisions"] == out["polars"]["rows"] == out["duckdb"]["rows"] > 100
    assert out["faster"] in ("polars", "duckdb")
    for engine in ("polars", "duckdb"):
        assert out[engine]["compute_s"] > 0 and out[engine]["peak_rss_mib"] > 0
    assert str(tmp_path) not in result.stdout  # no absolute path in the report
