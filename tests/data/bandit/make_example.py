"""Write ``example.csv``: a small logged-bandit table in the documented format.

Deterministic (a seeded ``random.Random``; standard library only), so the committed
file can be checked against a fresh run: ``python tests/data/bandit/make_example.py``.
The logging policy was uniform over four CTA variants (propensity 0.25), the reward is
a click (0/1) whose probability depends on the variant and the context, and a few rows
carry no consent. Session keys are made-up user ids: the import must hash them.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

SEED = 20260803
SESSIONS = 120
ACTIONS = ("plain", "scarcity", "social_proof", "discount")
DEVICES = ("phone", "desktop", "tv")
COLUMNS = ("timestamp", "session_key", "ctx_device", "ctx_minute_in_drop", "ctx_returning", "action",
           "position", "reward", "propensity", "consented", "campaign")
# Click probability per variant; returning viewers respond to scarcity, phones to discounts.
BASE = {"plain": 0.12, "scarcity": 0.18, "social_proof": 0.22, "discount": 0.28}


def click_probability(action: str, device: str, returning: int) -> float:
    """The true click probability of ``action`` in this context (the tests use it as ground truth)."""
    p = BASE[action]
    if returning and action == "scarcity":
        p += 0.2
    if device == "phone" and action == "discount":
        p += 0.1
    return p


def rows() -> list[list[str]]:
    rng = random.Random(SEED)
    start = datetime(2026, 8, 3, 17, 0, tzinfo=UTC)
    out: list[list[str]] = []
    for s in range(SESSIONS):
        user = f"user-{rng.randrange(10_000):04d}-{s:03d}"
        device = rng.choice(DEVICES)
        returning = int(rng.random() < 0.4)
        consented = "false" if rng.random() < 0.05 else rng.choice(("true", "true", "yes", "1"))
        offset = timezone(timedelta(hours=2)) if s % 7 == 0 else UTC  # some producers log local time
        began = start + timedelta(hours=6 * s, minutes=rng.randrange(60))
        minute = float(rng.randrange(1, 30))
        for _ in range(rng.randint(2, 5)):
            minute += rng.randrange(1, 8)
            action = rng.choice(ACTIONS)
            reward = int(rng.random() < click_probability(action, device, returning))
            at = (began + timedelta(minutes=minute, seconds=rng.randrange(60))).astimezone(offset)
            shown_minute = "" if rng.random() < 0.05 else f"{minute:g}"  # a few missing values
            out.append([at.isoformat(), user, device, shown_minute, str(returning), action, "1", str(reward),
                        "0.25", consented, "summer"])
    return out


def render() -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows())
    return buffer.getvalue()


if __name__ == "__main__":
    target = Path(__file__).with_name("example.csv")
    target.write_text(render(), encoding="utf-8", newline="")
    sys.stdout.write(f"wrote {target.name}\n")
