"""What a training stage hands to the registry: one fitted candidate and its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Candidate:
    """A fitted candidate with its params, test metrics, plots and a synthetic input example."""

    kind: str  # "cta" or "bonus-ranker"
    family: str
    model: Any
    feature_names: tuple[str, ...]
    spec_hash: str
    params: dict[str, Any]
    metrics: dict[str, float]
    input_example: np.ndarray  # synthetic rows drawn from the spec, never a viewer's row
    figures: dict[str, Any] = field(default_factory=dict)  # file name -> matplotlib Figure
    info: dict[str, Any] = field(default_factory=dict)  # split sizes, data hashes

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.family}"
