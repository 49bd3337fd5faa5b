"""What ``build_features`` reports: table sizes, label rates, relevance grades, spec hash."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from features.spec import FeatureSpec


@dataclass(frozen=True)
class FeatureSummary:
    """Metrics of one feature build (the CLI writes them as JSON)."""

    events: int
    partitions: int
    cta_rows: int
    cta_label_rate: float  # share of impressions clicked or enrolled within the window
    cta_click_rate: float
    cta_enroll_rate: float
    bonus_rows: int
    bonus_slates: int
    relevance: dict[str, int]  # grade ("0", "1", "2") -> rows
    spec_hash: str
    label_window_s: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tally:
    """Running counts over the tables' parts, turned into a FeatureSummary at the end."""

    cta_rows: int = 0
    labels: int = 0
    clicks: int = 0
    enrolls: int = 0
    bonus_rows: int = 0
    slates: int = 0
    grades: list[int] = field(default_factory=lambda: [0, 0, 0])

    def add(self, cta: pl.DataFrame, bonus: pl.DataFrame) -> None:
        """Count one partition's rows (sessions, hence slates, never span partitions)."""
        self.cta_rows += cta.height
        self.labels += int(cta.get_column("label").sum())
        self.clicks += int(cta.get_column("clicked").sum())
        self.enrolls += int(cta.get_column("enrolled").sum())
        self.bonus_rows += bonus.height
        self.slates += int(bonus.select(pl.struct("session_key", "slate_id").n_unique()).item())
        for grade, count in bonus.get_column("relevance").value_counts().iter_rows():
            self.grades[int(grade)] += int(count)

    def summary(self, *, events: int, partitions: int, spec: FeatureSpec, seconds: float) -> FeatureSummary:
        def rate(n: int) -> float:
            return round(n / self.cta_rows, 6) if self.cta_rows else 0.0

        return FeatureSummary(
            events=events, partitions=partitions, cta_rows=self.cta_rows,
            cta_label_rate=rate(self.labels), cta_click_rate=rate(self.clicks),
            cta_enroll_rate=rate(self.enrolls), bonus_rows=self.bonus_rows,
            bonus_slates=self.slates, relevance={str(g): n for g, n in enumerate(self.grades)},
            spec_hash=spec.hash, label_window_s=spec.label_window_s, seconds=round(seconds, 3),
        )
