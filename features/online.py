"""The online feature runtime: a session's events in, the model's feature vector out.

Edge-safe (numpy and the standard library only). It computes exactly the batch
definitions (``features.batch``): at a decision time ``t`` only the session's events
with ``ts < t`` count, even when events at ``t`` itself were already fed, and values
are computed the same way (integer µs differences divided as float64, cast to float32),
so a replayed session reproduces the batch rows bit for bit.

    >>> session = SessionFeatures(spec, creator_niche="ceramics", history=history)
    >>> session.update({"type": "join", "ts": "2026-09-01T18:00:00Z", "device": "phone",
    ...                 "channel": "popup", "drop_started_at": "2026-09-01T17:55:00Z"})
    >>> x = session.cta_matrix("2026-09-01T18:02:00Z", variant_features)  # K x (context+item)

Viewer history reaches the runtime as a ``ViewerHistory`` the phone or platform holds:
when a session with the creator ends, fold it in with ``ViewerHistory.absorb`` (or
``SessionFeatures.history_after``); a session counts for the sessions that begin after
it ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from features.schema import EVENT_TYPES, ts_to_us, us_to_iso
from features.spec import HISTORY_COUNTS, SESSION_COUNTS, FeatureSpec

__all__ = ["SessionFeatures", "ViewerHistory"]

Timestamp = str | datetime | int

# The runtime's internal slot order: the context features it knows how to compute.
_SLOTS: tuple[str, ...] = (
    "minute_in_drop", "secs_since_join", "secs_since_last_chat",
    *SESSION_COUNTS, "sess_slates", *HISTORY_COUNTS,
    "local_pickup", "device", "channel", "creator_niche",
)
_MINUTE, _SINCE_JOIN, _SINCE_CHAT = 0, 1, 2
_COUNTS = slice(3, 3 + len(SESSION_COUNTS) + 1)  # sess_* then sess_slates
_HIST = slice(_COUNTS.stop, _COUNTS.stop + len(HISTORY_COUNTS))
_JOINED = slice(_HIST.stop, _HIST.stop + 3)  # local_pickup, device, channel
_NICHE = _JOINED.stop
# Event type -> index of the session counter it increments.
_COUNTER: dict[str, int] = {kind: i for i, kind in enumerate(SESSION_COUNTS.values())}
_SLATE_COUNTER = len(SESSION_COUNTS)
_NO_EVENT = -(2**63)
# Per spec object: (the spec, slot permutation or None, defaults without history and niche, niche codes).
_LAYOUTS: dict[int, tuple[FeatureSpec, list[int] | None, list[float], dict[str | None, float]]] = {}


def _us(value: object, what: str) -> int:
    if type(value) is int:
        return value
    try:
        return ts_to_us(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: not a timestamp ({e})") from e


@dataclass(frozen=True, slots=True)
class ViewerHistory:
    """A viewer's history with one creator: sessions that ended, and what they held."""

    sessions: int = 0
    enrolls: int = 0
    claims: int = 0
    cta_clicks: int = 0

    def __post_init__(self) -> None:
        for name in ("sessions", "enrolls", "claims", "cta_clicks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ViewerHistory.{name} must be an integer >= 0, got {value!r}")

    def to_features(self) -> dict[str, float]:
        """The hist_* features, by name."""
        counts = (self.sessions, self.enrolls, self.claims, self.cta_clicks)
        return {name: float(n) for name, n in zip(HISTORY_COUNTS, counts, strict=True)}

    def absorb(self, events: Iterable[Mapping[str, object]]) -> ViewerHistory:
        """The history after one more finished session with ``events`` (any order)."""
        counts = {"enroll": 0, "bonus_claim": 0, "cta_click": 0}
        seen = 0
        for event in events:
            seen += 1
            kind = event.get("type")
            if kind in counts:
                counts[str(kind)] += 1
        if seen == 0:
            raise ValueError("a finished session has at least one event; got none")
        return ViewerHistory(
            self.sessions + 1, self.enrolls + counts["enroll"],
            self.claims + counts["bonus_claim"], self.cta_clicks + counts["cta_click"],
        )


