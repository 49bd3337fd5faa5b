"""The model registry as creators use it: list versions, select a candidate, promote, roll back.

``select_candidate`` moves the alias ``candidate`` by a rule (one list of checks); the
alias ``champion`` is the creator's and moves only by ``promote`` and ``rollback``, which
are guarded and recorded, entry by entry, in a promotion log kept in MLflow.

    >>> select_candidate(client, "cta", SelectRule("auc", {"ece": ("max", 0.05)}))
    >>> promote(client, "cta", 3, floor=0.0, force_reason=None, who="ana")
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from features.errors import CarryonError
from features.schema import us_to_iso
from pipeline.tracking import TAG_FAMILY, TAG_GATES, ensure_experiment, model_kind

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "KEY_METRICS",
    "PROMOTIONS_EXPERIMENT",
    "Check",
    "MetricLimit",
    "PromotionEntry",
    "PromotionRefused",
    "RegistryError",
    "SelectResult",
    "SelectRule",
    "SelectionError",
    "VersionRow",
    "gates_not_failed",
    "gates_passed",
    "list_versions",
    "promote",
    "promotion_checks",
    "promotion_log",
    "rollback",
    "select_candidate",
]

CANDIDATE: Final = "candidate"  # set by select_candidate
CHAMPION: Final = "champion"  # the creator's choice: promote / rollback only
PROMOTIONS_EXPERIMENT: Final = "promotions"  # one run per registered model holds its promotion log
TAG_LOG_RUN: Final = "carryon.promotion_log_run"  # registered-model tag: run id of its promotion log
TAG_LOG_OF: Final = "carryon.registered_model"  # promotion-log run tag: the registered model it logs
LOG_PREFIX: Final = "promotion."  # run params promotion.000001, ...: params never change, so appends are safe
LOWER_BOUND: Final[Mapping[str, str]] = {"cta": "lift_dr_ci_low", "bonus": "ndcg_at_5_gain_ci_low"}
KEY_METRICS: Final[Mapping[str, tuple[str, ...]]] = {
    "cta": ("auc", "logloss", "ece", "policy_value_dr", "lift_dr", "lift_dr_ci_low", "lift_dr_ci_high"),
    "bonus": ("ndcg_at_3", "ndcg_at_5", "map", "ndcg_at_5_gain", "ndcg_at_5_gain_ci_low", "ndcg_at_5_gain_ci_high"),
}
MAX_REASON_CHARS: Final = 500
_APPEND_ATTEMPTS: Final = 20


class RegistryError(CarryonError):
    """A registered model, version or promotion log is missing or inconsistent."""


class SelectionError(RegistryError):
    """No version qualifies for ``candidate`` and there is no previous candidate to keep."""


class PromotionRefused(RegistryError):
    """A promotion or rollback was refused by its guard."""


# --- versions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRow:
    """One registered model version with what its run recorded."""

    name: str
    version: int
    run_id: str | None
    family: str | None
    created: str  # UTC ISO 8601
    aliases: tuple[str, ...]
    metrics: Mapping[str, float]
    gates: str | None  # "failed" if the run or the version says so, else the tag's value
    tags: Mapping[str, str] = field(default_factory=dict)  # carryon.* tags of run and version

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "run_id": self.run_id, "family": self.family,
            "created": self.created, "aliases": list(self.aliases), "gates": self.gates,
            "metrics": {k: _json_number(v) for k, v in sorted(self.metrics.items())},
            "tags": dict(sorted(self.tags.items())),
        }


def list_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every version of registered model ``name``, oldest first, with run metrics, tags and aliases."""
    aliases = _aliases(client, name)
    versions = _search_versions(client, name)
    return [_row(client, mv, aliases) for mv in sorted(versions, key=lambda mv: int(mv.version))]


# --- selection -----------------------------------------------------------------------------------

Check = Callable[[VersionRow], "str | None"]  # None: the version passes; else why it fails


def gates_not_failed(row: VersionRow) -> str | None:
    """A version whose run (or the version itself) is tagged ``carryon.gates=failed`` never qualifies."""
    return f"{TAG_GATES} = failed" if row.gates == "failed" else None


