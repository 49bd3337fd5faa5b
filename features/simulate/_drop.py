"""One live drop, simulated: sessions, their events and the logged decisions.

Exogenous behaviour (arrival, session length, chat, reactions, decision times) is drawn
up front; the decisions (CTA impressions and bonus slates) are then played in time
order, one per session per step and vectorized across sessions, because a decision's
context counts the clicks, enrolls and claims of the decisions before it.

Timing rules that keep labels unambiguous: CTA impressions of a session are >= 150 s
apart; a click comes 5–90 s after its impression, an enroll 3–28 s after its click
(inside the 120 s label window); no decision falls in the last 125 s of a session, so
every outcome precedes the leave. Ordinary event times are even µs and consent
withdrawals odd, so no event ties with a withdrawal; a withdrawal never falls inside
an outcome window, so ingest (which drops what follows it) censors no label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from features.simulate import _policy
from features.simulate._columns import Columns, Decisions, assemble
from features.simulate._context import (
    NEVER,
    EventTimes,
    SessionFrame,
    context_at,
    history_increment,
)
from features.simulate._viewers import DEVICES, Audience, ViewerPool
from features.simulate._world import DROP, Creator, DropPlan, rng_for
from features.simulate.response import (
    CHANNEL_VOCAB,
    DEVICE_VOCAB,
    SLATE_SIZE,
    true_claim_prob,
    true_click_prob,
    true_enroll_prob,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
S = 1_000_000  # µs per second
MINUTE = 60 * S

CTA_MIN_GAP = 150 * S
CTA_TAIL = 125 * S  # no CTA impression in a session's last 125 s
SLATE_TAIL = 100 * S
CTA_WINDOW = 120 * S  # a click or enroll comes at most this long after its impression
SLATE_WINDOW = 90 * S  # claims within 60 s of the slate, pickups within 30 s of a claim
P_LEAVE = 0.9  # sessions that end with a leave event
P_PICKUP_SELECT = 0.85  # claimed physical kits that the viewer schedules for pickup


def _even(x: npt.ArrayLike) -> I64:
    out: I64 = np.asarray(x, dtype=np.int64) & ~np.int64(1)
    return out


@dataclass
class CtaTruth:
    """What the simulator knew at each CTA impression (for tests and evaluation)."""

    session: I64
    ts: I64
    variant: I64
    propensity: F64
    click_prob: F64
    personalized: npt.NDArray[np.bool_]
    context: dict[str, F32]


@dataclass
class DropResult:
    """A drop's events as columns (codes into the dictionaries below) and its facts."""

    plan: DropPlan
    creator: Creator
    columns: Columns
    session_ids: list[str]
    viewer_ids: list[str]
    slate_ids: list[str]
    new_viewers: int
    truth: CtaTruth | None = None


def _frame(rng: np.random.Generator, plan: DropPlan, aud: Audience, history: F64,
           niche_code: float) -> tuple[SessionFrame, I64, I64, npt.NDArray[np.bool_]]:
    """The drop's sessions: (frame, session end, withdrawal time or NEVER, has a leave)."""
    n = aud.viewer.shape[0]
    start, end_drop = plan.start_us, plan.start_us + plan.length_us
    join = _even(start + np.sort(rng.beta(1.3, 4.0, size=n)) * plan.length_us)
    dur = np.maximum(rng.lognormal(np.log(12.0), 0.8, size=n) * MINUTE, 20 * S)
    end = _even(np.minimum(join + dur, end_drop))
    span = (end - join).astype(np.float64)
    minutes = span / MINUTE

    def times(rate: F64) -> EventTimes:
        count = rng.poisson(rate * minutes)
        sess = np.repeat(np.arange(n, dtype=np.int64), count)
        ts = _even(join[sess] + np.floor(rng.random(sess.shape[0]) * span[sess]))
        return EventTimes.build(sess, ts, start)

    chats, reactions = times(aud.chat_rate), times(aud.reaction_rate)
    max_span = int(span.max()) if n else 0
    c_cols = max_span // CTA_MIN_GAP + 1
    gaps = CTA_MIN_GAP + rng.exponential(60 * S, size=(n, c_cols))
    gaps[:, 0] = rng.uniform(30 * S, 150 * S, size=n)
    cta = _even(join[:, None] + np.cumsum(gaps, axis=1))
    cta = np.where(cta + CTA_TAIL <= end[:, None], cta, NEVER)
    s_cols = max_span // (180 * S) + 1
    sgaps = rng.uniform(180 * S, 360 * S, size=(n, s_cols))
    sgaps[:, 0] = rng.uniform(60 * S, 240 * S, size=n)
    slate = _even(join[:, None] + np.cumsum(sgaps, axis=1))
    slate = np.where(slate + SLATE_TAIL <= end[:, None], slate, NEVER)
    withdraw_at = np.where(
        aud.withdraws, _even(join + rng.uniform(0.2, 0.9, size=n) * span) + 1, NEVER,
    ).astype(np.int64)
    withdraw_at = _outside_windows(withdraw_at, cta, slate)
    device_code = np.asarray([DEVICE_VOCAB.index(DEVICES[d]) for d in aud.device.tolist()], np.float32)
    frame = SessionFrame(
        drop_start=start,
        join=join,
        device_code=device_code,
        channel_code=float(CHANNEL_VOCAB.index(plan.channel)),
        niche_code=niche_code,
        local_pickup=aud.local_pickup.astype(np.float32),
        history=history,
        chats=chats,
        reactions=reactions,
        cta=cta,
        click=np.full(cta.shape, NEVER, np.int64),
        enroll=np.full(cta.shape, NEVER, np.int64),
        slate=slate,
        claim=np.full((n, s_cols, SLATE_SIZE), NEVER, np.int64),
    )
    has_leave = np.asarray(rng.random(n) < P_LEAVE, dtype=np.bool_)
    return frame, end, withdraw_at, has_leave