class SessionFeatures:
    """Point-in-time context features of one session, updated one event at a time.

    Feed the session's events in time order with :meth:`update`; ask for the feature
    vector at any decision time ``at`` not before the latest event with
    :meth:`context`, :meth:`cta_matrix` or :meth:`bonus_matrix`.
    """

    __slots__ = (
        "_before", "_bonus_bufs", "_counts", "_cta_bufs", "_defaults", "_drop_start",
        "_join_codes", "_join_id", "_join_t", "_last_chat", "_last_chat_before", "_last_ts",
        "_n_bonus", "_n_cta", "_n_ctx", "_perm", "_slates", "_spec", "_vals",
    )

    def __init__(
        self, spec: FeatureSpec, *, creator_niche: str | None = None,
        history: ViewerHistory | None = None,
    ) -> None:
        layout = _LAYOUTS.get(id(spec))
        if layout is None or layout[0] is not spec:
            layout = _layout(spec)
        self._spec = spec
        self._n_ctx = len(_SLOTS)
        self._n_cta = len(spec.cta_item)
        self._n_bonus = len(spec.bonus_item)
        self._perm: list[int] | None = layout[1]
        defaults = list(layout[2])
        if history is not None:
            defaults[_HIST] = [float(history.sessions), float(history.enrolls), float(history.claims),
                               float(history.cta_clicks)]
        niches = layout[3]
        niche = niches.get(creator_niche)
        if niche is None:
            niche = spec["creator_niche"].encode(creator_niche)
            if len(niches) < 256:
                niches[creator_niche] = niche
        defaults[_NICHE] = niche
        self._defaults = defaults
        self._vals: list[float] = list(defaults)
        self._counts = [0] * (len(SESSION_COUNTS) + 1)
        self._before = [0] * (len(SESSION_COUNTS) + 1)  # counts strictly before _last_ts
        self._last_ts = _NO_EVENT
        self._last_chat: int | None = None
        self._last_chat_before: int | None = None
        self._join_t: int | None = None
        self._join_id = ""
        self._drop_start: int | None = None
        self._join_codes: list[float] = defaults[_JOINED]
        self._slates: set[object] = set()
        self._cta_bufs: dict[int, np.ndarray] = {}
        self._bonus_bufs: dict[int, np.ndarray] = {}

    @property
    def spec(self) -> FeatureSpec:
        return self._spec

    def update(self, event: Mapping[str, object]) -> None:
        """Absorb the session's next event (time order; equal times in any order)."""
        try:
            kind = event["type"]
            raw_ts = event["ts"]
        except KeyError as e:
            raise ValueError(f"event has no {e.args[0]!r} field: {dict(event)!r}") from None
        t = raw_ts if type(raw_ts) is int else _us(raw_ts, "event ts")
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event type {kind!r}; expected one of {sorted(EVENT_TYPES)}")
        started = event.get("drop_started_at") if kind == "join" else None
        drop_start = None if started is None else _us(started, "join drop_started_at")
        if t != self._last_ts:
            if t < self._last_ts:
                raise ValueError(
                    f"events must come in time order: {kind} at {us_to_iso(t)} is older than "
                    f"the latest event at {us_to_iso(self._last_ts)}"
                )
            self._before[:] = self._counts
            self._last_chat_before = self._last_chat
            self._last_ts = t
        counter = _COUNTER.get(kind)
        if counter is not None:
            self._counts[counter] += 1
            if kind == "chat":
                self._last_chat = t
        elif kind == "bonus_impression":
            slate = event.get("slate_id")
            if slate not in self._slates:
                self._slates.add(slate)
                self._counts[_SLATE_COUNTER] += 1
        elif kind == "join":
            self._join(event, t, drop_start)

    def _join(self, event: Mapping[str, object], t: int, drop_start: int | None) -> None:
        """Keep the session's first join (earliest ts, then smallest event_id)."""
        event_id = str(event.get("event_id") or "")
        if self._join_t is not None and (t > self._join_t or event_id >= self._join_id):
            return
        spec = self._spec
        self._drop_start = drop_start
        self._join_t, self._join_id = t, event_id
        self._join_codes = [spec[n].encode(event.get(n)) for n in ("local_pickup", "device", "channel")]

    def context(self, at: Timestamp, out: np.ndarray | None = None) -> np.ndarray:
        """The context vector (float32, spec order) for a decision at ``at``.

        Uses only events with ``ts < at``. Writes into ``out`` when given (a float32
        view of the spec's length), else into a new array.
        """
        t = at if type(at) is int else _us(at, "decision time")
        if t > self._last_ts:
            counts, last_chat = self._counts, self._last_chat
        elif t == self._last_ts:
            counts, last_chat = self._before, self._last_chat_before
        else:
            raise ValueError(
                f"decision time {us_to_iso(t)} is before the latest event fed "
                f"({us_to_iso(self._last_ts)}); ask before feeding later events"
            )
        vals = self._vals
        join_t = self._join_t
        if join_t is not None and join_t < t:
            start = self._drop_start
            vals[_MINUTE] = (t - start) / 60e6 if start is not None else self._defaults[_MINUTE]
            vals[_SINCE_JOIN] = (t - join_t) / 1e6
            vals[_JOINED] = self._join_codes
        else:
            defaults = self._defaults
            vals[_MINUTE] = defaults[_MINUTE]
            vals[_SINCE_JOIN] = defaults[_SINCE_JOIN]
            vals[_JOINED] = defaults[_JOINED]
        vals[_SINCE_CHAT] = (t - last_chat) / 1e6 if last_chat is not None else self._defaults[_SINCE_CHAT]
        vals[_COUNTS] = counts
        if out is None:
            out = np.empty(self._n_ctx, np.float32)
        if self._perm is None:
            out[:] = vals
        else:
            out[:] = [vals[i] for i in self._perm]
        return out

    def _matrix(self, at: Timestamp, items: np.ndarray, width: int, bufs: dict[int, np.ndarray],
                what: str) -> np.ndarray:
        items = np.asarray(items, np.float32)
        if items.ndim != 2 or items.shape[1] != width:
            raise ValueError(f"{what} must be a K x {width} array, got shape {items.shape}")
        k = items.shape[0]
        buf = bufs.get(k)
        if buf is None:
            buf = bufs[k] = np.empty((k, self._n_ctx + width), np.float32)
        n = self._n_ctx
        if k == 0:
            self.context(at)  # still refuse a decision time before the latest event
            return buf
        self.context(at, buf[0, :n])
        buf[1:, :n] = buf[0, :n]
        buf[:, n:] = items
        return buf

    def cta_matrix(self, at: Timestamp, items: np.ndarray) -> np.ndarray:
        """Model input for K CTA variants: the context at ``at`` tiled beside ``items``
        (K x cta item features, encoded as in the feature catalog).

        The returned array is reused by the next call with the same K; copy it to keep it.
        """
        return self._matrix(at, items, self._n_cta, self._cta_bufs, "CTA items")

    def bonus_matrix(self, at: Timestamp, items: np.ndarray) -> np.ndarray:
        """Model input for K bonuses (see :meth:`cta_matrix`)."""
        return self._matrix(at, items, self._n_bonus, self._bonus_bufs, "bonus items")

    def history_after(self, history: ViewerHistory | None = None) -> ViewerHistory:
        """``history`` (default: none) plus this session, once it has ended."""
        base = history or ViewerHistory()
        counts = dict(zip(SESSION_COUNTS.values(), self._counts, strict=False))
        if self._last_ts == _NO_EVENT:
            raise ValueError("a finished session has at least one event; none was fed")
        return ViewerHistory(
            base.sessions + 1, base.enrolls + counts["enroll"],
            base.claims + counts["bonus_claim"], base.cta_clicks + counts["cta_click"],
        )


def _layout(spec: FeatureSpec) -> tuple[FeatureSpec, list[int] | None, list[float], dict[str | None, float]]:
    """What every session of ``spec`` starts from, computed once per spec object (a decision builds one a call)."""
    names = spec.context_names
    unknown = [n for n in names if n not in _SLOTS]
    if unknown or len(spec.context) != len(_SLOTS):
        raise ValueError(
            f"feature spec context {names} does not match the online "
            f"runtime's features {_SLOTS}; update features.online with the spec"
        )
    perm = [_SLOTS.index(n) for n in names]
    defaults: list[float] = [spec[n].default for n in _SLOTS]
    hist = ViewerHistory().to_features()
    defaults[_HIST] = [hist[n] for n in HISTORY_COUNTS]
    if len(_LAYOUTS) >= 16:  # a process sees a handful of specs; never grow without bound
        _LAYOUTS.clear()
    layout: tuple[FeatureSpec, list[int] | None, list[float], dict[str | None, float]] = (
        spec, None if perm == list(range(len(_SLOTS))) else perm, defaults, {})
    _LAYOUTS[id(spec)] = layout
    return layout