def gates_passed(row: VersionRow) -> str | None:
    """The export gates ran and passed (``carryon.gates=passed``); a version not yet exported fails."""
    if row.gates == "passed":
        return None
    if row.gates == "failed":  # exporting again will not help; the same words as gates_not_failed, shown once
        return f"{TAG_GATES} = failed"
    return f"{TAG_GATES} = {row.gates or 'not set'} (export it with `carryon export`)"


@dataclass(frozen=True)
class MetricLimit:
    """A bound on one run metric; a missing or non-finite value fails."""

    metric: str
    side: Literal["min", "max"]
    bound: float

    def __post_init__(self) -> None:
        if self.side not in ("min", "max"):
            raise ValueError(f"limit on {self.metric!r} must be 'min' or 'max', got {self.side!r}")
        if isinstance(self.bound, bool) or not isinstance(self.bound, int | float) or not math.isfinite(self.bound):
            raise ValueError(f"limit on {self.metric!r} must be a finite number, got {self.bound!r}")

    def __call__(self, row: VersionRow) -> str | None:
        value = row.metrics.get(self.metric)
        if value is None:
            return f"{self.metric} is missing"
        if not math.isfinite(value):
            return f"{self.metric} = {value} is not a finite number"
        if self.side == "min" and value < self.bound:
            return f"{self.metric} = {value:.6g} is below the minimum {self.bound:g}"
        if self.side == "max" and value > self.bound:
            return f"{self.metric} = {value:.6g} is above the maximum {self.bound:g}"
        return None


@dataclass(frozen=True)
class _Present:
    metric: str

    def __call__(self, row: VersionRow) -> str | None:
        value = row.metrics.get(self.metric)
        if value is None:
            return f"{self.metric} is missing"
        return None if math.isfinite(value) else f"{self.metric} = {value} is not a finite number"


@dataclass(frozen=True)
class SelectRule:
    """Which version becomes ``candidate``: the best ``metric`` among versions passing every check.

    ``limits`` maps a metric to ("min" or "max", bound); ``extra_checks`` is where later
    stages add theirs (export gates, device budgets) without changing the selection.
    """

    metric: str
    limits: Mapping[str, tuple[Literal["min", "max"], float]] = field(default_factory=dict)
    extra_checks: tuple[Check, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"SelectRule.metric must be a metric name, got {self.metric!r}")
        limits = [MetricLimit(metric, side, bound) for metric, (side, bound) in dict(self.limits).items()]
        object.__setattr__(self, "limits", MappingProxyType({lim.metric: (lim.side, lim.bound) for lim in limits}))

    def checks(self) -> tuple[Check, ...]:
        """Every check a version must pass, in the order their failures are reported."""
        limits = (MetricLimit(metric, side, bound) for metric, (side, bound) in self.limits.items())
        return (gates_not_failed, _Present(self.metric), *limits, *self.extra_checks)

    def failures(self, row: VersionRow) -> list[str]:
        """Why ``row`` does not qualify (empty: it qualifies), each reason once."""
        return list(dict.fromkeys(reason for check in self.checks() if (reason := check(row)) is not None))

    def describe(self) -> str:
        parts = [f"maximize {self.metric}", f"{TAG_GATES} != failed"]
        parts += [f"{m} {'>=' if side == 'min' else '<='} {bound:g}" for m, (side, bound) in self.limits.items()]
        parts += [f"{len(self.extra_checks)} more check(s)"] if self.extra_checks else []
        return ", ".join(parts)


@dataclass(frozen=True)
class SelectResult:
    """What ``select_candidate`` did: the version that holds ``candidate`` now, and why others did not."""

    name: str
    rule: str
    candidate: int
    previous: int | None
    changed: bool
    qualified: tuple[int, ...]
    rejected: Mapping[int, tuple[str, ...]]
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "rule": self.rule, "candidate": self.candidate, "previous": self.previous,
            "changed": self.changed, "qualified": list(self.qualified), "warning": self.warning,
            "rejected": {str(v): list(reasons) for v, reasons in sorted(self.rejected.items())},
        }


