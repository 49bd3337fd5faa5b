"""The viewer's context at a decision, computed exactly as the feature stage defines it.

This is the one place the simulator turns a session's events into feature values; the
truth (``response``) is always evaluated on these, so p(x, a) on the batch feature
table equals the probability the simulator drew from. Definitions (shared brief,
"Feature spec"): only events of the session with ts strictly before the decision time
count; integer µs differences divided as float64, then cast to float32; history sums
over the viewer's earlier sessions with the same creator as they survive ingest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from features.spec import HISTORY_COUNTS, SESSION_COUNTS

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
NEVER = np.iinfo(np.int64).max  # "no such event" in time matrices
_SPAN = 1 << 33  # µs; more than any session's distance from its drop start


@dataclass
class EventTimes:
    """Sorted times of one exogenous event type (chat, reaction) for all sessions."""

    key: I64  # session * _SPAN + (ts - drop_start), sorted
    session: I64
    ts: I64

    @classmethod
    def build(cls, session: I64, ts: I64, drop_start: int) -> EventTimes:
        key = session * _SPAN + (ts - drop_start)
        order = np.argsort(key, kind="stable")
        return cls(key[order], session[order], ts[order])

    def before(self, rows: I64, t: I64, drop_start: int) -> tuple[I64, I64]:
        """Per row: how many events of the row's session have ts < t, and the last one's ts."""
        lo = np.searchsorted(self.key, rows * _SPAN, side="left")
        hi = np.searchsorted(self.key, rows * _SPAN + (t - drop_start), side="left")
        count = (hi - lo).astype(np.int64)
        last = np.where(count > 0, self.ts[np.maximum(hi - 1, 0)] if self.ts.size else 0, NEVER)
        return count, last.astype(np.int64)


@dataclass
class SessionFrame:
    """What the context of a drop's sessions depends on, filled as decisions unfold.

    Time matrices hold µs timestamps, ``NEVER`` where there is no event; the decision
    loop writes outcomes (clicks, enrolls, claims) into them as it draws them.
    """

    drop_start: int
    join: I64  # (n,)
    device_code: F32  # spec vocabulary codes
    channel_code: float
    niche_code: float
    local_pickup: F32
    history: npt.NDArray[np.float64]  # (n, 4) in HISTORY_COUNTS order
    chats: EventTimes
    reactions: EventTimes
    cta: I64  # (n, C) impression times
    click: I64  # (n, C)
    enroll: I64  # (n, C)
    slate: I64  # (n, S) slate times
    claim: I64  # (n, S, 5)


def _f32(x: npt.NDArray[np.float64] | npt.NDArray[np.int64]) -> F32:
    return np.asarray(x).astype(np.float32)


def _count_before(times: I64, rows: I64, t: I64) -> I64:
    m = times[rows].reshape(rows.shape[0], -1)
    out: I64 = (m < t[:, None]).sum(axis=1).astype(np.int64)
    return out


def context_at(frame: SessionFrame, rows: I64, t: I64) -> dict[str, F32]:
    """Context features of sessions ``rows`` at decision times ``t`` (every join is before t)."""
    n = rows.shape[0]
    chats, last_chat = frame.chats.before(rows, t, frame.drop_start)
    reactions, _ = frame.reactions.before(rows, t, frame.drop_start)
    since_chat = np.where(last_chat == NEVER, -1.0, (t - np.minimum(last_chat, t)) / 1e6)
    counts = {
        "sess_chats": chats,
        "sess_reactions": reactions,
        "sess_cta_impressions": _count_before(frame.cta, rows, t),
        "sess_cta_clicks": _count_before(frame.click, rows, t),
        "sess_bonus_claims": _count_before(frame.claim, rows, t),
        "sess_enrolls": _count_before(frame.enroll, rows, t),
    }
    assert tuple(counts) == tuple(SESSION_COUNTS)
    ctx: dict[str, F32] = {
        "minute_in_drop": _f32((t - frame.drop_start) / 60e6),
        "secs_since_join": _f32((t - frame.join[rows]) / 1e6),
        "secs_since_last_chat": _f32(since_chat),
        **{name: _f32(c) for name, c in counts.items()},
        "sess_slates": _f32(_count_before(frame.slate, rows, t)),
    }
    for j, name in enumerate(HISTORY_COUNTS):
        ctx[name] = _f32(frame.history[rows, j])
    ctx["local_pickup"] = frame.local_pickup[rows]
    ctx["device"] = frame.device_code[rows]
    ctx["channel"] = np.full(n, frame.channel_code, np.float32)
    ctx["creator_niche"] = np.full(n, frame.niche_code, np.float32)
    return ctx


def history_increment(frame: SessionFrame, personalized_at_join: npt.NDArray[np.bool_],
                      withdraw_at: I64) -> npt.NDArray[np.float64]:
    """What each session adds to its viewer's history, as the feature stage will see it.

    Ingest drops events recorded while personalization is withdrawn: a session that
    starts withdrawn leaves nothing; one withdrawn mid-session keeps the events before
    the withdrawal (its join among them, so the session still counts).
    """
    n = frame.join.shape[0]
    cut = withdraw_at[:, None]
    inc = np.zeros((n, 4), np.float64)
    inc[:, 0] = 1.0
    inc[:, 1] = (frame.enroll < cut).sum(axis=1)
    inc[:, 2] = (frame.claim.reshape(n, -1) < cut).sum(axis=1)
    inc[:, 3] = (frame.click < cut).sum(axis=1)
    assert tuple(HISTORY_COUNTS) == ("hist_sessions", "hist_enrolls", "hist_claims", "hist_cta_clicks")
    out: npt.NDArray[np.float64] = inc * personalized_at_join[:, None]
    return out
