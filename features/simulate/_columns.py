"""A drop's events as columns: codes into per-drop dictionaries, sorted like a log.

Columns (one entry per record): ``kind`` (the type whose fields the record carries),
``type`` (the type written; differs for unknown-type records), ``sess``, ``ts``,
``variant``, ``propensity``, ``bonus``, ``slate``, ``position``, ``amount``,
``currency``, ``device``, ``local_pickup``, ``purpose``, ``action``, ``eid``/``eid_x``
(event id counter, and whether it is an added bad record) and ``nulled`` (index of a
field nulled on purpose, -1 for none). -1 / NaN / 0 (position) mean "absent".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from features.schema import EVENT_TYPES
from features.simulate._context import NEVER, SessionFrame
from features.simulate._viewers import Audience
from features.simulate._world import Creator, DropPlan
from features.simulate.response import SLATE_SIZE

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Columns = dict[str, npt.NDArray]

TYPE_NAMES: tuple[str, ...] = tuple(EVENT_TYPES)
TYPE_CODE = {name: i for i, name in enumerate(TYPE_NAMES)}
# Order of events that share a timestamp within a session: the join first, then consent.
_TIE_RANK = {name: i for i, name in enumerate((
    "join", "consent", "chat", "reaction", "cta_impression", "cta_click", "enroll",
    "bonus_impression", "bonus_claim", "pickup_select", "leave",
))}
PURPOSES = ("personalization", "analytics")
ACTIONS = ("grant", "withdraw")


@dataclass
class Decisions:
    """Logged decisions of a drop, per session and decision slot."""

    cta_variant: I64
    cta_prop: F64
    slate_bonus: I64  # (n, S, 5)
    slate_prop: F64
    pickup: I64  # (n, S, 5) pickup_select times
    truth: list[tuple[I64, I64, I64, F64, F64, npt.NDArray[np.bool_], dict[str, F32]]]


_DEFAULTS: dict[str, tuple[type, object]] = {
    "variant": (np.int64, -1), "propensity": (np.float64, np.nan), "bonus": (np.int64, -1),
    "slate": (np.int64, -1), "position": (np.int64, 0), "amount": (np.float64, np.nan),
    "currency": (np.bool_, False), "device": (np.int64, -1), "local_pickup": (np.int64, -1),
    "purpose": (np.int64, -1), "action": (np.int64, -1),
}


def assemble(plan: DropPlan, creator: Creator, frame: SessionFrame, aud: Audience,
            dec: Decisions, end: I64, withdraw_at: I64,
            has_leave: npt.NDArray[np.bool_]) -> tuple[Columns, list[str]]:
    """All events of the drop as sorted columns, and the drop's slate ids."""
    n = frame.join.shape[0]
    blocks: list[Columns] = []

    def add(type_name: str, sess: I64, ts: I64, **cols: npt.NDArray) -> None:
        m = sess.shape[0]
        block: Columns = {"kind": np.full(m, TYPE_CODE[type_name], np.int64), "sess": sess, "ts": ts}
        for name, (dtype, default) in _DEFAULTS.items():
            block[name] = np.asarray(cols[name], dtype) if name in cols else np.full(m, default, dtype)
        blocks.append(block)

    every = np.arange(n, dtype=np.int64)
    add("join", every, frame.join, device=aud.device,
        local_pickup=aud.local_pickup.astype(np.int64))
    for flag, purpose in ((aud.grant_at_join, 0), (aud.analytics_at_join, 1)):
        sess = every[flag]
        add("consent", sess, frame.join[sess], purpose=np.full(sess.shape[0], purpose),
            action=np.zeros(sess.shape[0]))
    sess = every[aud.withdraws]
    add("consent", sess, withdraw_at[sess], purpose=np.zeros(sess.shape[0]),
        action=np.ones(sess.shape[0]))
    add("chat", frame.chats.session, frame.chats.ts)
    add("reaction", frame.reactions.session, frame.reactions.ts)
    sess = every[has_leave]
    add("leave", sess, end[sess])

    r, j = np.nonzero(frame.cta != NEVER)
    variant = dec.cta_variant[r, j]
    add("cta_impression", r.astype(np.int64), frame.cta[r, j], variant=variant,
        propensity=dec.cta_prop[r, j])
    r, j = np.nonzero(frame.click != NEVER)
    add("cta_click", r.astype(np.int64), frame.click[r, j], variant=dec.cta_variant[r, j])
    r, j = np.nonzero(frame.enroll != NEVER)
    variant = dec.cta_variant[r, j]
    amount = np.round(creator.course_price * (1.0 - creator.variant_discount[variant]), 2)
    add("enroll", r.astype(np.int64), frame.enroll[r, j], variant=variant, amount=amount,
        currency=np.ones(r.shape[0], bool))

    # Slate ids in order of (time, session).
    sr, sj = np.nonzero(frame.slate != NEVER)
    st = frame.slate[sr, sj]
    rank = np.lexsort((sr, st))
    slate_no = np.full(frame.slate.shape, -1, np.int64)
    slate_no[sr[rank], sj[rank]] = np.arange(rank.shape[0])
    slate_ids = [f"{plan.drop_id}-sl{k:04d}" for k in range(rank.shape[0])]
    k = SLATE_SIZE
    add("bonus_impression", np.repeat(sr, k).astype(np.int64), np.repeat(st, k),
        bonus=dec.slate_bonus[sr, sj].ravel(), slate=np.repeat(slate_no[sr, sj], k),
        position=np.tile(np.arange(1, k + 1), sr.shape[0]), propensity=dec.slate_prop[sr, sj].ravel())
    r, j, p = np.nonzero(frame.claim != NEVER)
    add("bonus_claim", r.astype(np.int64), frame.claim[r, j, p], bonus=dec.slate_bonus[r, j, p],
        slate=slate_no[r, j])
    r, j, p = np.nonzero(dec.pickup != NEVER)
    add("pickup_select", r.astype(np.int64), dec.pickup[r, j, p], bonus=dec.slate_bonus[r, j, p])

    cols: Columns = {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
    tie = np.asarray([_TIE_RANK[t] for t in TYPE_NAMES], np.int64)[cols["kind"]]
    order = np.lexsort((cols["position"], tie, cols["sess"], cols["ts"]))
    cols = {name: col[order] for name, col in cols.items()}
    m = order.shape[0]
    cols["type"] = cols["kind"].copy()
    cols["eid"] = np.arange(m, dtype=np.int64)
    cols["eid_x"] = np.zeros(m, bool)
    cols["nulled"] = np.full(m, -1, np.int64)
    return cols, slate_ids