def select_candidate(client: MlflowClient, name: str, rule: SelectRule) -> SelectResult:
    """Set alias ``candidate`` on the best qualifying version; if none qualifies, keep the previous one and warn."""
    rows = list_versions(client, name)
    previous = _aliases(client, name).get(CANDIDATE)
    rejected = {row.version: tuple(reasons) for row in rows if (reasons := rule.failures(row))}
    qualified = [row for row in rows if row.version not in rejected]
    if qualified:
        best = max(qualified, key=lambda row: (row.metrics[rule.metric], row.version))
        if best.version != previous:
            client.set_registered_model_alias(name, CANDIDATE, str(best.version))
        return SelectResult(name, rule.describe(), best.version, previous, best.version != previous,
                            tuple(row.version for row in qualified), rejected)
    why = "; ".join(f"version {v}: {', '.join(reasons)}" for v, reasons in sorted(rejected.items()))
    if not rows:
        why = "it has no versions (train candidates first)"
    if previous is None:
        raise SelectionError(
            f"no version of registered model '{name}' qualifies as {CANDIDATE} under the rule ({rule.describe()}) "
            f"and there is no previous {CANDIDATE} to keep: {why}"
        )
    warning = (
        f"no version of registered model '{name}' qualifies under the rule ({rule.describe()}): {why}; "
        f"keeping the previous {CANDIDATE}, version {previous}"
    )
    return SelectResult(name, rule.describe(), previous, previous, False, (), rejected, warning)