def _outside_windows(t: I64, cta: I64, slate: I64) -> I64:
    """Move each withdrawal past any open outcome window (CTA 120 s, slate 90 s).

    Ingest drops what follows a withdrawal; a withdrawal inside a window would censor
    the clicks or claims of a decision taken before it, so labels would lie.
    """
    starts = np.concatenate([cta, slate], axis=1)
    width = np.concatenate([np.full(cta.shape, CTA_WINDOW), np.full(slate.shape, SLATE_WINDOW)], axis=1)
    ends = np.where(starts == NEVER, NEVER, starts + width)
    for _ in range(starts.shape[1] + 1):
        inside = (starts < t[:, None]) & (t[:, None] <= ends)
        hit = inside.any(axis=1)
        if not hit.any():
            break
        t = np.where(hit, np.where(inside, ends, 0).max(axis=1) + S + 1, t)  # odd µs again
    return t


def _subset(ctx: dict[str, F32], mask: npt.NDArray[np.bool_]) -> dict[str, F32]:
    return {k: v[mask] for k, v in ctx.items()}


def _play(rng: np.random.Generator, creator: Creator, frame: SessionFrame, aud: Audience,
          withdraw_at: I64, collect: bool) -> Decisions:
    n, c_cols = frame.cta.shape
    s_cols = frame.slate.shape[1]
    dec = Decisions(
        cta_variant=np.full((n, c_cols), -1, np.int64),
        cta_prop=np.full((n, c_cols), np.nan),
        slate_bonus=np.full((n, s_cols, SLATE_SIZE), -1, np.int64),
        slate_prop=np.full((n, s_cols, SLATE_SIZE), np.nan),
        pickup=np.full((n, s_cols, SLATE_SIZE), NEVER, np.int64),
        truth=[],
    )
    style, discount, urgency = creator.variant_style, creator.variant_discount, creator.variant_urgency
    kind, value, rp = creator.bonus_kind, creator.bonus_value, creator.bonus_requires_pickup
    all_t = np.concatenate([frame.cta, frame.slate], axis=1)
    order = np.argsort(all_t, axis=1, kind="stable")
    positions = np.arange(1, SLATE_SIZE + 1)
    for step in range(all_t.shape[1]):
        col = order[:, step]
        t_all = all_t[np.arange(n), col]
        rows = np.flatnonzero(t_all != NEVER).astype(np.int64)
        if rows.shape[0] == 0:
            break
        col, t = col[rows], t_all[rows]
        ctx = context_at(frame, rows, t)
        personal = aud.personalized_at_join[rows] & (t < withdraw_at[rows])
        is_cta = col < c_cols

        # CTA impressions: logging policy, click, enroll.
        r, j, tc, pc = rows[is_cta], col[is_cta], t[is_cta], personal[is_cta]
        cctx = _subset(ctx, is_cta)
        probs = _policy.cta_probs(creator, cctx)
        pick = _policy.choose(rng, probs)
        prop = probs[np.arange(pick.shape[0]), pick]
        pick = np.where(pc, pick, creator.default_variant)
        prop = np.where(pc, prop, 1.0)
        p_click = true_click_prob(cctx, style[pick], discount[pick], urgency[pick])
        click = rng.random(r.shape[0]) < p_click
        click_t = _even(tc + rng.uniform(5 * S, 90 * S, size=r.shape[0]))
        enroll = click & (rng.random(r.shape[0]) < true_enroll_prob(cctx, discount[pick]))
        enroll_t = _even(click_t + rng.uniform(3 * S, 28 * S, size=r.shape[0]))
        frame.click[r, j] = np.where(click, click_t, NEVER)
        frame.enroll[r, j] = np.where(enroll, enroll_t, NEVER)
        dec.cta_variant[r, j], dec.cta_prop[r, j] = pick, prop
        if collect and r.shape[0]:
            dec.truth.append((r, tc, pick, prop, p_click, pc, cctx))

        # Bonus slates: Plackett–Luce logging policy, position-biased claims, pickups.
        is_slate = ~is_cta
        r, j, ts, ps = rows[is_slate], col[is_slate] - c_cols, t[is_slate], personal[is_slate]
        m = r.shape[0]
        if m == 0:
            continue
        sctx = _subset(ctx, is_slate)
        chosen, sprop = _policy.sample_slates(rng, _policy.slate_scores(creator, sctx))
        dflt, dprop = _policy.default_slates(creator, m)
        chosen = np.where(ps[:, None], chosen, dflt)
        sprop = np.where(ps[:, None], sprop, dprop)
        wide = {k: v[:, None] for k, v in sctx.items()}
        p_claim = true_claim_prob(wide, kind[chosen], value[chosen], rp[chosen], positions[None, :])
        claim = rng.random((m, SLATE_SIZE)) < p_claim
        claim_t = _even(ts[:, None] + rng.uniform(4 * S, 60 * S, size=(m, SLATE_SIZE)))
        pick_up = claim & (rp[chosen] > 0) & (frame.local_pickup[r] > 0)[:, None]
        pick_up &= rng.random((m, SLATE_SIZE)) < P_PICKUP_SELECT
        pickup_t = _even(claim_t + rng.uniform(3 * S, 30 * S, size=(m, SLATE_SIZE)))
        frame.claim[r, j] = np.where(claim, claim_t, NEVER)
        dec.pickup[r, j] = np.where(pick_up, pickup_t, NEVER)
        dec.slate_bonus[r, j], dec.slate_prop[r, j] = chosen, sprop
    return dec


