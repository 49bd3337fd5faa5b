"""The current bundle of an edge home, followed while serving.

``carryon edge pull`` switches ``current/<creator>`` atomically; a server that loaded the
bundle at start would keep deciding with the old one (or, after a kill-switch release, keep
personalizing) until restarted. ``LiveRuntime`` re-reads the link every ``interval_s`` and,
when it points elsewhere, loads the new bundle off the event loop and swaps it in between
two decisions. A bundle that fails to load is reported (``status()``, the log) and the last
good one keeps deciding; the next change of the link is tried again.

    >>> live = LiveRuntime(home, "cr-01", EdgeRuntime.load(bundle_for(home, "cr-01")))
    >>> asyncio.create_task(live.watch())   # inside the server's event loop
    >>> live.runtime.decide(session)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.runtime import EdgeRuntime, bundle_for
from features.errors import CarryonError

__all__ = ["LiveRuntime"]

_log = logging.getLogger("carryon.edge.serve")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LiveRuntime:
    """The runtime of ``current/<creator>`` in ``home``, replaced when a pull installs another bundle."""

    def __init__(self, home: Path, creator: str, runtime: EdgeRuntime, *, interval_s: float = 2.0,
                 seed: int | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.home, self.creator, self.interval_s = home, creator, interval_s
        self.runtime = runtime
        self.seed = seed
        self._failed: Path | None = None  # the target that last failed to load: reported once, retried on change
        self.checked_at: str | None = None
        self.error: str | None = None
        self.switches = 0

    def _target(self) -> Path | None:
        try:
            return bundle_for(self.home, self.creator)
        except CarryonError as e:
            self._fail(None, str(e))
            return None

    def _fail(self, target: Path | None, message: str) -> None:
        if self.error != message:
            _log.error("still serving %s bundle v%s: %s", self.runtime.creator_id, self.runtime.bundle_version,
                       message)
        self.error, self._failed = message, target

    def _swap(self, new: EdgeRuntime) -> None:
        old = self.runtime
        self.runtime, self.error, self._failed = new, None, None
        self.switches += 1
        _log.warning("switched %s from bundle v%s to v%s (%s)", new.creator_id, old.bundle_version,
                     new.bundle_version, "kill switch: defaults only" if not new.personalization else "personalized")

    def _pending(self) -> Path | None:
        """The link's target when it is a bundle not yet tried, else None."""
        self.checked_at = _now()
        target = self._target()
        if target is None or target == self.runtime.root or target == self._failed:
            return None
        return target

    def _loaded(self, target: Path, loaded: EdgeRuntime | BaseException) -> bool:
        if isinstance(loaded, BaseException):
            self._fail(target, f"{target.name}: {loaded}")
            return False
        if loaded.creator_id != self.runtime.creator_id:
            self._fail(target, f"{target} holds creator {loaded.creator_id!r}, not {self.runtime.creator_id!r}")
            return False
        self._swap(loaded)
        return True

    def _try_load(self, target: Path) -> EdgeRuntime | BaseException:
        try:
            return EdgeRuntime.load(target, seed=self.seed)
        except Exception as e:  # BundleLoadError, or an untyped onnxruntime error: reported, the good bundle stays
            return e

    def check(self) -> bool:
        """Follow the link now, loading in this thread; True when another bundle was swapped in."""
        target = self._pending()
        return target is not None and self._loaded(target, self._try_load(target))

    async def watch(self) -> None:
        """Check every ``interval_s`` until cancelled; loading runs in a worker thread, the swap on the loop."""
        while True:
            await asyncio.sleep(self.interval_s)
            target = self._pending()
            if target is not None:
                self._loaded(target, await asyncio.to_thread(self._try_load, target))

    def status(self) -> dict[str, Any]:
        """What ``/health`` adds: the link followed, when it was last read, switches so far, the last failure."""
        return {"follows": f"current/{self.creator}", "every_s": self.interval_s, "checked_at": self.checked_at,
                "switches": self.switches, "error": self.error}