# --- promotion -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionEntry:
    """One line of the promotion log: ``champion`` moved from one version to another."""

    seq: int
    action: Literal["promote", "rollback"]
    name: str
    from_version: int | None
    to_version: int
    who: str
    when: str  # UTC ISO 8601
    reason: str | None
    forced: bool
    overridden: tuple[str, ...] = ()  # guard failures a forced promotion went past
    metrics: Mapping[str, float] = field(default_factory=dict)  # of to_version, at the time

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "action": self.action, "name": self.name, "from_version": self.from_version,
            "to_version": self.to_version, "who": self.who, "when": self.when, "reason": self.reason,
            "forced": self.forced, "overridden": list(self.overridden),
            "metrics": {k: _json_number(v) for k, v in sorted(self.metrics.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromotionEntry:
        action = data["action"]
        if action not in ("promote", "rollback"):
            raise ValueError(f"action must be promote or rollback, got {action!r}")
        from_version = data["from_version"]
        return cls(
            seq=int(data["seq"]), action=action, name=str(data["name"]),
            from_version=None if from_version is None else int(from_version), to_version=int(data["to_version"]),
            who=str(data["who"]), when=str(data["when"]),
            reason=None if data.get("reason") is None else str(data["reason"]), forced=bool(data["forced"]),
            overridden=tuple(str(x) for x in data.get("overridden", ())),
            metrics={str(k): float("nan") if v is None else float(v) for k, v in data.get("metrics", {}).items()},
        )


def promotion_checks(name: str, floor: float) -> tuple[Check, ...]:
    """The promotion guard: gates passed, and the lower bound of the lift (rankers: NDCG@5 gain) >= floor."""
    return (gates_not_failed, MetricLimit(LOWER_BOUND[model_kind(name)], "min", floor))


def promote(
    client: MlflowClient, name: str, version: int, *, floor: float, force_reason: str | None, who: str
) -> PromotionEntry:
    """Point ``champion`` at ``version`` if it passes the guard (or ``force_reason`` says why not); log it."""
    if force_reason is not None and not (0 < len(force_reason.strip()) <= MAX_REASON_CHARS):
        raise ValueError(
            f"a forced promotion needs a reason of 1 to {MAX_REASON_CHARS} characters, got {force_reason!r}"
        )
    row = _version_row(client, name, version)
    failures = [reason for check in promotion_checks(name, floor) if (reason := check(row)) is not None]
    if failures and force_reason is None:
        raise PromotionRefused(
            f"refusing to promote {name} version {version} to {CHAMPION}: {'; '.join(failures)} "
            f"(promotion floor {floor:g}); pass --force REASON to promote it anyway"
        )

    def entry(seq: int, log: Sequence[PromotionEntry]) -> PromotionEntry:
        current = _aliases(client, name).get(CHAMPION)
        if current == version:
            raise PromotionRefused(f"{name} version {version} is already the {CHAMPION}; nothing to promote")
        return PromotionEntry(
            seq, "promote", name, current, version, who, _now(), force_reason.strip() if force_reason else None,
            forced=bool(failures), overridden=tuple(failures), metrics=_key_metrics(row),
        )

    return _record(client, name, entry)


def rollback(client: MlflowClient, name: str, who: str) -> PromotionEntry:
    """Point ``champion`` back at the version it had before the latest promotion still in effect; log it."""

    def entry(seq: int, log: Sequence[PromotionEntry]) -> PromotionEntry:
        history = _champion_history(log)
        if len(history) < 2:
            raise PromotionRefused(
                f"nothing to roll back to: the promotion log of {name} holds no earlier {CHAMPION} "
                f"({len(log)} entries); promote a version with: carryon models promote {name} VERSION"
            )
        withdrawn, target = history[-1], history[-2]
        current = _aliases(client, name).get(CHAMPION)
        if current == target:
            raise PromotionRefused(f"{name} version {target} is already the {CHAMPION}; nothing to roll back")
        row = _version_row(client, name, target)
        return PromotionEntry(
            seq, "rollback", name, current, target, who, _now(), f"rollback: version {withdrawn} withdrawn",
            forced=False, metrics=_key_metrics(row),
        )

    return _record(client, name, entry)


def promotion_log(client: MlflowClient, name: str) -> list[PromotionEntry]:
    """Every promotion and rollback of ``name``, oldest first (empty if there was none)."""
    _registered(client, name)
    run_id = _find_log_run(client, name)
    return [] if run_id is None else _read_log(client, run_id)


def _champion_history(log: Sequence[PromotionEntry]) -> list[int]:
    """The champions in effect, oldest first: promotions push, rollbacks pop."""
    stack: list[int] = []
    for item in log:
        if item.action == "promote":
            if not stack and item.from_version is not None:
                stack.append(item.from_version)
            stack.append(item.to_version)
        else:
            if stack:
                stack.pop()
            if not stack or stack[-1] != item.to_version:
                stack.append(item.to_version)
    return stack


def _record(
    client: MlflowClient, name: str, make: Callable[[int, Sequence[PromotionEntry]], PromotionEntry]
) -> PromotionEntry:
    """Append an entry (compare-and-set on a new param key, retried on a concurrent append), then move the alias."""
    from mlflow.exceptions import MlflowException

    _registered(client, name)
    run_id = _log_run(client, name)
    for _ in range(_APPEND_ATTEMPTS):
        log = _read_log(client, run_id)
        seq = (log[-1].seq if log else 0) + 1
        new = make(seq, log)
        try:
            client.log_param(run_id, f"{LOG_PREFIX}{seq:06d}", json.dumps(new.to_dict(), sort_keys=True))
        except MlflowException as e:
            if "already logged" not in e.message:
                raise
            continue  # another process appended entry seq first: read again and rebuild
        client.set_registered_model_alias(name, CHAMPION, str(new.to_version))
        return new
    raise RegistryError(f"could not append to the promotion log of {name}: {_APPEND_ATTEMPTS} concurrent appends won")


def _log_run(client: MlflowClient, name: str) -> str:
    """The run holding the promotion log of ``name``, created on first use (racing creators agree on the oldest)."""
    found = _find_log_run(client, name)
    if found is not None:
        return found
    experiment_id = ensure_experiment(client, PROMOTIONS_EXPERIMENT)
    mine = client.create_run(experiment_id, run_name=f"promotion-log-{name}", tags={TAG_LOG_OF: name})
    client.set_terminated(mine.info.run_id, "FINISHED")
    chosen = _search_log_runs(client, name)[0]
    if chosen != mine.info.run_id:
        client.delete_run(mine.info.run_id)
    client.set_registered_model_tag(name, TAG_LOG_RUN, chosen)
    return chosen


def _find_log_run(client: MlflowClient, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    pointer = _registered(client, name).tags.get(TAG_LOG_RUN)
    if pointer:
        try:
            run = client.get_run(pointer)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        else:
            if run.info.lifecycle_stage == "active" and run.data.tags.get(TAG_LOG_OF) == name:
                return str(pointer)
    runs = _search_log_runs(client, name)
    return runs[0] if runs else None


def _search_log_runs(client: MlflowClient, name: str) -> list[str]:
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_LOG_OF}` = '{_quoted(name)}'", max_results=1000
    )
    return [run.info.run_id for run in sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))]


def _read_log(client: MlflowClient, run_id: str) -> list[PromotionEntry]:
    params = client.get_run(run_id).data.params
    entries = []
    for key in sorted(k for k in params if k.startswith(LOG_PREFIX)):
        try:
            entries.append(PromotionEntry.from_dict(json.loads(params[key])))
        except (ValueError, KeyError, TypeError) as e:
            raise RegistryError(
                f"promotion log run {run_id}: param {key} is not a valid entry ({e}); "
                "the log is append-only: restore it from a backup of the tracking store"
            ) from None
    return entries


# --- MLflow access -------------------------------------------------------------------------------


def _registered(client: MlflowClient, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise RegistryError(
            f"no registered model named {name!r} in the tracking store (registered: {', '.join(known) or 'none'}); "
            "train candidates first or check MLFLOW_TRACKING_URI"
        ) from None


def _aliases(client: MlflowClient, name: str) -> dict[str, int]:
    return {alias: int(version) for alias, version in _registered(client, name).aliases.items()}


def _search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    _registered(client, name)
    found: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = '{_quoted(name)}'", max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _version_row(client: MlflowClient, name: str, version: int) -> VersionRow:
    from mlflow.exceptions import MlflowException

    aliases = _aliases(client, name)
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        versions = sorted(int(v.version) for v in _search_versions(client, name))
        raise RegistryError(
            f"registered model {name} has no version {version} (versions: {', '.join(map(str, versions)) or 'none'})"
        ) from None
    return _row(client, mv, aliases)


def _row(client: MlflowClient, mv: ModelVersion, aliases: Mapping[str, int]) -> VersionRow:
    from mlflow.exceptions import MlflowException

    version = int(mv.version)
    metrics: dict[str, float] = {}
    run_tags: dict[str, str] = {}
    params: dict[str, str] = {}
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        else:
            metrics = {k: float(v) for k, v in run.data.metrics.items()}
            run_tags, params = dict(run.data.tags), dict(run.data.params)
    version_tags = dict(mv.tags or {})
    tags = {k: v for k, v in {**run_tags, **version_tags}.items() if k.startswith("carryon.")}
    gate_values = [t.get(TAG_GATES) for t in (version_tags, run_tags) if t.get(TAG_GATES)]
    gates = "failed" if "failed" in gate_values else (gate_values[0] if gate_values else None)
    return VersionRow(
        name=str(mv.name), version=version, run_id=mv.run_id or None,
        family=tags.get(TAG_FAMILY) or params.get("family") or None,
        created=us_to_iso(int(mv.creation_timestamp) * 1000),
        aliases=tuple(sorted(alias for alias, v in aliases.items() if v == version)),
        metrics=metrics, gates=gates, tags=tags,
    )


def _key_metrics(row: VersionRow) -> dict[str, float]:
    keys = KEY_METRICS[model_kind(row.name)]
    return {k: row.metrics[k] for k in keys if k in row.metrics}


def _quoted(text: str) -> str:
    if "'" in text or "\\" in text:
        raise ValueError(f"a registered model name cannot contain quotes or backslashes, got {text!r}")
    return text


def _now() -> str:
    return us_to_iso(time.time_ns() // 1000)


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None
