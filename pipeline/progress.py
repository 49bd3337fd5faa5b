"""Rich progress bars for stage callbacks (``ProgressFn``), drawn on stderr."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.config import ProgressFn


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressFn]:
    """Yield a ``progress(phase, done, total)`` callback that draws one bar per phase."""
    console = Console(stderr=True)
    if not enabled:
        yield lambda phase, done, total: None
        return
    columns = (
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = int(bars.add_task(phase, total=max(total, 1)))
            bars.update(tasks[phase], completed=done, total=max(total, 1))  # type: ignore[arg-type]

        yield update
