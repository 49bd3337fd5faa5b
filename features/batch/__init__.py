"""``carryon features``: point-in-time CTA and bonus-ranking tables from clean events.

Reads the clean event partitions (lazily, polars) and the creators' catalog, and writes
one directory, whole or not at all: ``cta.parquet`` (one row per CTA impression),
``bonus.parquet`` (one row per slate x bonus, a slate's rows together), ``catalog.json``
(item features encoded by the spec) and ``feature_spec.json``. Tables hold partition
after partition, each in time order; each partition is computed, written and released
in turn, so memory stays at a couple of partitions. Features at a decision use only the session's
events strictly before it; the online runtime (``features.online``) reproduces them.

    >>> summary = build_features(Path("data/clean"), Path("data/raw/catalog.json"),
    ...                          Path("data/features"), FeatureConfig(label_window_s=120))
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import polars as pl

from features._engine import PartitionMap, thread_map
from features._fsutil import atomic_dir
from features.batch._catalog import (
    Catalog,
    bonus_frame,
    build_spec,
    encoded_catalog,
    load_catalog,
    niche_frame,
    variant_frame,
)
from features.batch._context import decision_rows, session_inputs
from features.batch._events import partition_files, scan_partition
from features.batch._prepare import ENGINE, prepare
from features.batch._summary import FeatureSummary, Tally
from features.batch._tables import bonus_table, cta_table
from features.batch._write import TableWriter
from features.config import FeatureConfig, ProgressFn, no_progress
from features.errors import DataError
from features.spec import FeatureSpec

__all__ = ["FeatureSummary", "build_features", "partition_tables"]

PARALLEL_PARTITIONS = 2  # partitions computed at once by the local engine (polars releases the GIL)
# Row order within a partition's part of each table (the file holds partitions in order).
CTA_ORDER = ("ts", "impression_id")
BONUS_ORDER = ("ts", "session_key", "slate_id", "position", "bonus_id")


def build_features(
    clean_dir: Path, catalog_path: Path, out_dir: Path, config: FeatureConfig, *,
    progress: ProgressFn = no_progress, partition_map: PartitionMap | None = None,
) -> FeatureSummary:
    """Build the feature tables, encoded catalog and spec into ``out_dir`` (atomically).

    ``partition_map`` runs :func:`partition_tables` over the partition files: by default
    two threads here; ``features._dask.dask_map`` runs it on a Dask cluster instead.
    """
    started = time.perf_counter()
    catalog = load_catalog(Path(catalog_path))
    files = partition_files(Path(clean_dir))
    scans = [scan_partition(f) for f in files]
    events = sum(rows for _, rows in scans)
    if events == 0:
        raise DataError(
            f"{clean_dir}: the clean events hold no event ({len(files)} empty partitions); "
            "check the ingest report (consent and quarantine counts) and rerun `carryon ingest`"
        )
    spec = build_spec(catalog, config)
    run = partition_map or thread_map(PARALLEL_PARTITIONS)

    tally = Tally()
    with atomic_dir(Path(out_dir)) as tmp:
        with TableWriter(tmp / "cta.parquet") as cta_out, TableWriter(tmp / "bonus.parquet") as bonus_out:
            progress("features", 0, len(files))
            job = partial(partition_tables, spec=spec, catalog=catalog)
            for done, (cta, bonus) in enumerate(run(job, files), start=1):
                cta_out.write(cta)
                bonus_out.write(bonus)
                tally.add(cta, bonus)
                progress("features", done, len(files))
        (tmp / "catalog.json").write_text(
            json.dumps(encoded_catalog(catalog, spec), indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )
        (tmp / "feature_spec.json").write_text(spec.to_json(), encoding="utf-8")
    return tally.summary(events=events, partitions=len(files), spec=spec,
                         seconds=time.perf_counter() - started)


def partition_tables(path: Path, spec: FeatureSpec, catalog: Catalog) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The CTA and bonus rows of one clean-event partition, each sorted by time then ids.

    The unit of work of both engines: partitions hold whole viewers, so each one is
    computed on its own, from its file alone.
    """
    lazy, _ = scan_partition(path)
    variants, bonuses = variant_frame(catalog, spec), bonus_frame(catalog, spec)
    niches = niche_frame(catalog, spec)
    prepared = prepare(lazy)
    rows = decision_rows(prepared).lazy()
    sessions = session_inputs(prepared, spec)
    events = prepared.events.lazy()
    cta, bonus = pl.collect_all(
        [cta_table(events, rows, sessions, niches, variants, spec).sort(CTA_ORDER),
         bonus_table(events, rows, sessions, niches, bonuses, spec).sort(BONUS_ORDER)],
        engine=ENGINE,
    )
    return cta, bonus
