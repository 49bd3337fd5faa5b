"""A drop's event columns as schema-v1 records: an Arrow table, or JSON lines.

Arrow/Parquet types: timestamp[us, tz=UTC] for ts and drop_started_at, strings for ids
and names, int32 position, float64 propensity and amount, bool local_pickup; null where
a type does not carry a field. JSON lines carry only the fields of the record's type,
with ISO 8601 ``Z`` timestamps; a field nulled on purpose appears as ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import COMMON_FIELDS, EVENT_TYPES
from features.simulate._columns import ACTIONS, PURPOSES, TYPE_CODE, Columns
from features.simulate._corrupt import ALL_TYPE_NAMES, FIELD_NAMES
from features.simulate._drop import DropResult
from features.simulate._viewers import DEVICES

TS = pa.timestamp("us", tz="UTC")
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
ARROW_TYPES = {"str": pa.string(), "ts": TS, "float": pa.float64(), "int": pa.int32(), "bool": pa.bool_()}
_KINDS = {
    "event_id": "str", "ts": "ts", "creator_id": "str", "drop_id": "str", "session_id": "str",
    "viewer_id": "str", "type": "str", "device": "str", "channel": "str", "local_pickup": "bool",
    "drop_started_at": "ts", "variant": "str", "propensity": "float", "bonus_id": "str",
    "slate_id": "str", "position": "int", "amount": "float", "currency": "str", "purpose": "str",
    "action": "str",
}
SCHEMA = pa.schema([pa.field(name, ARROW_TYPES[_KINDS[name]]) for name in FIELD_NAMES])
# Fields each (base) type carries, in schema order.
CARRIED: dict[int, tuple[str, ...]] = {
    TYPE_CODE[name]: tuple(f for f in FIELD_NAMES if f in (*COMMON_FIELDS, *t.required, *t.optional))
    for name, t in EVENT_TYPES.items()
}


def _strings(dictionary: list[str] | tuple[str, ...], idx: npt.NDArray[np.int64]) -> pa.Array:
    """``dictionary[idx]`` as a string array; negative indices become null."""
    mask = idx < 0
    return pa.array(list(dictionary), pa.string()).take(pa.array(np.where(mask, 0, idx), mask=mask))


def _constant(value: str, present: npt.NDArray[np.bool_]) -> pa.Array:
    return _strings([value], np.where(present, 0, -1).astype(np.int64))


def to_table(drop: DropResult, cols: Columns) -> pa.Table:
    """The drop's records as an Arrow table in :data:`SCHEMA`."""
    plan, creator = drop.plan, drop.creator
    kind = cols["kind"]
    m = kind.shape[0]
    is_join = kind == TYPE_CODE["join"]
    everywhere = np.ones(m, bool)
    prefix = plan.drop_id
    event_ids = [f"{prefix}-{'x' if x else 'e'}{i:05d}"
                 for i, x in zip(cols["eid"].tolist(), cols["eid_x"].tolist(), strict=True)]
    sess = cols["sess"]
    arrays: dict[str, pa.Array] = {
        "event_id": pa.array(event_ids, pa.string()),
        "ts": pa.array(cols["ts"], pa.int64()).cast(TS),
        "creator_id": _constant(creator.creator_id, everywhere),
        "drop_id": _constant(plan.drop_id, everywhere),
        "session_id": _strings(drop.session_ids, sess),
        "viewer_id": _strings(drop.viewer_ids, sess),
        "type": _strings(ALL_TYPE_NAMES, cols["type"]),
        "device": _strings(DEVICES, cols["device"]),
        "channel": _constant(plan.channel, is_join),
        "local_pickup": pa.array(cols["local_pickup"] == 1, mask=cols["local_pickup"] < 0),
        "drop_started_at": pa.array(np.full(m, plan.start_us), pa.int64(), mask=~is_join).cast(TS),
        "variant": _strings([v["variant"] for v in creator.variants], cols["variant"]),
        "propensity": pa.array(cols["propensity"], pa.float64(), from_pandas=True),
        "bonus_id": _strings([b["bonus_id"] for b in creator.bonuses], cols["bonus"]),
        "slate_id": _strings(drop.slate_ids, cols["slate"]),
        "position": pa.array(cols["position"].astype(np.int32), pa.int32(), mask=cols["position"] <= 0),
        "amount": pa.array(cols["amount"], pa.float64(), from_pandas=True),
        "currency": _constant(creator.currency, cols["currency"]),
        "purpose": _strings(PURPOSES, cols["purpose"]),
        "action": _strings(ACTIONS, cols["action"]),
    }
    nulled = cols["nulled"]
    for f_index in np.unique(nulled[nulled >= 0]).tolist():
        name = FIELD_NAMES[f_index]
        mask = pa.array(nulled == f_index)
        arrays[name] = pc.if_else(mask, pa.scalar(None, arrays[name].type), arrays[name])
    return pa.Table.from_arrays([arrays[name] for name in FIELD_NAMES], schema=SCHEMA)


def _iso(column: pa.ChunkedArray | pa.Array) -> list[str | None]:
    as_int = column.cast(pa.int64())
    values = as_int.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    valid = np.asarray(as_int.is_valid())
    text = np.datetime_as_string(values.astype("datetime64[us]"), unit="us")
    return [f"{t}Z" if ok else None for t, ok in zip(text.tolist(), valid.tolist(), strict=True)]


def json_lines(table: pa.Table, cols: Columns) -> Iterator[str]:
    """One JSON object per record (no newline), fields of its type only."""
    values: dict[str, list[Any]] = {}
    for name in FIELD_NAMES:
        if _KINDS[name] == "ts":
            values[name] = _iso(table.column(name))
        else:
            values[name] = table.column(name).to_pylist()
    nulled = cols["nulled"].tolist()
    kinds = cols["kind"].tolist()
    for i, kind in enumerate(kinds):
        record: dict[str, Any] = {f: v for f in CARRIED[kind] if (v := values[f][i]) is not None}
        if nulled[i] >= 0:
            record[FIELD_NAMES[nulled[i]]] = None
        yield _ENCODE(record)

