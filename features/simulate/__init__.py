"""``carryon simulate``: a seeded, deterministic world of live course drops, as schema-v1 events.

Creators with a catalog of CTA variants and micro-bonuses run drops (streams and
pop-ups) that viewers join, chat in, react to, and where a logged stochastic policy
shows them CTAs and bonus slates; clicks and claims are drawn from the ground truth in
:mod:`features.simulate.response`, which also gives the exact value of any CTA policy.
The same config gives byte-identical files.

    >>> summary = simulate(load_params().simulate, Path("data/raw"))
    >>> summary.events_file
    'events.parquet'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from features.config import ProgressFn, SimulateConfig, no_progress
from features.simulate._run import SimulationSummary, run


def simulate(
    config: SimulateConfig,
    out_dir: Path,
    *,
    fmt: Literal["parquet", "jsonl"] = "parquet",
    progress: ProgressFn = no_progress,
    truncate_last_line: bool = False,
) -> SimulationSummary:
    """Write ``out_dir/events.<fmt>`` and ``out_dir/catalog.json`` atomically; summarize them.

    ``truncate_last_line`` (JSONL only) ends the file with half a record and no newline,
    as a crashed writer would.
    """
    return run(config, Path(out_dir), fmt, progress=progress, truncate_last_line=truncate_last_line)


__all__ = ["SimulationSummary", "simulate"]
