"""The simulated world that does not depend on viewers: creators, their catalog, drop plans.

Every random draw comes from a generator keyed by (seed, purpose, creator[, drop]), so
a creator's world does not depend on how many creators there are or in which order
they are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from features.schema import ts_to_us
from features.simulate.response import KIND_VOCAB, STYLE_VOCAB, STYLES
from features.spec import BONUS_KINDS

MINUTE_US = 60_000_000
DAY_US = 1440 * MINUTE_US
HORIZON_US = 70 * DAY_US  # drops of a creator spread over ten weeks (longer when too many)
MIN_SLOT_US = 75 * MINUTE_US  # a drop lasts at most 60 min: slots of 75 min never overlap
MAX_CREATORS = 256  # viewer ids give each creator 2**24 ids out of 2**32
VARIANTS_PER_CREATOR = len(STYLES)
BONUSES_PER_CREATOR = 20
POPUP_SHARE = 0.3

# niche -> (course title, topics used in bonus titles)
NICHES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ceramics": ("Wheel-Throwing Foundations", ("Glazing", "Trimming", "Centering", "Kiln Firing")),
    "coding": ("Python for Makers", ("Testing", "Automation", "Data Wrangling", "APIs")),
    "fitness": ("Kettlebell Strength in 8 Weeks", ("Mobility", "Swing", "Meal Prep", "Recovery")),
    "photography": ("Street Photography After Dark", ("Low Light", "Editing", "Framing", "Presets")),
    "cooking": ("Sourdough from Scratch", ("Starter Care", "Shaping", "Scoring", "Baking")),
    "music_production": ("Beat-Making in Ableton", ("Drums", "Mixing", "Sampling", "Mastering")),
    "watercolor": ("Loose Watercolor Landscapes", ("Skies", "Color Mixing", "Brushwork", "Paper")),
    "woodworking": ("Hand-Tool Joinery", ("Dovetails", "Sharpening", "Finishing", "Layout")),
    "calligraphy": ("Modern Brush Lettering", ("Strokes", "Flourishes", "Layouts", "Inks")),
    "language": ("Conversational Spanish Sprint", ("Verbs", "Listening", "Slang", "Travel")),
}
_FIRST = ("Mara", "Jonas", "Aiko", "Tomás", "Leila", "Priya", "Owen", "Sana", "Felix", "Noor",
          "Ines", "Kofi", "Yara", "Mateo", "Elif", "Ravi")
_LAST = ("Lindqvist", "Okafor", "Tanaka", "Moreau", "Haddad", "Iyer", "Brennan", "Castillo",
         "Novak", "Al-Hassan", "Weber", "Mensah")
_CURRENCIES = ("EUR", "USD", "GBP", "CAD", "AUD", "SEK")
_PRICES = (49.0, 79.0, 99.0, 129.0, 149.0, 199.0, 249.0, 299.0)
_VALUE_RANGE = {
    "workbook": (5, 25), "template_pack": (10, 40), "live_qa": (30, 80),
    "physical_kit": (15, 60), "discount_code": (10, 50), "community_pass": (20, 60),
}
_DEFAULT_STYLES = ("plain", "discount", "scarcity", "social_proof")


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A generator for one purpose of the world, independent of all others."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


# Purposes of the generators (first element of the key).
WORLD, SCHEDULE, DROP, CORRUPT, JSONL, VIEWER_IDS = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class Creator:
    """A creator's catalog entry and the logging policies' fixed preferences."""

    index: int
    creator_id: str
    name: str
    niche: str
    currency: str
    course_price: float
    course_title: str
    variants: tuple[dict[str, Any], ...]
    bonuses: tuple[dict[str, Any], ...]
    default_variant: int  # index into variants
    default_bonus_order: tuple[int, ...]  # indices into bonuses
    style_pref: npt.NDArray[np.float64]  # logging-policy taste per variant
    kind_pref: npt.NDArray[np.float64]  # logging-policy taste per bonus

    @property
    def variant_style(self) -> npt.NDArray[np.float64]:
        return np.asarray([STYLE_VOCAB.index(v["style"]) for v in self.variants], np.float64)

    @property
    def variant_discount(self) -> npt.NDArray[np.float64]:
        return np.asarray([v["discount"] for v in self.variants], np.float64)

    @property
    def variant_urgency(self) -> npt.NDArray[np.float64]:
        return np.asarray([v["urgency"] for v in self.variants], np.float64)

    @property
    def bonus_kind(self) -> npt.NDArray[np.float64]:
        return np.asarray([KIND_VOCAB.index(b["kind"]) for b in self.bonuses], np.float64)

    @property
    def bonus_value(self) -> npt.NDArray[np.float64]:
        return np.asarray([b["value"] for b in self.bonuses], np.float64)

    @property
    def bonus_requires_pickup(self) -> npt.NDArray[np.float64]:
        return np.asarray([b["requires_pickup"] for b in self.bonuses], np.float64)

    def to_catalog(self) -> dict[str, Any]:
        return {
            "creator_id": self.creator_id,
            "name": self.name,
            "niche": self.niche,
            "currency": self.currency,
            "course_price": self.course_price,
            "course_title": self.course_title,
            "variants": [dict(v) for v in self.variants],
            "bonuses": [dict(b) for b in self.bonuses],
            "default_variant": self.variants[self.default_variant]["variant"],
            "default_bonus_order": [self.bonuses[i]["bonus_id"] for i in self.default_bonus_order],
        }


def _variant_text(style: str, title: str, discount: float, rng: np.random.Generator) -> str:
    pct = round(discount * 100)
    texts = {
        "plain": f"Enroll in {title}",
        "scarcity": f"Only {rng.integers(5, 30)} seats left in {title}",
        "social_proof": f"{rng.integers(80, 900)} people joined {title} this month",
        "loyalty": f"Welcome back: a returning-viewer price on {title} ({pct}% off)",
        "bundle": f"{title} + all drop bonuses, {pct}% off as a bundle",
        "pickup": f"Enroll now and collect your starter kit at the pop-up: {title}",
        "discount": f"{pct}% off {title} during this drop",
        "countdown": f"Doors close in 10:00 — join {title} now",
    }
    return texts[style]


def _discount(style: str, rng: np.random.Generator) -> float:
    steps = {"discount": (4, 11), "bundle": (2, 6), "loyalty": (2, 4)}
    if style not in steps:
        return 0.0
    low, high = steps[style]
    return round(float(rng.integers(low, high)) * 0.05, 2)


def build_creator(seed: int, index: int, niche: str) -> Creator:
    """Creator ``index`` of the world: catalog entry, defaults and policy tastes."""
    rng = rng_for(seed, WORLD, index)
    creator_id = f"cr-{index + 1:02d}"
    title, topics = NICHES[niche]
    variants = []
    for style in STYLES:
        discount = _discount(style, rng)
        variants.append({
            "variant": f"{creator_id}-{style}",
            "style": style,
            "discount": discount,
            "urgency": 1 if style in ("scarcity", "countdown") else 0,
            "text": _variant_text(style, title, discount, rng),
        })
    # 20 bonuses over the 6 kinds: every kind at least 3 times, two kinds a 4th.
    kinds = [*BONUS_KINDS * 3, *rng.choice(BONUS_KINDS, size=2, replace=False).tolist()]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    bonuses = []
    for j, kind in enumerate(kinds):
        low, high = _VALUE_RANGE[kind]
        value = float(rng.integers(low, high + 1))
        topic = topics[int(rng.integers(len(topics)))]
        titles = {
            "workbook": f"{topic} Workbook",
            "template_pack": f"{topic} Template Pack",
            "live_qa": f"Live Q&A: {topic}",
            "physical_kit": f"{topic} Starter Kit (pop-up pickup)",
            "discount_code": f"{value:.0f} off your next course",
            "community_pass": f"Community Pass: {topic} circle",
        }
        bonuses.append({
            "bonus_id": f"{creator_id}-b{j + 1:02d}",
            "kind": kind,
            "value": value,
            "requires_pickup": 1 if kind == "physical_kit" else 0,
            "title": titles[kind],
        })
    default_style = _DEFAULT_STYLES[int(rng.integers(len(_DEFAULT_STYLES)))]
    order = sorted(range(len(bonuses)), key=lambda i: (-bonuses[i]["value"], i))
    return Creator(
        index=index,
        creator_id=creator_id,
        name=f"{_FIRST[int(rng.integers(len(_FIRST)))]} {_LAST[int(rng.integers(len(_LAST)))]}",
        niche=niche,
        currency=_CURRENCIES[int(rng.integers(len(_CURRENCIES)))],
        course_price=_PRICES[int(rng.integers(len(_PRICES)))],
        course_title=title,
        variants=tuple(variants),
        bonuses=tuple(bonuses),
        default_variant=STYLES.index(default_style),
        default_bonus_order=tuple(order),
        style_pref=rng.normal(0.0, 0.3, size=len(variants)),
        kind_pref=rng.normal(0.0, 0.5, size=len(bonuses)),
    )


def build_creators(seed: int, count: int) -> tuple[Creator, ...]:
    """``count`` creators; niches are dealt from a seeded shuffle, repeating past ten."""
    names = list(NICHES)
    order = rng_for(seed, WORLD, MAX_CREATORS).permutation(len(names))
    return tuple(build_creator(seed, i, names[order[i % len(names)]]) for i in range(count))


@dataclass(frozen=True)
class DropPlan:
    """One live drop: when, how long, on which channel."""

    creator: int  # index
    index: int  # the creator's n-th drop, from 0
    drop_id: str
    start_us: int
    length_us: int
    channel: str  # "stream" or "popup"


def plan_drops(seed: int, creator: Creator, drops: int, start: str) -> list[DropPlan]:
    """The creator's drops: one per slot of the horizon, 15–60 min, never overlapping."""
    rng = rng_for(seed, SCHEDULE, creator.index)
    t0 = ts_to_us(start)
    slot = max(HORIZON_US // drops, MIN_SLOT_US)
    plans = []
    for k in range(drops):
        if slot >= DAY_US:
            # An evening slot on one of the slot's days (the start time of day + 0..4 h).
            day = int(rng.integers(0, slot // DAY_US))
            offset = day * DAY_US + int(rng.integers(0, 49)) * 5 * MINUTE_US
        else:
            offset = int(rng.integers(0, (slot - MIN_SLOT_US) // MINUTE_US + 1)) * MINUTE_US
        length = int(rng.integers(15 * 60, 60 * 60 + 1)) * 1_000_000
        channel = "popup" if rng.random() < POPUP_SHARE else "stream"
        plans.append(DropPlan(
            creator=creator.index,
            index=k,
            drop_id=f"{creator.creator_id}-d{k + 1:04d}",
            start_us=t0 + k * slot + offset,
            length_us=length,
            channel=channel,
        ))
    return plans


class ViewerIds:
    """Raw viewer ids ``vw-<8 hex>``: a keyed bijection of (creator, n-th viewer), so ids
    are unique, look random and differ between seeds."""

    _MASK = 0xFFFFFFFF
    PER_CREATOR = 1 << 24

    def __init__(self, seed: int) -> None:
        state = np.random.SeedSequence(seed, spawn_key=(VIEWER_IDS,)).generate_state(3)
        self._k1, self._k2 = int(state[0]), int(state[1])
        self._m = int(state[2]) | 1  # odd: invertible mod 2**32

    def ids(self, creator: int, numbers: npt.NDArray[np.int64]) -> list[str]:
        x = (np.asarray(numbers, dtype=np.uint64) + np.uint64(creator * self.PER_CREATOR))
        mask = np.uint64(self._MASK)
        x = (x ^ np.uint64(self._k1)) & mask
        x = (x * np.uint64(self._m)) & mask
        x = x ^ (x >> np.uint64(15))
        x = (x * np.uint64(0x2C1B3C6D)) & mask
        x = x ^ (x >> np.uint64(12))
        x = (x + np.uint64(self._k2)) & mask
        return [f"vw-{v:08x}" for v in x.tolist()]
