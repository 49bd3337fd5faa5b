"""A small simulated world run through the real data stages, for model and pipeline tests."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from features.batch import build_features
from features.ingest import PseudonymKey, ingest
from features.simulate import simulate
from pipeline.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = PseudonymKey(bytes(range(32)), "env")


@dataclass(frozen=True)
class World:
    root: Path
    params: Params

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def clean(self) -> Path:
        return self.root / "clean"

    @property
    def features(self) -> Path:
        return self.root / "features"


def small_params(creators: int = 3, drops: int = 5, viewers: int = 150, seed: int = 11) -> Params:
    params = load_params(ROOT / "params.yaml")
    return replace(
        params,
        simulate=replace(params.simulate, creators=creators, drops_per_creator=drops, viewers_per_drop=viewers,
                         seed=seed, corrupt_fraction=0.0),
    )


def run_data_stages(root: Path, params: Params, events: Path | None = None) -> World:
    """simulate (unless ``events`` is given) -> ingest -> features under ``root``."""
    world = World(root, params)
    if events is None:
        simulate(params.simulate, world.raw)
        events = world.raw / "events.parquet"
    ingest([events], world.clean, world.raw / "quarantine.jsonl", params.ingest, params.consent, key=TEST_KEY)
    build_features(world.clean, world.raw / "catalog.json", world.features, params.features)
    return world
