"""pipeline.registry, pipeline.promotion and ``carryon models``: selection, guarded promotion, rollback,
the promotion log.

Every test gets a fresh SQLite store (a copy of a schema-only store made once, so that
MLflow's migrations run once per session rather than once per test).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from pipeline.cli_models import models_app
from pipeline.promotion import PROMOTIONS_EXPERIMENT, TAG_LOG_RUN, PromotionRefused, promote, promotion_log, rollback
from pipeline.registry import (
    CANDIDATE,
    CHAMPION,
    MetricLimit,
    RegistryError,
    SelectionError,
    SelectRule,
    list_versions,
    select_candidate,
)
from pipeline.tracking import BONUS_MODEL, CTA_MODEL, TAG_FAMILY, TAG_GATES, experiment, model_kind, open_tracking

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"auc": 0.70, "ece": 0.02, "lift_dr": 0.05, "lift_dr_ci_low": 0.01, "lift_dr_ci_high": 0.09}


@pytest.fixture(scope="module")
def schema_only_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("template")
    open_tracking(project, {})
    db = project / "mlflow" / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return db


@pytest.fixture
def project(tmp_path: Path, schema_only_store: Path) -> Path:
    (tmp_path / "mlflow").mkdir()
    shutil.copyfile(schema_only_store, tmp_path / "mlflow" / "mlflow.db")
    return tmp_path


@pytest.fixture
def client(project: Path) -> MlflowClient:
    return open_tracking(project, {})


def add_version(
    client: MlflowClient,
    name: str,
    metrics: Mapping[str, float],
    *,
    gates: str | None = None,
    family: str = "logreg",
    version_tags: Mapping[str, str] | None = None,
) -> int:
    """A run with these metrics and tags, registered as the next version of ``name``."""
    tags = {TAG_FAMILY: family, **({TAG_GATES: gates} if gates else {})}
    run = client.create_run(experiment(client, model_kind(name)), tags=tags)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=dict(version_tags or {})
    )
    return int(version.version)


def aliases(client: MlflowClient, name: str) -> dict[str, int]:
    return {alias: int(v) for alias, v in client.get_registered_model(name).aliases.items()}


# --- list ---------------------------------------------------------------------------------------


def test_list_versions_reports_run_metrics_tags_and_aliases(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD, family="lgbm", gates="passed")
    v2 = add_version(client, CTA_MODEL, {"auc": float("nan")}, gates="failed")
    client.set_registered_model_alias(CTA_MODEL, CANDIDATE, str(v1))
    client.set_registered_model_alias(CTA_MODEL, CHAMPION, str(v1))

    rows = list_versions(client, CTA_MODEL)
    assert [r.version for r in rows] == [v1, v2] == [1, 2]
    assert rows[0].family == "lgbm"
    assert rows[0].gates == "passed"
    assert rows[0].aliases == (CANDIDATE, CHAMPION)
    assert rows[0].metrics["auc"] == pytest.approx(0.70)
    assert rows[1].aliases == ()
    assert rows[1].gates == "failed"
    assert math.isnan(rows[1].metrics["auc"])
    assert rows[0].created.endswith("Z")
    data = json.loads(json.dumps([r.to_dict() for r in rows], allow_nan=False))  # NaN becomes null
    assert data[1]["metrics"]["auc"] is None
    assert data[0]["tags"] == {TAG_FAMILY: "lgbm", TAG_GATES: "passed"}


def test_a_version_tag_can_fail_the_gates_too(client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, GOOD, gates="passed", version_tags={TAG_GATES: "failed"})
    assert list_versions(client, CTA_MODEL)[0].gates == "failed"


def test_unknown_model_is_a_clear_error(client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, GOOD)
    with pytest.raises(RegistryError, match=r"no registered model named 'ctaa'.*registered: cta"):
        list_versions(client, "ctaa")


# --- select -------------------------------------------------------------------------------------

RULE = SelectRule("auc", {"ece": ("max", 0.05)})


def test_select_picks_the_best_qualifying_version_and_leaves_champion(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, {**GOOD, "auc": 0.70})
    v2 = add_version(client, CTA_MODEL, {**GOOD, "auc": 0.80, "ece": 0.09})  # best auc, too poorly calibrated
    v3 = add_version(client, CTA_MODEL, {**GOOD, "auc": 0.79}, gates="failed")
    v4 = add_version(client, CTA_MODEL, {**GOOD, "auc": 0.72})
    v5 = add_version(client, CTA_MODEL, {"ece": 0.01})  # no auc at all
    client.set_registered_model_alias(CTA_MODEL, CHAMPION, str(v1))

    result = select_candidate(client, CTA_MODEL, RULE)

    assert result.candidate == v4
    assert result.changed
    assert result.previous is None
    assert result.qualified == (v1, v4)
    assert result.rejected == {
        v2: ("ece = 0.09 is above the maximum 0.05",),
        v3: (f"{TAG_GATES} = failed",),
        v5: ("auc is missing",),
    }
    assert result.warning is None
    assert aliases(client, CTA_MODEL) == {CANDIDATE: v4, CHAMPION: v1}


def test_select_breaks_ties_by_the_newest_version(client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, GOOD)
    newest = add_version(client, CTA_MODEL, GOOD)
    assert select_candidate(client, CTA_MODEL, RULE).candidate == newest


def test_select_without_change_keeps_the_alias(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    assert select_candidate(client, CTA_MODEL, RULE).changed
    again = select_candidate(client, CTA_MODEL, RULE)
    assert (again.candidate, again.previous, again.changed) == (v1, v1, False)


def test_no_qualifying_version_keeps_the_previous_candidate_with_a_warning(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    select_candidate(client, CTA_MODEL, RULE)
    client.set_registered_model_alias(CTA_MODEL, CHAMPION, str(v1))
    strict = SelectRule("auc", {"ece": ("max", 0.001), "lift_dr_ci_low": ("min", 0.5)})
    v2 = add_version(client, CTA_MODEL, {**GOOD, "auc": 0.9}, gates="failed")

    result = select_candidate(client, CTA_MODEL, strict)

    assert (result.candidate, result.previous, result.changed, result.qualified) == (v1, v1, False, ())
    assert result.warning is not None
    assert "version 1: ece = 0.02 is above the maximum 0.001, lift_dr_ci_low = 0.01 is below the minimum 0.5" in (
        result.warning
    )
    assert f"version {v2}: {TAG_GATES} = failed" in result.warning
    assert "keeping the previous candidate, version 1" in result.warning
    assert aliases(client, CTA_MODEL) == {CANDIDATE: v1, CHAMPION: v1}
    assert result.to_dict()["rejected"][str(v2)][0] == f"{TAG_GATES} = failed"


def test_nothing_qualifies_and_no_previous_candidate_fails_clearly(client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, {**GOOD, "ece": 0.2})
    add_version(client, CTA_MODEL, GOOD, gates="failed")
    with pytest.raises(SelectionError, match=r"no version of registered model 'cta' qualifies.*no previous candidate"
                       r".*version 1: ece = 0.2 is above the maximum 0.05; version 2: carryon.gates = failed"):
        select_candidate(client, CTA_MODEL, RULE)
    assert aliases(client, CTA_MODEL) == {}


def test_extra_checks_take_part_in_qualification(client: MlflowClient) -> None:
    """Later stages (export gates, device budgets) add checks without touching the selection."""
    fast = add_version(client, CTA_MODEL, {**GOOD, "auc": 0.70, "latency_p95_ms": 0.4})
    add_version(client, CTA_MODEL, {**GOOD, "auc": 0.75, "latency_p95_ms": 3.0})
    budget = SelectRule("auc", extra_checks=(MetricLimit("latency_p95_ms", "max", 1.0),))
    result = select_candidate(client, CTA_MODEL, budget)
    assert result.candidate == fast
    assert result.rejected == {2: ("latency_p95_ms = 3 is above the maximum 1",)}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SelectRule(""), "metric must be a metric name"),
        (lambda: SelectRule("auc", {"ece": ("below", 0.1)}), "must be 'min' or 'max'"),  # type: ignore[dict-item]
        (lambda: SelectRule("auc", {"ece": ("max", float("inf"))}), "must be a finite number"),
        (lambda: MetricLimit("ece", "max", math.nan), "must be a finite number"),
    ],
)
def test_bad_rules_are_refused(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_non_finite_metric_never_qualifies(client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, {**GOOD, "auc": float("nan")})
    with pytest.raises(SelectionError, match="auc = nan is not a finite number"):
        select_candidate(client, CTA_MODEL, RULE)


# --- promote ------------------------------------------------------------------------------------


def test_promote_sets_champion_and_logs_it(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    entry = promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")

    assert (entry.seq, entry.action, entry.from_version, entry.to_version) == (1, "promote", None, v1)
    assert (entry.who, entry.forced, entry.reason, entry.overridden) == ("ana", False, None, ())
    assert entry.metrics["lift_dr_ci_low"] == pytest.approx(0.01)
    assert entry.when.endswith("Z")
    assert aliases(client, CTA_MODEL) == {CHAMPION: v1}
    assert promotion_log(client, CTA_MODEL) == [entry]
    # The log lives in a run of the promotions experiment that the registered model points to.
    run = client.get_run(client.get_registered_model(CTA_MODEL).tags[TAG_LOG_RUN])
    assert client.get_experiment(run.info.experiment_id).name == PROMOTIONS_EXPERIMENT
    assert json.loads(run.data.params["promotion.000001"])["to_version"] == v1


@pytest.mark.parametrize(
    ("metrics", "gates", "floor", "why"),
    [
        (GOOD, "failed", 0.0, r"carryon\.gates = failed"),
        ({**GOOD, "lift_dr_ci_low": -0.02}, "passed", 0.0, r"lift_dr_ci_low = -0\.02 is below the minimum 0"),
        (GOOD, None, 0.05, r"lift_dr_ci_low = 0\.01 is below the minimum 0\.05"),
        ({"auc": 0.7}, None, 0.0, r"lift_dr_ci_low is missing"),
    ],
    ids=["gate-failed", "lift-below-zero", "lift-below-floor", "no-lift-measured"],
)
def test_promote_guard_refuses(
    client: MlflowClient, metrics: dict[str, float], gates: str | None, floor: float, why: str
) -> None:
    champion = add_version(client, CTA_MODEL, GOOD)
    promote(client, CTA_MODEL, champion, floor=0.0, force_reason=None, who="ana")
    bad = add_version(client, CTA_MODEL, metrics, gates=gates)

    with pytest.raises(PromotionRefused, match=rf"refusing to promote cta version {bad} to champion: {why}.*--force"):
        promote(client, CTA_MODEL, bad, floor=floor, force_reason=None, who="ben")

    assert aliases(client, CTA_MODEL) == {CHAMPION: champion}  # nothing moved
    assert len(promotion_log(client, CTA_MODEL)) == 1  # nothing logged


def test_forced_promotion_records_the_reason_and_what_it_overrode(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    v2 = add_version(client, CTA_MODEL, {**GOOD, "lift_dr_ci_low": -0.03}, gates="failed")

    entry = promote(client, CTA_MODEL, v2, floor=0.0, force_reason="  pop-up tonight, accepted risk ", who="ben")

    assert entry.forced is True
    assert entry.reason == "pop-up tonight, accepted risk"
    assert entry.overridden == (f"{TAG_GATES} = failed", "lift_dr_ci_low = -0.03 is below the minimum 0")
    assert (entry.from_version, entry.to_version, entry.who) == (v1, v2, "ben")
    assert aliases(client, CTA_MODEL)[CHAMPION] == v2
    assert promotion_log(client, CTA_MODEL)[-1] == entry


def test_a_reason_on_a_passing_version_is_not_forced(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    entry = promote(client, CTA_MODEL, v1, floor=0.0, force_reason="weekly release", who="ana")
    assert (entry.forced, entry.reason) == (False, "weekly release")


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_a_forced_promotion_needs_a_real_reason(client: MlflowClient, reason: str) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD, gates="failed")
    with pytest.raises(ValueError, match="needs a reason of 1 to 500 characters"):
        promote(client, CTA_MODEL, v1, floor=0.0, force_reason=reason, who="ana")
    assert aliases(client, CTA_MODEL) == {}


def test_rankers_are_guarded_by_the_ndcg_gain(client: MlflowClient) -> None:
    ranker = {"ndcg_at_5": 0.4, "ndcg_at_5_gain": 0.03, "ndcg_at_5_gain_ci_low": 0.004}
    v1 = add_version(client, BONUS_MODEL, {**ranker, "lift_dr_ci_low": -1.0}, family="lambdarank")
    with pytest.raises(PromotionRefused, match=r"ndcg_at_5_gain_ci_low = 0\.004 is below the minimum 0\.01"):
        promote(client, BONUS_MODEL, v1, floor=0.01, force_reason=None, who="ana")
    entry = promote(client, BONUS_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    assert entry.metrics == {"ndcg_at_5": 0.4, "ndcg_at_5_gain": 0.03, "ndcg_at_5_gain_ci_low": 0.004}


def test_promote_missing_version_or_current_champion_is_refused(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    with pytest.raises(RegistryError, match=r"registered model cta has no version 9 \(versions: 1\)"):
        promote(client, CTA_MODEL, 9, floor=0.0, force_reason=None, who="ana")
    promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    with pytest.raises(PromotionRefused, match="cta version 1 is already the champion"):
        promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    assert len(promotion_log(client, CTA_MODEL)) == 1


def test_select_never_touches_the_champion(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    add_version(client, CTA_MODEL, {**GOOD, "auc": 0.9})
    select_candidate(client, CTA_MODEL, RULE)
    assert aliases(client, CTA_MODEL) == {CHAMPION: v1, CANDIDATE: 2}


# --- rollback -----------------------------------------------------------------------------------


def test_rollback_walks_back_through_the_promotions(client: MlflowClient) -> None:
    v1, v2, v3 = (add_version(client, CTA_MODEL, GOOD) for _ in range(3))
    for version in (v1, v2, v3):
        promote(client, CTA_MODEL, version, floor=0.0, force_reason=None, who="ana")

    back = rollback(client, CTA_MODEL, who="ben")
    assert (back.action, back.from_version, back.to_version, back.who, back.seq) == ("rollback", v3, v2, "ben", 4)
    assert back.reason == f"rollback: version {v3} withdrawn"
    assert aliases(client, CTA_MODEL)[CHAMPION] == v2

    assert rollback(client, CTA_MODEL, who="ben").to_version == v1
    assert aliases(client, CTA_MODEL)[CHAMPION] == v1
    with pytest.raises(PromotionRefused, match="nothing to roll back to"):
        rollback(client, CTA_MODEL, who="ben")
    assert aliases(client, CTA_MODEL)[CHAMPION] == v1

    log = promotion_log(client, CTA_MODEL)
    assert [(e.action, e.from_version, e.to_version) for e in log] == [
        ("promote", None, v1), ("promote", v1, v2), ("promote", v2, v3),
        ("rollback", v3, v2), ("rollback", v2, v1),
    ]
    assert [e.seq for e in log] == [1, 2, 3, 4, 5]


def test_promote_after_rollback_continues_the_history(client: MlflowClient) -> None:
    v1, v2, v3 = (add_version(client, CTA_MODEL, GOOD) for _ in range(3))
    promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    promote(client, CTA_MODEL, v2, floor=0.0, force_reason=None, who="ana")
    rollback(client, CTA_MODEL, who="ana")
    promote(client, CTA_MODEL, v3, floor=0.0, force_reason=None, who="ana")
    assert rollback(client, CTA_MODEL, who="ana").to_version == v1  # v2 was withdrawn before


@pytest.mark.parametrize("promotions", [0, 1])
def test_rollback_without_history_is_refused(client: MlflowClient, promotions: int) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    for _ in range(promotions):
        promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    with pytest.raises(PromotionRefused, match=r"nothing to roll back to: the promotion log of cta holds no earlier"):
        rollback(client, CTA_MODEL, who="ana")
    assert len(promotion_log(client, CTA_MODEL)) == promotions


def test_rollback_to_a_champion_set_before_the_log(client: MlflowClient) -> None:
    """A champion set by hand (in the MLflow UI) before the first logged promotion is rolled back to."""
    v1, v2 = add_version(client, CTA_MODEL, GOOD), add_version(client, CTA_MODEL, GOOD)
    client.set_registered_model_alias(CTA_MODEL, CHAMPION, str(v1))
    assert promote(client, CTA_MODEL, v2, floor=0.0, force_reason=None, who="ana").from_version == v1
    assert rollback(client, CTA_MODEL, who="ana").to_version == v1


# --- the log ------------------------------------------------------------------------------------


class _LosesTheFirstRace:
    """A client on which another process appends the same log entry number just before us."""

    def __init__(self, client: MlflowClient) -> None:
        self._client, self.raced = client, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def log_param(self, run_id: str, key: str, value: str) -> Any:
        if key.startswith("promotion.") and not self.raced:
            self.raced = True
            other = json.loads(value) | {"who": "other-process", "when": "2026-01-01T00:00:00.000000Z"}
            self._client.log_param(run_id, key, json.dumps(other))
        return self._client.log_param(run_id, key, value)


def test_concurrent_appends_never_overwrite_an_entry(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    v2 = add_version(client, CTA_MODEL, GOOD)
    promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    racing = _LosesTheFirstRace(client)
    entry = promote(racing, CTA_MODEL, v2, floor=0.0, force_reason=None, who="ana")  # type: ignore[arg-type]
    assert racing.raced
    log = promotion_log(client, CTA_MODEL)
    assert [(e.seq, e.who) for e in log] == [(1, "ana"), (2, "other-process"), (3, "ana")]
    assert entry == log[-1]


def test_a_corrupt_log_entry_is_reported_not_skipped(client: MlflowClient) -> None:
    v1 = add_version(client, CTA_MODEL, GOOD)
    promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    run_id = client.get_registered_model(CTA_MODEL).tags[TAG_LOG_RUN]
    client.log_param(run_id, "promotion.000002", "{not json")
    with pytest.raises(RegistryError, match=r"param promotion\.000002 is not a valid entry"):
        promotion_log(client, CTA_MODEL)


def test_the_log_survives_a_new_process(project: Path, client: MlflowClient) -> None:
    v1, v2 = add_version(client, CTA_MODEL, GOOD), add_version(client, CTA_MODEL, GOOD)
    promote(client, CTA_MODEL, v1, floor=0.0, force_reason=None, who="ana")
    promote(client, CTA_MODEL, v2, floor=0.0, force_reason="demo", who="ana")
    rollback(client, CTA_MODEL, who="ben")
    expected = [e.to_dict() for e in promotion_log(client, CTA_MODEL)]

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the project's own store
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli_models", "log", CTA_MODEL, "--json"],
        cwd=project, env=env | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": CTA_MODEL, "entries": expected}
    assert str(project) not in result.stdout


# --- carryon models -----------------------------------------------------------------------------


@pytest.fixture
def cli(project: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke ``carryon models ...`` in the project directory, as user ana."""
    runner = CliRunner()
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("USER", "ana")
    shutil.copyfile(ROOT / "params.yaml", project / "params.yaml")

    def invoke(*args: str) -> Any:
        return runner.invoke(models_app, list(args))

    return invoke


