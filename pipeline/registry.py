"""The model registry as creators use it: list versions and select a candidate.

``select_candidate`` moves the alias ``candidate`` by a rule (one list of checks); the
alias ``champion`` is the creator's and moves only by ``pipeline.promotion``'s guarded,
logged ``promote`` and ``rollback``, which read versions through ``version_row`` here.

    >>> select_candidate(client, "cta", SelectRule("auc", {"ece": ("max", 0.05)}))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from features.errors import CarryonError
from features.schema import us_to_iso
from pipeline.tracking import TAG_FAMILY, TAG_GATES

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "KEY_METRICS",
    "Check",
    "MetricLimit",
    "RegistryError",
    "SelectResult",
    "SelectRule",
    "SelectionError",
    "VersionRow",
    "alias_versions",
    "gates_not_failed",
    "gates_passed",
    "json_number",
    "list_versions",
    "quoted",
    "registered",
    "select_candidate",
    "version_row",
]

CANDIDATE: Final = "candidate"  # set by select_candidate
CHAMPION: Final = "champion"  # the creator's choice: promote / rollback only
KEY_METRICS: Final[Mapping[str, tuple[str, ...]]] = {
    "cta": ("auc", "logloss", "ece", "policy_value_dr", "lift_dr", "lift_dr_ci_low", "lift_dr_ci_high"),
    "bonus": ("ndcg_at_3", "ndcg_at_5", "map", "ndcg_at_5_gain", "ndcg_at_5_gain_ci_low", "ndcg_at_5_gain_ci_high"),
}


class RegistryError(CarryonError):
    """A registered model, version or promotion log is missing or inconsistent."""


class SelectionError(RegistryError):
    """No version qualifies for ``candidate`` and there is no previous candidate to keep."""


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
            "metrics": {k: json_number(v) for k, v in sorted(self.metrics.items())},
            "tags": dict(sorted(self.tags.items())),
        }


def list_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every version of registered model ``name``, oldest first, with run metrics, tags and aliases."""
    aliases = alias_versions(client, name)
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
    previous = alias_versions(client, name).get(CANDIDATE)
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


# --- MLflow access (promotion reads versions through these too) ---------------------------------


def registered(client: MlflowClient, name: str) -> Any:
    """The registered model ``name``; a ``RegistryError`` naming the known ones if there is none."""
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


def alias_versions(client: MlflowClient, name: str) -> dict[str, int]:
    """Alias -> version of registered model ``name``."""
    return {alias: int(version) for alias, version in registered(client, name).aliases.items()}


def _search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    registered(client, name)
    found: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = '{quoted(name)}'", max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def version_row(client: MlflowClient, name: str, version: int) -> VersionRow:
    """One version as ``list_versions`` shows it; a ``RegistryError`` listing the versions if it is missing."""
    from mlflow.exceptions import MlflowException

    aliases = alias_versions(client, name)
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


def quoted(text: str) -> str:
    """``text`` for an MLflow filter string; names with quotes or backslashes are refused."""
    if "'" in text or "\\" in text:
        raise ValueError(f"a registered model name cannot contain quotes or backslashes, got {text!r}")
    return text


def json_number(value: float) -> float | None:
    """A finite float, else None (JSON has no NaN or infinity)."""
    return value if math.isfinite(value) else None
