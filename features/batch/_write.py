"""Stream a feature table into one Parquet file, a partition's rows at a time.

Each partition's rows arrive sorted (by time, then ids) and are appended as they are
computed, so a build never holds the whole table in memory; the file's row order is
partition by partition, each in time order (deterministic: partitions come in name
order). Writes go inside the build's temporary directory (``atomic_dir``), so a failed
build leaves no file behind.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import polars as pl
import pyarrow.parquet as pq


class TableWriter:
    """Append polars frames (all of one schema) to a Parquet file; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self.path, table.schema, compression="zstd", compression_level=1,
            )
        self._writer.write_table(table)
        self.rows += frame.height

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