def _params_with_floor(project: Path, floor: float) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"]["promotion_floor_cta"] = floor
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_cli_list_json_and_table(cli: Any, client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, GOOD, family="lgbm")
    add_version(client, CTA_MODEL, {**GOOD, "auc": 0.81}, gates="failed")
    client.set_registered_model_alias(CTA_MODEL, CANDIDATE, "1")

    as_json = cli("list", CTA_MODEL, "--json")
    assert as_json.exit_code == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [(v["version"], v["aliases"], v["gates"]) for v in data["versions"]] == [
        (1, [CANDIDATE], None), (2, [], "failed"),
    ]
    table = cli("list", CTA_MODEL)
    assert table.exit_code == 0
    assert "candidate" in table.stdout
    assert "lgbm" in table.stdout
    assert "0.8100" in table.stdout
    assert "lift_dr_ci_low" in table.stdout


def test_cli_promote_reads_the_floor_from_params(cli: Any, project: Path, client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, GOOD)  # lift_dr_ci_low 0.01
    strict = _params_with_floor(project, 0.02)
    refused = cli("promote", CTA_MODEL, "1", "--params", str(strict))
    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [
        "carryon: error: refusing to promote cta version 1 to champion: lift_dr_ci_low = 0.01 is below the "
        "minimum 0.02 (promotion floor 0.02); pass --force REASON to promote it anyway"
    ]
    assert aliases(client, CTA_MODEL) == {}

    done = cli("promote", CTA_MODEL, "1", "--params", str(_params_with_floor(project, 0.0)), "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout) | {"when": None} == {
        "seq": 1, "action": "promote", "name": CTA_MODEL, "from_version": None, "to_version": 1, "who": "ana",
        "when": None, "reason": None, "forced": False, "overridden": [], "metrics": {
            k: GOOD[k] for k in ("auc", "ece", "lift_dr", "lift_dr_ci_low", "lift_dr_ci_high")},
    }