def simulate_drop(
    seed: int, creator: Creator, plan: DropPlan, pool: ViewerPool, viewers_per_drop: int,
    niche_code: float, collect_truth: bool = False,
) -> DropResult:
    """Simulate one drop of ``creator`` and carry its outcome into ``pool``."""
    rng = rng_for(seed, DROP, creator.index, plan.index)
    n = max(1, int(rng.poisson(viewers_per_drop)))
    aud = pool.audience(rng, plan.index, n, popup=plan.channel == "popup")
    frame, end, withdraw_at, has_leave = _frame(
        rng, plan, aud, pool.hist[aud.viewer].copy(), niche_code,
    )
    dec = _play(rng, creator, frame, aud, withdraw_at, collect_truth)
    inc = history_increment(frame, aud.personalized_at_join, withdraw_at)
    pool.record(aud, plan.index, inc, (frame.enroll != NEVER).any(axis=1))
    columns, slate_ids = assemble(plan, creator, frame, aud, dec, end, withdraw_at, has_leave)
    session_ids = [f"{plan.drop_id}-s{i:04d}" for i in range(n)]
    truth = None
    if collect_truth:
        truth = _truth(dec)
    return DropResult(
        plan=plan, creator=creator, columns=columns, session_ids=session_ids,
        viewer_ids=aud.viewer_id, slate_ids=slate_ids, new_viewers=int(aud.new.sum()), truth=truth,
    )


def _truth(dec: Decisions) -> CtaTruth:
    parts = dec.truth
    if not parts:
        empty = np.zeros(0, np.int64)
        return CtaTruth(empty, empty, empty, np.zeros(0), np.zeros(0), np.zeros(0, bool), {})
    names = list(parts[0][6])
    return CtaTruth(
        session=np.concatenate([p[0] for p in parts]),
        ts=np.concatenate([p[1] for p in parts]),
        variant=np.concatenate([p[2] for p in parts]),
        propensity=np.concatenate([p[3] for p in parts]),
        click_prob=np.concatenate([p[4] for p in parts]),
        personalized=np.concatenate([p[5] for p in parts]),
        context={k: np.concatenate([p[6][k] for p in parts]) for k in names},
    )

