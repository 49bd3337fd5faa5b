"""The clean-event table: the contract between ingest (which writes it) and features.

``<clean_dir>/events/part=NN/data.parquet``, one partition per hash of the pseudonymous
viewer key, rows sorted by (viewer_key, ts, event_id), with exactly these columns.
"""

from __future__ import annotations

import polars as pl

UTC_US = pl.Datetime("us", "UTC")
PARTITION_DIR = "events"

CLEAN_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "ts": UTC_US,
    "creator_id": pl.String(),
    "drop_id": pl.String(),
    "session_key": pl.String(),
    "viewer_key": pl.String(),
    "type": pl.String(),
    "variant": pl.String(),
    "propensity": pl.Float64(),
    "bonus_id": pl.String(),
    "slate_id": pl.String(),
    "position": pl.Int32(),
    "amount": pl.Float64(),
    "currency": pl.String(),
    "device": pl.String(),
    "channel": pl.String(),
    "local_pickup": pl.Boolean(),
    "drop_started_at": UTC_US,
    "purpose": pl.String(),
    "action": pl.String(),
}
