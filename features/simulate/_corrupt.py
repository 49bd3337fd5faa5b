"""Bad records on purpose, so that ingest is exercised on every run.

Bad records are *added* beside the record they copy; the simulated events themselves
stay intact, so the valid events are exactly the simulated world and the ground truth
holds for them. Invalid copies get a fresh event id (``<drop>-x<n>``); duplicates keep
the id of their original and follow it in the file, so "first wins" keeps the original.
Conflicting duplicates copy ``leave`` events (with a later ts), which no feature reads.
"""

from __future__ import annotations

import numpy as np

from features.schema import COMMON_FIELDS, EVENT_TYPES, FIELD_KINDS
from features.simulate._columns import TYPE_CODE, TYPE_NAMES, Columns

INVALID_KINDS: tuple[str, ...] = (
    "missing_field", "unknown_type", "negative_amount", "bad_propensity", "future_ts",
)
DUPLICATE_KINDS: tuple[str, ...] = ("exact", "conflicting")
JSONL_KINDS: tuple[str, ...] = ("malformed_json", "non_utf8", "truncated_last_line")
UNKNOWN_TYPES: tuple[str, ...] = ("poll_vote", "gift", "superchat")
ALL_TYPE_NAMES: tuple[str, ...] = TYPE_NAMES + UNKNOWN_TYPES
FIELD_NAMES: tuple[str, ...] = tuple(FIELD_KINDS)
FUTURE_US = 3652 * 86_400 * 1_000_000  # ten years

# Fields a record of each type must carry (the candidates for "missing_field").
_REQUIRED = {
    TYPE_CODE[name]: tuple(FIELD_NAMES.index(f) for f in (*COMMON_FIELDS, *t.required))
    for name, t in EVENT_TYPES.items()
}


def corrupt(rng: np.random.Generator, cols: Columns, fraction: float,
            next_x: int = 0) -> tuple[Columns, dict[str, int]]:
    """Add about ``fraction`` x records bad copies; return the new columns and counts per kind."""
    counts = dict.fromkeys((*INVALID_KINDS, *DUPLICATE_KINDS), 0)
    m = cols["kind"].shape[0]
    n_bad = int(rng.binomial(m, fraction)) if fraction > 0 and m else 0
    if n_bad == 0:
        return cols, counts
    kinds = rng.integers(0, len(INVALID_KINDS) + len(DUPLICATE_KINDS), size=n_bad)
    pools = {
        "negative_amount": np.flatnonzero(cols["kind"] == TYPE_CODE["enroll"]),
        "bad_propensity": np.flatnonzero(~np.isnan(cols["propensity"])),
        "conflicting": np.flatnonzero(cols["kind"] == TYPE_CODE["leave"]),
    }
    names = (*INVALID_KINDS, *DUPLICATE_KINDS)
    source = np.zeros(n_bad, np.int64)
    chosen: list[str] = []
    for i, k in enumerate(kinds.tolist()):
        name = names[k]
        pool = pools.get(name)
        if pool is not None and pool.shape[0] == 0:
            name = "missing_field"
            pool = None
        source[i] = int(rng.choice(pool)) if pool is not None else int(rng.integers(m))
        chosen.append(name)
    copies: Columns = {key: col[source].copy() for key, col in cols.items()}
    x = next_x
    for i, name in enumerate(chosen):
        counts[name] += 1
        if name in INVALID_KINDS:
            copies["eid"][i], copies["eid_x"][i] = x, True
            x += 1
        if name == "missing_field":
            required = _REQUIRED[int(copies["kind"][i])]
            copies["nulled"][i] = required[int(rng.integers(len(required)))]
        elif name == "unknown_type":
            copies["type"][i] = len(TYPE_NAMES) + int(rng.integers(len(UNKNOWN_TYPES)))
        elif name == "negative_amount":
            copies["amount"][i] = -abs(float(copies["amount"][i])) - 1.0
        elif name == "bad_propensity":
            copies["propensity"][i] = 0.0 if rng.random() < 0.5 else 1.5
        elif name == "future_ts":
            copies["ts"][i] += FUTURE_US
        elif name == "conflicting":
            copies["ts"][i] += int(rng.integers(1, 31)) * 1_000_000
    # Each copy right after its source (and after earlier copies of the same source).
    primary = np.concatenate([np.arange(m), source])
    secondary = np.concatenate([np.zeros(m, np.int64), np.arange(1, n_bad + 1)])
    order = np.lexsort((secondary, primary))
    out = {key: np.concatenate([cols[key], copies[key]])[order] for key in cols}
    return out, counts

