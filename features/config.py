"""Typed, frozen settings of the data-layer stages (simulate, ingest, consent, features).

``pipeline.params.load_params`` fills them from params.yaml; stages receive them as
arguments and never read params.yaml themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# progress(phase, done, total): stages report progress through it; the CLI draws bars.
ProgressFn = Callable[[str, int, int], None]


def no_progress(phase: str, done: int, total: int) -> None:
    """A progress callback that shows nothing (library use, tests)."""


@dataclass(frozen=True)
class SimulateConfig:
    seed: int
    creators: int
    drops_per_creator: int  # at scale 1.0
    viewers_per_drop: int  # mean
    scale: float  # multiplies drops per creator
    start: str  # ISO 8601 UTC: the first drop's day
    corrupt_fraction: float  # share of records made invalid on purpose


@dataclass(frozen=True)
class IngestConfig:
    partitions: int
    pseudonym_key_file: str | None
    min_ts: str  # ISO 8601
    max_ts: str | None  # ISO 8601; None = clock at ingest + max_clock_skew_s
    max_clock_skew_s: int  # seconds
    max_record_bytes: int


@dataclass(frozen=True)
class ConsentConfig:
    snapshot: str  # "latest" (newest valid event) or ISO 8601


@dataclass(frozen=True)
class FeatureConfig:
    label_window_s: float  # seconds
