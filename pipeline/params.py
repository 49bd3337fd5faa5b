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
from features.policy import ExplorationSettings
from features.schema import ts_to_us
from models.config import BONUS_FAMILIES, CTA_FAMILIES, EvalConfig, LightGBMConfig, MLPConfig, TrainConfig


class ParamsError(ConfigError):
    """params.yaml is missing, malformed, or a value is out of range."""


@dataclass(frozen=True)
class SelectConfig:
    """The rule that picks the `candidate` version of one registered model."""

    metric: str  # maximized
    limits: tuple[tuple[str, str, float], ...]  # (metric, "min" | "max", bound)
    require_export: bool  # only versions whose export gates passed qualify


@dataclass(frozen=True)
class PolicyConfig:
    exploration: ExplorationSettings
    creator_caps: dict[str, float]  # creator_id -> a lower cap on exploration


@dataclass(frozen=True)
class ModelsConfig:
    promotion_floor_cta: float  # lower bound of lift_dr that `models promote` requires
    promotion_floor_bonus: float  # lower bound of ndcg_at_5_gain


@dataclass(frozen=True)
class DeviceProfile:
    """A class of target device and the budgets a model must meet on it."""

    name: str
    p99_us: float  # decision latency for one real call (K variants or N bonuses)
    session_create_ms: float  # cold start: loading the model into a session
    peak_rss_mib: float  # peak RSS of the benchmark process holding one model


@dataclass(frozen=True)
class BenchConfig:
    """How the benchmark job measures, and which budgets selection respects."""

    threads: int
    warmup: int
    min_iterations: int
    time_budget_s: float  # per model: stop measuring after this, whatever the count
    target_profile: str  # `select` refuses a version over this profile's budget on a measured device
    profiles: dict[str, DeviceProfile]


@dataclass(frozen=True)
class BundleConfig:
    """What `carryon bundle build` packs and signs."""

    creator: str | None  # creator the bundle is for; None = the first creator of the catalog
    expires_days: float  # a bundle past its expiry is not installed
    signing_key_file: str | None  # creator's private key; env CARRYON_SIGNING_KEY wins; None = local dev key
    golden_cases: int  # synthetic golden vectors per model


@dataclass(frozen=True)
class PublishConfig:
    """The TUF repository `carryon publish` writes (outside DVC outputs)."""

    repository: str  # directory served by any static HTTP server
    keys_dir: str  # repository role keys, kept apart from creator keys
    root_expires_days: float
    targets_expires_days: float
    snapshot_expires_days: float
    timestamp_expires_hours: float  # `publish --refresh` must run more often than this


@dataclass(frozen=True)
class ScaleConfig:
    """Where ingest, features and LightGBM training run: this process, or a Dask cluster."""

    engine: str  # "local" or "dask"
    scheduler: str | None  # a dask.distributed scheduler address; None = a LocalCluster started for the run
    workers: int  # LocalCluster worker processes
    threads_per_worker: int


@dataclass(frozen=True)
class Params:
    simulate: SimulateConfig
    ingest: IngestConfig
    consent: ConsentConfig
    features: FeatureConfig
    train: TrainConfig
    policy: PolicyConfig
    evaluation: EvalConfig
    select: dict[str, SelectConfig]  # registered model name -> rule
    models: ModelsConfig
    bench: BenchConfig
    bundle: BundleConfig
    publish: PublishConfig
    scale: ScaleConfig


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

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self._get(key)
        if value not in choices:
            raise self._fail(key, "one of " + ", ".join(choices), value)
        return value  # type: ignore[no-any-return]

    def families(self, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not value or any(v not in allowed for v in value):
            raise self._fail(key, f"a non-empty list drawn from {list(allowed)}", value)
        return tuple(value)

    def sub(self, key: str) -> _Section:
        return _Section(self.source, f"{self.name}.{key}", self._get(key))

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, "a mapping", value)
        return value

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
    tra, pol, eva, sel, mod = (section(n) for n in ("train", "policy", "evaluation", "select", "models"))
    ben, bun, pub, sca = section("bench"), section("bundle"), section("publish"), section("scale")
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
        train=_train(tra),
        policy=_policy(pol),
        evaluation=EvalConfig(
            n_bootstrap=eva.int("n_bootstrap", 50),
            alpha=eva.float("alpha", 0.001, 0.5),
            ece_bins=eva.int("ece_bins", 2),
        ),
        select={name: _select(sel.sub(name)) for name in ("cta", "bonus-ranker")},
        models=ModelsConfig(
            promotion_floor_cta=mod.float("promotion_floor_cta", -1.0, 1.0),
            promotion_floor_bonus=mod.float("promotion_floor_bonus", -1.0, 1.0),
        ),
        bench=_bench(ben),
        bundle=BundleConfig(
            creator=bun.path("creator"),
            expires_days=bun.float("expires_days", 0.01, 3650.0),
            signing_key_file=bun.path("signing_key_file"),
            golden_cases=bun.int("golden_cases", 1),
        ),
        publish=PublishConfig(
            repository=str(pub.path("repository") or ""),
            keys_dir=str(pub.path("keys_dir") or ""),
            root_expires_days=pub.float("root_expires_days", 1.0, 3650.0),
            targets_expires_days=pub.float("targets_expires_days", 0.01, 3650.0),
            snapshot_expires_days=pub.float("snapshot_expires_days", 0.01, 3650.0),
            timestamp_expires_hours=pub.float("timestamp_expires_hours", 0.01, 8760.0),
        ),
        scale=ScaleConfig(
            engine=sca.choice("engine", ("local", "dask")),
            scheduler=sca.path("scheduler"),
            workers=sca.int("workers", 1),
            threads_per_worker=sca.int("threads_per_worker", 1),
        ),
    )


