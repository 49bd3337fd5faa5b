"""params.yaml, loaded once into the typed, frozen settings of each stage.

Every stage takes its dataclass as an argument; nothing else reads params.yaml.

    >>> params = load_params("params.yaml")
    >>> params.simulate.seed
    20261127
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from features.config import ConsentConfig, FeatureConfig, IngestConfig, SimulateConfig
from features.errors import ConfigError
from features.schema import ts_to_us


class ParamsError(ConfigError):
    """params.yaml is missing, malformed, or a value is out of range."""


@dataclass(frozen=True)
class Params:
    simulate: SimulateConfig
    ingest: IngestConfig
    consent: ConsentConfig
    features: FeatureConfig


class _Section:
    """Reads one section of params.yaml, naming file, key and fix in every error."""

    def __init__(self, source: str, name: str, raw: object) -> None:
        if not isinstance(raw, dict):
            raise ParamsError(f"{source}: section '{name}' must be a mapping, got {raw!r}")
        self.source, self.name, self.raw = source, name, raw

    def _get(self, key: str) -> Any:
        if key not in self.raw:
            raise ParamsError(f"{self.source}: {self.name}.{key} is missing; add it")
        return self.raw[key]

    def _fail(self, key: str, expected: str, value: object) -> ParamsError:
        return ParamsError(f"{self.source}: {self.name}.{key} must be {expected}, got {value!r}")

    def int(self, key: str, minimum: int) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"an integer >= {minimum}", value)
        return value

    def float(self, key: str, low: float, high: float) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self._fail(key, f"a number in [{low}, {high}]", value)
        return float(value)

    def ts(self, key: str, optional: bool = False, words: tuple[str, ...] = ()) -> str | None:
        value = self._get(key)
        if value is None and optional:
            return None
        if isinstance(value, str) and value in words:
            return value
        try:
            ts_to_us(value)
        except (TypeError, ValueError):
            allowed = " or ".join(repr(w) for w in words) + " or " if words else ""
            raise self._fail(key, f"{allowed}an ISO 8601 time with UTC offset", value) from None
        return str(value)

    def path(self, key: str) -> str | None:
        value = self._get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self._fail(key, "a file path or null", value)
        return value


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate params.yaml; raise :class:`ParamsError` naming the bad key."""
    path = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ParamsError(f"{source}: cannot read params ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{source}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: must be a mapping of sections, got {type(raw).__name__}")

    def section(name: str) -> _Section:
        if name not in raw:
            raise ParamsError(f"{source}: section '{name}' is missing; add it")
        return _Section(source, name, raw[name])

    sim, ing, con, fea = section("simulate"), section("ingest"), section("consent"), section("features")
    return Params(
        simulate=SimulateConfig(
            seed=sim.int("seed", 0),
            creators=sim.int("creators", 1),
            drops_per_creator=sim.int("drops_per_creator", 1),
            viewers_per_drop=sim.int("viewers_per_drop", 1),
            scale=sim.float("scale", 0.001, 1000.0),
            start=str(sim.ts("start")),
            corrupt_fraction=sim.float("corrupt_fraction", 0.0, 0.5),
        ),
        ingest=IngestConfig(
            partitions=ing.int("partitions", 1),
            pseudonym_key_file=ing.path("pseudonym_key_file"),
            min_ts=str(ing.ts("min_ts")),
            max_ts=ing.ts("max_ts", optional=True),
            max_clock_skew_s=ing.int("max_clock_skew_s", 0),
            max_record_bytes=ing.int("max_record_bytes", 256),
        ),
        consent=ConsentConfig(snapshot=str(con.ts("snapshot", words=("latest",)))),
        features=FeatureConfig(label_window_s=fea.float("label_window_s", 1.0, 86_400.0)),
    )
