"""The creator's alias ``champion``: guarded ``promote`` and ``rollback``, and the promotion log.

``champion`` moves only here. Each move is checked by its guard (gates passed, the lower
bound of the lift or NDCG@5 gain at or above the floor, or a forced reason) and recorded,
entry by entry, in a promotion log kept as params of one MLflow run per registered model.

    >>> promote(client, "cta", 3, floor=0.0, force_reason=None, who="ana")
    >>> rollback(client, "cta", who="ben")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from features.schema import us_to_iso
from pipeline.registry import (
    CHAMPION,
    KEY_METRICS,
    Check,
    MetricLimit,
    RegistryError,
    VersionRow,
    alias_versions,
    gates_not_failed,
    json_number,
    quoted,
    registered,
    version_row,
)
from pipeline.tracking import ensure_experiment, model_kind

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "MAX_REASON_CHARS",
    "PROMOTIONS_EXPERIMENT",
    "TAG_LOG_RUN",
    "PromotionEntry",
    "PromotionRefused",
    "promote",
    "promotion_checks",
    "promotion_log",
    "rollback",
]

PROMOTIONS_EXPERIMENT: Final = "promotions"  # one run per registered model holds its promotion log
TAG_LOG_RUN: Final = "carryon.promotion_log_run"  # registered-model tag: run id of its promotion log
TAG_LOG_OF: Final = "carryon.registered_model"  # promotion-log run tag: the registered model it logs
LOG_PREFIX: Final = "promotion."  # run params promotion.000001, ...: params never change, so appends are safe
LOWER_BOUND: Final[Mapping[str, str]] = {"cta": "lift_dr_ci_low", "bonus": "ndcg_at_5_gain_ci_low"}
MAX_REASON_CHARS: Final = 500
_APPEND_ATTEMPTS: Final = 20


class PromotionRefused(RegistryError):
    """A promotion or rollback was refused by its guard."""


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
            "metrics": {k: json_number(v) for k, v in sorted(self.metrics.items())},
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
    row = version_row(client, name, version)
    failures = [reason for check in promotion_checks(name, floor) if (reason := check(row)) is not None]
    if failures and force_reason is None:
        raise PromotionRefused(
            f"refusing to promote {name} version {version} to {CHAMPION}: {'; '.join(failures)} "
            f"(promotion floor {floor:g}); pass --force REASON to promote it anyway"
        )

    def entry(seq: int, log: Sequence[PromotionEntry]) -> PromotionEntry:
        current = alias_versions(client, name).get(CHAMPION)
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
        current = alias_versions(client, name).get(CHAMPION)
        if current == target:
            raise PromotionRefused(f"{name} version {target} is already the {CHAMPION}; nothing to roll back")
        row = version_row(client, name, target)
        return PromotionEntry(
            seq, "rollback", name, current, target, who, _now(), f"rollback: version {withdrawn} withdrawn",
            forced=False, metrics=_key_metrics(row),
        )

    return _record(client, name, entry)


def promotion_log(client: MlflowClient, name: str) -> list[PromotionEntry]:
    """Every promotion and rollback of ``name``, oldest first (empty if there was none)."""
    registered(client, name)
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

    registered(client, name)
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

    pointer = registered(client, name).tags.get(TAG_LOG_RUN)
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
        [experiment.experiment_id], filter_string=f"tags.`{TAG_LOG_OF}` = '{quoted(name)}'", max_results=1000
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



def _key_metrics(row: VersionRow) -> dict[str, float]:
    keys = KEY_METRICS[model_kind(row.name)]
    return {k: row.metrics[k] for k in keys if k in row.metrics}


def _now() -> str:
    return us_to_iso(time.time_ns() // 1000)
