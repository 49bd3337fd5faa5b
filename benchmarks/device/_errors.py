"""The one error type of the benchmark job."""

from __future__ import annotations

from features.errors import CarryonError


class BenchError(CarryonError):
    """The benchmark job cannot run as asked, or a report is not a valid bench report."""
