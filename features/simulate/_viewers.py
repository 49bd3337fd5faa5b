"""A creator's viewer pool: who comes to a drop, on which device, and their consent.

Viewers keep their device habit, locality, chattiness and consent across drops. The
returning share grows with every drop; past enrollers and recent visitors come back
more often (repeat attendance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from features.simulate._world import ViewerIds

DEVICES = ("phone", "desktop", "tv")
DEVICE_SHARE = (0.6, 0.3, 0.1)
P_GRANT_PERSONALIZATION = 0.75  # at the first join; the rest never grant it
P_ANALYTICS_ONLY = 0.4  # of those who never grant personalization
P_ANALYTICS_TOO = 0.5  # of those who grant personalization
P_WITHDRAW = 0.065  # per later session of a granting viewer
P_REGRANT = 0.35  # per later session of a viewer who withdrew
NEAR_SHARE = 0.35  # viewers living near the creator's pop-ups

# consent_kind values
NONE, ANALYTICS, PERSONALIZATION = 0, 1, 2
# state values (personalization)
NEVER, GRANTED, WITHDRAWN = 0, 1, 2

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Audience:
    """The viewers of one drop, in arrival order, with their consent actions."""

    viewer: IntArray  # index into the pool
    viewer_id: list[str]
    new: BoolArray
    device: IntArray  # index into DEVICES
    local_pickup: BoolArray
    chat_rate: npt.NDArray[np.float64]  # per minute
    reaction_rate: npt.NDArray[np.float64]
    grant_at_join: BoolArray  # a personalization grant event at the join
    analytics_at_join: BoolArray  # an analytics grant event at the join
    personalized_at_join: BoolArray  # personalization stands at the join
    withdraws: BoolArray  # withdraws personalization during this session


class ViewerPool:
    """Every viewer a creator has had, with what the next drop needs to know."""

    def __init__(self, creator: int, ids: ViewerIds) -> None:
        self.creator = creator
        self._ids = ids
        self.size = 0
        cap = 1024
        self.device = np.zeros(cap, np.int64)
        self.near = np.zeros(cap, bool)
        self.chattiness = np.zeros(cap, np.float64)
        self.consent_kind = np.zeros(cap, np.int64)
        self.state = np.zeros(cap, np.int64)
        self.last_drop = np.zeros(cap, np.int64)
        self.sessions = np.zeros(cap, np.int64)
        self.enrolled = np.zeros(cap, bool)
        self.withdrew = np.zeros(cap, bool)
        self.regranted = np.zeros(cap, bool)
        # history as the feature stage sees it: sessions, enrolls, claims, cta clicks
        self.hist = np.zeros((cap, 4), np.float64)
        self.names: list[str] = []

    def _grow(self, extra: int) -> None:
        need = self.size + extra
        cap = self.device.shape[0]
        if need <= cap:
            return
        new_cap = max(need, 2 * cap)
        for name in ("device", "near", "chattiness", "consent_kind", "state", "last_drop",
                     "sessions", "enrolled", "withdrew", "regranted", "hist"):
            old = getattr(self, name)
            grown = np.zeros((new_cap, *old.shape[1:]), old.dtype)
            grown[: old.shape[0]] = old
            setattr(self, name, grown)

    def _add(self, rng: np.random.Generator, n: int) -> IntArray:
        if self.size + n > ViewerIds.PER_CREATOR:
            raise ValueError(f"creator {self.creator} would exceed {ViewerIds.PER_CREATOR} viewers")
        self._grow(n)
        idx = np.arange(self.size, self.size + n, dtype=np.int64)
        self.device[idx] = rng.choice(len(DEVICES), size=n, p=DEVICE_SHARE)
        self.near[idx] = rng.random(n) < NEAR_SHARE
        self.chattiness[idx] = rng.gamma(0.8, 1.0 / 0.8, size=n)
        u = rng.random(n)
        kind = np.where(u < P_GRANT_PERSONALIZATION, PERSONALIZATION, NONE)
        analytics_only = (kind == NONE) & (rng.random(n) < P_ANALYTICS_ONLY)
        self.consent_kind[idx] = np.where(analytics_only, ANALYTICS, kind)
        self.names.extend(self._ids.ids(self.creator, idx))
        self.size += n
        return idx

    def _returning(self, rng: np.random.Generator, drop: int, n: int) -> IntArray:
        share = 0.6 * (1.0 - np.exp(-drop / 5.0))
        wanted = min(int(rng.binomial(n, share)), self.size)
        if wanted == 0:
            return np.zeros(0, np.int64)
        pool = np.arange(self.size)
        weight = np.exp(-(drop - self.last_drop[pool]) / 8.0)
        weight *= 1.0 + 1.5 * self.enrolled[pool] + 0.3 * np.minimum(self.sessions[pool], 5)
        # Weighted sampling without replacement (Gumbel top-k).
        keys = np.log(weight) + rng.gumbel(size=self.size)
        top = np.argpartition(-keys, wanted - 1)[:wanted]
        return np.sort(top).astype(np.int64)

    def audience(self, rng: np.random.Generator, drop: int, n: int, popup: bool) -> Audience:
        """Pick the drop's ``n`` viewers (returning first drawn, then new ones) in arrival order."""
        back = self._returning(rng, drop, n)
        fresh = self._add(rng, n - back.shape[0])
        viewer = np.concatenate([back, fresh])
        viewer = viewer[rng.permutation(viewer.shape[0])]
        new = self.sessions[viewer] == 0
        m = viewer.shape[0]
        device = np.where(rng.random(m) < 0.1, rng.choice(len(DEVICES), size=m, p=DEVICE_SHARE),
                          self.device[viewer])
        near = self.near[viewer]
        p_pickup = np.where(near, 0.9 if popup else 0.35, 0.2 if popup else 0.02)
        local_pickup = rng.random(m) < p_pickup
        chat = self.chattiness[viewer]
        reaction_rate = 0.45 * chat * rng.gamma(4.0, 0.25, size=m)

        kind, state = self.consent_kind[viewer], self.state[viewer]
        first_grant = new & (kind == PERSONALIZATION)
        regrant = (state == WITHDRAWN) & (rng.random(m) < P_REGRANT)
        analytics = new & ((kind == ANALYTICS) | (first_grant & (rng.random(m) < P_ANALYTICS_TOO)))
        personalized = first_grant | regrant | (state == GRANTED)
        withdraws = (state == GRANTED) & ~new & (rng.random(m) < P_WITHDRAW)
        return Audience(
            viewer=viewer,
            viewer_id=[self.names[i] for i in viewer.tolist()],
            new=new,
            device=device.astype(np.int64),
            local_pickup=local_pickup,
            chat_rate=0.35 * chat,
            reaction_rate=reaction_rate,
            grant_at_join=first_grant | regrant,
            analytics_at_join=analytics,
            personalized_at_join=personalized,
            withdraws=withdraws,
        )

    def record(
        self, audience: Audience, drop: int, hist_increment: npt.NDArray[np.float64],
        enrolled: BoolArray,
    ) -> None:
        """Carry a finished drop into the pool: consent states, visits, feature history."""
        v = audience.viewer
        state = self.state[v]
        state = np.where(audience.personalized_at_join, GRANTED, state)
        state = np.where(audience.withdraws, WITHDRAWN, state)
        self.regranted[v] |= audience.grant_at_join & ~audience.new
        self.withdrew[v] |= audience.withdraws
        self.state[v] = state
        self.sessions[v] += 1
        self.last_drop[v] = drop
        self.enrolled[v] |= enrolled
        self.hist[v] += hist_increment