def test_cli_force_rollback_and_log(cli: Any, project: Path, client: MlflowClient) -> None:
    params = str(_params_with_floor(project, 0.0))
    add_version(client, CTA_MODEL, GOOD)
    add_version(client, CTA_MODEL, GOOD, gates="failed")
    assert cli("promote", CTA_MODEL, "1", "--params", params).exit_code == 0

    empty = cli("promote", CTA_MODEL, "2", "--force", " ", "--params", params)
    assert empty.exit_code == 1
    assert "--force needs a reason" in empty.stderr
    forced = cli("promote", CTA_MODEL, "2", "--force", "approved by ana", "--params", params)
    assert forced.exit_code == 0, forced.stderr
    assert "FORCED" in forced.stdout
    assert "champion is version 2 (was version 1): approved by ana" in forced.stdout

    back = cli("rollback", CTA_MODEL)
    assert back.exit_code == 0
    assert "champion is version 1 (was version 2)" in back.stdout
    again = cli("rollback", CTA_MODEL)
    assert again.exit_code == 1
    assert len(again.stderr.splitlines()) == 1
    assert "nothing to roll back to" in again.stderr

    log = json.loads(cli("log", CTA_MODEL, "--json").stdout)["entries"]
    assert [(e["action"], e["to_version"], e["forced"]) for e in log] == [
        ("promote", 1, False), ("promote", 2, True), ("rollback", 1, False),
    ]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("list", "nope"), "no registered model named 'nope'"),
        (("promote", CTA_MODEL, "7"), "registered model cta has no version 7"),
        (("rollback", CTA_MODEL), "nothing to roll back to"),
        (("promote", CTA_MODEL, "1", "--params", "absent.yaml"), "absent.yaml"),
    ],
)
def test_cli_refusals_are_one_line(cli: Any, client: MlflowClient, args: tuple[str, ...], match: str) -> None:
    add_version(client, CTA_MODEL, GOOD)
    result = cli(*args)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("carryon: error: ")
    assert match in lines[0]
    assert aliases(client, CTA_MODEL) == {}


def test_cli_unreachable_tracking_server_is_one_line(tmp_path: Path) -> None:
    env = os.environ | {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli_models", "promote", CTA_MODEL, "1", "--force", "x"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "carryon: error: cannot use the MLflow tracking store http://127.0.0.1:9: no server answers "
        "(Connection refused); start that tracking server or set MLFLOW_TRACKING_URI to a reachable one "
        "(http://, https://, postgresql://, sqlite:///...), or unset it for the embedded store"
    ]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