def _bench(ben: _Section) -> BenchConfig:
    profiles_raw = ben.mapping("profiles")
    if not profiles_raw:
        raise ben._fail("profiles", "a non-empty mapping of profile name -> budgets", profiles_raw)
    profiles = {}
    for name in profiles_raw:
        sub = ben.sub("profiles").sub(str(name))
        profiles[str(name)] = DeviceProfile(
            name=str(name),
            p99_us=sub.float("p99_us", 1.0, 1e9),
            session_create_ms=sub.float("session_create_ms", 0.01, 1e7),
            peak_rss_mib=sub.float("peak_rss_mib", 1.0, 1e6),
        )
    target = ben.choice("target_profile", tuple(profiles))
    return BenchConfig(
        threads=ben.int("threads", 1),
        warmup=ben.int("warmup", 0),
        min_iterations=ben.int("min_iterations", 10),
        time_budget_s=ben.float("time_budget_s", 0.1, 3600.0),
        target_profile=target,
        profiles=profiles,
    )


def _train(tra: _Section) -> TrainConfig:
    lgb, mlp = tra.sub("lightgbm"), tra.sub("mlp")
    hidden = mlp._get("hidden")
    if not isinstance(hidden, list) or not hidden or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise mlp._fail("hidden", "a non-empty list of positive integers", hidden)
    return TrainConfig(
        seed=tra.int("seed", 0),
        test_fraction=tra.float("test_fraction", 0.01, 0.9),
        cta_families=tra.families("cta_families", CTA_FAMILIES),
        bonus_families=tra.families("bonus_families", BONUS_FAMILIES),
        logreg_c=tra.float("logreg_c", 1e-6, 1e6),
        lightgbm=LightGBMConfig(
            n_estimators=lgb.int("n_estimators", 1),
            early_stopping_rounds=lgb.int("early_stopping_rounds", 0),
            validation_fraction=lgb.float("validation_fraction", 0.01, 0.9),
            learning_rate=lgb.float("learning_rate", 1e-4, 1.0),
            num_leaves=lgb.int("num_leaves", 2),
            min_child_samples=lgb.int("min_child_samples", 1),
        ),
        mlp=MLPConfig(hidden=tuple(hidden), alpha=mlp.float("alpha", 0.0, 10.0), max_iter=mlp.int("max_iter", 1)),
    )


def _policy(pol: _Section) -> PolicyConfig:
    try:
        exploration = ExplorationSettings(
            kind=pol.choice("kind", ("epsilon_greedy", "softmax")),
            epsilon=pol.float("epsilon", 0.0, 1.0),
            temperature=pol.float("temperature", 1e-6, 1e6),
            max_exploration=pol.float("max_exploration", 0.0, 1.0),
        )
    except ValueError as e:
        raise ParamsError(f"{pol.source}: policy: {e}") from e
    caps = pol.mapping("creator_caps")
    for creator, cap in caps.items():
        if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 <= cap <= 1:
            raise pol._fail(f"creator_caps.{creator}", "a number in [0, 1]", cap)
    return PolicyConfig(exploration, {str(k): float(v) for k, v in caps.items()})


def _select(sel: _Section) -> SelectConfig:
    metric = sel._get("metric")
    if not isinstance(metric, str) or not metric:
        raise sel._fail("metric", "a metric name such as auc or ndcg_at_5", metric)
    limits = []
    for name, rule in sel.mapping("limits").items():
        if (not isinstance(rule, list) or len(rule) != 2 or rule[0] not in ("min", "max")
                or isinstance(rule[1], bool) or not isinstance(rule[1], int | float)):
            raise sel._fail(f"limits.{name}", "[min, number] or [max, number]", rule)
        limits.append((str(name), str(rule[0]), float(rule[1])))
    require = sel._get("require_export")
    if not isinstance(require, bool):
        raise sel._fail("require_export", "true or false", require)
    return SelectConfig(metric, tuple(limits), require)
