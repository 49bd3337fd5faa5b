"""pipeline.bench_results and pipeline.bench_plot: reports into MLflow, budgets in selection, the Pareto front.

Every test gets a fresh SQLite store (a copy of a schema-only store made once) with
registered versions whose ``carryon.deploy_sha256`` tags match fixed reports written here;
no model is trained and no benchmark is run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from features.errors import CarryonError
from pipeline import bench_results
from pipeline.bench_plot import TAG_PARETO_RUN, ParetoRow, pareto_front, pareto_rows, pareto_section, write_pareto
from pipeline.bench_results import (
    TAG_DEPLOY_SHA256,
    budget_check,
    budget_failures,
    ingest_reports,
    measured_devices,
    metric_name,
)
from pipeline.params import BenchConfig, DeviceProfile
from pipeline.registry import SelectRule, VersionRow, gates_passed, list_versions, select_candidate
from pipeline.report import write_reports
from pipeline.tracking import BONUS_MODEL, CTA_MODEL, TAG_GATES, open_tracking
from tests.test_registry import GOOD, add_version

DEVICE = "build-machine"
CREATED = "2026-11-27T10:00:00.000000Z"
LAPTOP = DeviceProfile("laptop", p99_us=1000.0, session_create_ms=100.0, peak_rss_mib=200.0)
PHONE = DeviceProfile("phone-low", p99_us=300.0, session_create_ms=50.0, peak_rss_mib=100.0)
BENCH = BenchConfig(threads=1, warmup=10, min_iterations=100, time_budget_s=1.0, target_profile="laptop",
                    profiles={"laptop": LAPTOP, "phone-low": PHONE})
FAST = 150.0  # a p99 within every budget above
SLOW = 5000.0  # a p99 over the laptop budget (and the phone's)


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


# --- store and reports ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_only_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("template")
    open_tracking(project, {})
    db = project / "mlflow" / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return db


@pytest.fixture
def client(tmp_path: Path, schema_only_store: Path) -> MlflowClient:
    (tmp_path / "mlflow").mkdir()
    shutil.copyfile(schema_only_store, tmp_path / "mlflow" / "mlflow.db")
    return open_tracking(tmp_path, {})


def exported(client: MlflowClient, name: str, label: str, metrics: dict[str, float] | None = None,
             family: str = "logreg") -> int:
    """A registered version whose export passed and whose deployed ONNX hashes to sha(label)."""
    return add_version(client, name, metrics or GOOD, gates="passed", family=family,
                       version_tags={TAG_GATES: "passed", TAG_DEPLOY_SHA256: sha(label)})


def entry(label: str, name: str = CTA_MODEL, version: int = 1, *, p95: float = 100.0, p99: float = 150.0,
          session_ms: float = 20.0, rss: float = 80.0, size: int = 4096, fmt: str = "onnx") -> dict[str, Any]:
    """One models[] entry of contract C; its budgets claim 'met' whatever the figures (ingest must not trust it)."""
    return {
        "file": f"{name}/v{version}/model.{fmt}", "sha256": sha(label if fmt == "onnx" else label + ".ort"),
        "onnx_sha256": sha(label) if fmt == "ort" else None,
        "size": size, "kind": "cta" if name == CTA_MODEL else "bonus-ranker", "registered_model": name,
        "version": version, "family": "logreg", "format": fmt, "call_rows": 8, "session_create_ms": session_ms,
        "session_create_first_ms": session_ms * 2,
        "latency_us": {"p50": p95 / 2, "p95": p95, "p99": p99, "mean": p95 / 1.8}, "iterations": 3000,
        "time_budget_exhausted": False, "throughput_per_s": 1e6 / (p95 / 1.8), "peak_rss_mib": rss,
        "call_api": "run_with_iobinding", "golden": None, "budgets": {"laptop": {"met": True, "failures": []}},
    }


def report(*models: dict[str, Any], device_id: str = DEVICE, profile: str | None = "laptop", emulated: bool = False,
           created_at: str = CREATED) -> dict[str, Any]:
    if emulated:  # the job judges no budget on an emulated device
        models = tuple({**m, "budgets": {}} for m in models)
    return {
        "schema": 1, "kind": "carryon-bench-report", "created_at": created_at,
        "source": {"kind": "export", "creator_id": None, "bundle_version": None},
        "device": {"device_id": device_id, "profile": profile, "arch": "x86_64", "cpu_model": "test cpu", "cores": 2,
                   "os": "Linux", "python": "3.11.2", "onnxruntime": "1.32.0",
                   "providers": ["CPUExecutionProvider"], "emulated": emulated},
        "settings": {"threads": 1, "warmup": 10, "min_iterations": 100, "time_budget_s": 1.0, "session_repeats": 3},
        "models": list(models),
    }


@pytest.fixture
def write(tmp_path: Path) -> Callable[[dict[str, Any], str], Path]:
    def write_report(data: dict[str, Any], name: str = "report.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    return write_report


def run_of(client: MlflowClient, name: str, version: int) -> str:
    run_id = client.get_model_version(name, str(version)).run_id
    assert run_id is not None
    return str(run_id)


def version_tags(client: MlflowClient, name: str, version: int) -> dict[str, str]:
    return {k: v for k, v in client.get_model_version(name, str(version)).tags.items() if k.startswith("carryon.")}


def rule() -> SelectRule:
    return SelectRule("auc", {}, (gates_passed, budget_check(BENCH)))


# --- ingest --------------------------------------------------------------------------------------


def test_ingest_attaches_figures_tags_and_the_report_to_the_matching_version(
    client: MlflowClient, write: Callable[..., Path]
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    v2 = exported(client, CTA_MODEL, "cta-2")
    rb = exported(client, BONUS_MODEL, "bonus-1", {"ndcg_at_5": 0.5})
    path = write(report(entry("cta-2", version=v2, p95=120.0, p99=900.0, size=5000),
                        entry("bonus-1", BONUS_MODEL, rb, p99=2000.0)))

    result = ingest_reports(client, [path], BENCH)

    (one,) = result["reports"]
    assert (one["file"], one["device_id"], one["profile"], one["emulated"]) == ("report.json", DEVICE, "laptop", False)
    verdicts = {(m["registered_model"], m["version"]): (m["within_budget"], m["failures"]) for m in one["models"]}
    assert verdicts == {(CTA_MODEL, v2): (True, []),
                        (BONUS_MODEL, rb): (False, ["p99 latency 2000 µs > 1000 µs"])}
    run = client.get_run(run_of(client, CTA_MODEL, v2))
    assert run.data.metrics[f"latency_p95_us.{DEVICE}"] == 120.0
    assert run.data.metrics[f"latency_p99_us.{DEVICE}"] == 900.0
    assert run.data.metrics[f"latency_p50_us.{DEVICE}"] == 60.0
    assert run.data.metrics[f"session_create_ms.{DEVICE}"] == 20.0
    assert run.data.metrics[f"peak_rss_mib.{DEVICE}"] == 80.0
    assert run.data.metrics[f"size_bytes.{DEVICE}"] == 5000.0
    prefix = f"carryon.bench.{DEVICE}."
    assert version_tags(client, CTA_MODEL, v2) == {
        TAG_GATES: "passed", TAG_DEPLOY_SHA256: sha("cta-2"), prefix + "profile": "laptop",
        prefix + "emulated": "false", prefix + "within_budget": "true", prefix + "format": "onnx",
        prefix + "created_at": CREATED}
    assert version_tags(client, BONUS_MODEL, rb)[prefix + "within_budget"] == "false"
    assert not any(k.startswith("carryon.bench.") for k in version_tags(client, CTA_MODEL, v1))
    assert not any(k.startswith("latency_") for k in
                   client.get_run(run_of(client, CTA_MODEL, v1)).data.metrics)
    artifact = json.loads(Path(client.download_artifacts(run.info.run_id, f"bench/{DEVICE}.json")).read_text())
    assert artifact["device"]["device_id"] == DEVICE
    assert [m["sha256"] for m in artifact["models"]] == [sha("cta-2")]  # this version's entry only


def test_reingesting_a_report_changes_nothing(client: MlflowClient, write: Callable[..., Path]) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    path = write(report(entry("cta-1", version=v1)))
    first = ingest_reports(client, [path], BENCH)
    tags = version_tags(client, CTA_MODEL, v1)
    run_id = run_of(client, CTA_MODEL, v1)
    metrics = client.get_run(run_id).data.metrics

    again = ingest_reports(client, [path, path], BENCH)

    assert again["reports"][0] == first["reports"][0] == again["reports"][1]
    assert version_tags(client, CTA_MODEL, v1) == tags
    assert client.get_run(run_id).data.metrics == metrics
    for figure in ("p95_us", "p99_us", "session_create_ms"):
        assert len(client.get_metric_history(run_id, metric_name(figure, DEVICE))) == 1
    assert [a.path for a in client.list_artifacts(run_id, "bench")] == [f"bench/{DEVICE}.json"]


def test_a_newer_report_wins_and_an_older_one_is_kept_out(client: MlflowClient, write: Callable[..., Path]) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    newer = write(report(entry("cta-1", version=v1, p99=5000.0), created_at="2026-11-28T10:00:00Z"), "new.json")
    older = write(report(entry("cta-1", version=v1, p99=150.0), created_at="2026-11-27T10:00:00Z"), "old.json")
    ingest_reports(client, [newer], BENCH)

    result = ingest_reports(client, [older], BENCH)

    assert result["reports"][0]["models"][0]["stale"] is True
    tags = version_tags(client, CTA_MODEL, v1)
    assert tags[f"carryon.bench.{DEVICE}.within_budget"] == "false"
    assert tags[f"carryon.bench.{DEVICE}.created_at"] == "2026-11-28T10:00:00Z"
    run_id = run_of(client, CTA_MODEL, v1)
    assert client.get_run(run_id).data.metrics[f"latency_p99_us.{DEVICE}"] == 5000.0
    # Given together, in any order, the newest report is the one on record.
    assert ingest_reports(client, [newer, older], BENCH)["reports"][1]["file"] == "new.json"


def test_an_ort_entry_matches_by_its_onnx_sha256_and_the_onnx_figures_stand_for_the_version(
    client: MlflowClient, write: Callable[..., Path]
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    path = write(report(entry("cta-1", version=v1, fmt="ort", p99=5000.0), entry("cta-1", version=v1, p99=150.0)))
    (one,) = ingest_reports(client, [path], BENCH)["reports"]
    assert [(m["format"], m["within_budget"]) for m in one["models"]] == [("onnx", True)]
    run_id = run_of(client, CTA_MODEL, v1)
    artifact = json.loads(Path(client.download_artifacts(run_id, f"bench/{DEVICE}.json")).read_text())
    assert sorted(m["format"] for m in artifact["models"]) == ["onnx", "ort"]  # both kept in the artifact
    ort_only = write(report(entry("cta-1", version=v1, fmt="ort", p99=5000.0), device_id="rig"), "ort.json")
    assert ingest_reports(client, [ort_only], BENCH)["reports"][0]["models"][0]["within_budget"] is False


def test_the_verdict_is_judged_with_this_machines_params_not_the_reports(
    client: MlflowClient, write: Callable[..., Path]
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    data = report(entry("cta-1", version=v1, session_ms=500.0, rss=900.0))  # its budgets say "met"
    (one,) = ingest_reports(client, [write(data)], BENCH)["reports"]
    assert one["models"][0]["failures"] == ["session creation 500 ms > 100 ms", "peak RSS 900 MiB > 200 MiB"]


def test_budget_failures_names_each_figure_over_or_missing() -> None:
    assert budget_failures({"p99_us": 1000.0, "session_create_ms": 100.0, "peak_rss_mib": 200.0}, LAPTOP) == []
    assert budget_failures({"p99_us": 1000.5, "session_create_ms": float("nan")}, LAPTOP) == [
        "p99 latency 1000 µs > 1000 µs", "session creation not measured", "peak RSS not measured"]


# --- budgets in selection ------------------------------------------------------------------------


def test_a_version_over_budget_is_never_the_candidate(client: MlflowClient, write: Callable[..., Path]) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1", {**GOOD, "auc": 0.70})
    v2 = exported(client, CTA_MODEL, "cta-2", {**GOOD, "auc": 0.80})  # the best, but over budget
    v3 = exported(client, CTA_MODEL, "cta-3", {**GOOD, "auc": 0.60})  # never measured: budgets do not touch it
    assert select_candidate(client, CTA_MODEL, rule()).candidate == v2
    ingest_reports(client, [write(report(entry("cta-1", version=v1, p99=FAST), entry("cta-2", version=v2, p99=SLOW)))],
                   BENCH)

    result = select_candidate(client, CTA_MODEL, rule())

    assert result.candidate == v1
    assert result.to_dict()["rejected"] == {
        str(v2): [f"over the laptop budget on device {DEVICE}: p99 latency 5000 µs > 1000 µs"]}
    assert v3 in result.qualified


def test_over_budget_on_any_measured_device_of_the_profile_rejects(
    client: MlflowClient, write: Callable[..., Path]
) -> None:
    exported(client, CTA_MODEL, "cta-1", {**GOOD, "auc": 0.70})
    v2 = exported(client, CTA_MODEL, "cta-2", {**GOOD, "auc": 0.80})
    fast_here = write(report(entry("cta-2", version=v2, p99=FAST)), "a.json")
    slow_there = write(report(entry("cta-2", version=v2, p99=SLOW), device_id="old-laptop"), "b.json")
    ingest_reports(client, [fast_here, slow_there], BENCH)
    result = select_candidate(client, CTA_MODEL, rule())
    assert result.candidate != v2
    assert result.rejected[v2] == ("over the laptop budget on device old-laptop: p99 latency 5000 µs > 1000 µs",)


@pytest.mark.parametrize(("profile", "emulated"), [("laptop", True), ("phone-low", False), (None, False),
                                                   ("tablet", False)])
def test_emulated_or_other_profile_reports_never_reject(
    client: MlflowClient, write: Callable[..., Path], profile: str | None, emulated: bool
) -> None:
    exported(client, CTA_MODEL, "cta-1", {**GOOD, "auc": 0.70})
    v2 = exported(client, CTA_MODEL, "cta-2", {**GOOD, "auc": 0.80})
    (one,) = ingest_reports(client, [write(report(entry("cta-2", version=v2, p99=SLOW), profile=profile,
                                                  emulated=emulated))], BENCH)["reports"]

    assert select_candidate(client, CTA_MODEL, rule()).candidate == v2
    judged = profile == "phone-low"
    assert one["models"][0]["within_budget"] is (False if judged else None)
    assert (one["note"] is None) is judged
    tags = version_tags(client, CTA_MODEL, v2)
    assert (f"carryon.bench.{DEVICE}.within_budget" in tags) is judged
    assert tags[f"carryon.bench.{DEVICE}.emulated"] == str(emulated).lower()
    run_metrics = client.get_run(run_of(client, CTA_MODEL, v2)).data.metrics
    assert (metric_name("p99_us", DEVICE, emulated=True) in run_metrics) is emulated
    assert (metric_name("p99_us", DEVICE) in run_metrics) is not emulated  # the report page never shows emulated


def test_an_emulated_report_after_a_real_one_clears_the_verdict(
    client: MlflowClient, write: Callable[..., Path]
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1", {**GOOD, "auc": 0.80})
    v2 = exported(client, CTA_MODEL, "cta-2", {**GOOD, "auc": 0.70})
    ingest_reports(client, [write(report(entry("cta-1", version=v1, p99=SLOW)), "real.json")], BENCH)
    assert select_candidate(client, CTA_MODEL, rule()).candidate == v2
    ingest_reports(client, [write(report(entry("cta-1", version=v1, p99=SLOW), emulated=True,
                                         created_at="2026-11-28T00:00:00Z"), "emu.json")], BENCH)
    assert f"carryon.bench.{DEVICE}.within_budget" not in version_tags(client, CTA_MODEL, v1)
    assert select_candidate(client, CTA_MODEL, rule()).candidate == v1


def test_budgets_are_judged_again_at_select_time_with_the_current_params(
    client: MlflowClient, write: Callable[..., Path]
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1", {**GOOD, "auc": 0.70})
    v2 = exported(client, CTA_MODEL, "cta-2", {**GOOD, "auc": 0.80})
    both = report(entry("cta-1", version=v1, p99=150.0), entry("cta-2", version=v2, p99=600.0))
    ingest_reports(client, [write(both)], BENCH)
    assert select_candidate(client, CTA_MODEL, rule()).candidate == v2
    tight = BenchConfig(**{**BENCH.__dict__, "profiles": {"laptop": DeviceProfile("laptop", 500.0, 100.0, 200.0)}})
    result = select_candidate(client, CTA_MODEL, SelectRule("auc", {}, (budget_check(tight),)))
    assert result.candidate == v1
    assert "p99 latency 600 µs > 500 µs" in result.rejected[v2][0]


def test_a_failed_version_shows_one_gates_reason(client: MlflowClient) -> None:
    add_version(client, CTA_MODEL, GOOD, gates="passed")
    failed = add_version(client, CTA_MODEL, GOOD, gates="failed")
    unexported = add_version(client, CTA_MODEL, GOOD)
    rejected = select_candidate(client, CTA_MODEL, rule()).to_dict()["rejected"]
    assert rejected == {str(failed): [f"{TAG_GATES} = failed"],
                        str(unexported): [f"{TAG_GATES} = not set (export it with `carryon export`)"]}


# --- bad reports ---------------------------------------------------------------------------------


def _without(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value

    return edit


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no device", _without("device"), r"device"),
    ("no device id", _without("device.device_id"), r"device_id"),
    ("empty device id", _set("device.device_id", ""), r"device_id"),
    ("device id with a slash", _set("device.device_id", "../x"), r"device_id"),
    ("no emulated flag", _without("device.emulated"), r"emulated"),
    ("no arch", _without("device.arch"), r"arch"),
    ("cores not a number", _set("device.cores", "two"), r"cores"),
    ("schema 2", _set("schema", 2), r"schema"),
    ("not a bench report", _set("kind", "something-else"), r"kind"),
    ("no models", _set("models", []), r"models"),
    ("no p99", _without("models.0.latency_us.p99"), r"p99"),
    ("negative session time", _set("models.0.session_create_ms", -1.0), r"session_create_ms"),
    ("bad sha256", _set("models.0.sha256", "xyz"), r"sha256"),
    ("bad created_at", _set("created_at", "yesterday"), r"created_at"),
]


@pytest.fixture(params=["job", "own"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Refusals hold with the job's schema check (benchmarks.device.load_report) and with ingest's own checks alone."""
    if request.param == "own":
        monkeypatch.setattr(bench_results, "_job_loader", lambda: None)
    else:
        assert bench_results._job_loader() is not None
    return str(request.param)


@pytest.mark.parametrize(("case", "edit", "field"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_report_is_refused_naming_the_file_and_field_and_nothing_is_attached(
    client: MlflowClient, write: Callable[..., Path], loader: str, case: str, edit: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    good = write(report(entry("cta-1", version=v1)), "good.json")
    data = copy.deepcopy(report(entry("cta-1", version=v1)))
    edit(data)
    bad = write(data, "bad.json")
    with pytest.raises(CarryonError, match=rf"bad\.json.*{field}"):
        ingest_reports(client, [good, bad], BENCH)
    assert not any(k.startswith("carryon.bench.") for k in version_tags(client, CTA_MODEL, v1))


def test_a_report_for_a_version_that_does_not_exist_is_refused(
    client: MlflowClient, write: Callable[..., Path], loader: str
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    path = write(report(entry("cta-1", version=v1), entry("cta-9", version=9)), "unknown.json")
    with pytest.raises(CarryonError, match=r"unknown\.json: cta/v9/model\.onnx \(cta version 9, sha256 "
                                           rf"{sha('cta-9')[:12]}\.\.\.\) matches no registered model version.*"
                                           r"data/export"):
        ingest_reports(client, [path], BENCH)
    assert not any(k.startswith("carryon.bench.") for k in version_tags(client, CTA_MODEL, v1))


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b"", b'{"schema": 1}'])
def test_unreadable_reports_are_refused(client: MlflowClient, tmp_path: Path, loader: str, content: bytes) -> None:
    (tmp_path / "bad.json").write_bytes(content)
    with pytest.raises(CarryonError, match=r"bad\.json.*(JSON|bench report|benchmark report)"):
        ingest_reports(client, [tmp_path / "bad.json"], BENCH)
    with pytest.raises(CarryonError, match=r"missing\.json"):
        ingest_reports(client, [tmp_path / "missing.json"], BENCH)


def test_one_path_instead_of_a_list_is_a_caller_mistake(client: MlflowClient, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="sequence of paths"):
        ingest_reports(client, tmp_path / "r.json", BENCH)  # type: ignore[arg-type]


# --- Pareto --------------------------------------------------------------------------------------


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and a != b


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20).map(lambda q: q / 20), st.integers(1, 20).map(float)), max_size=25))
def test_no_point_on_the_front_is_dominated_and_every_other_point_is(points: list[tuple[float, float]]) -> None:
    front = pareto_front(points)
    assert len(front) == len(points)
    for point, on in zip(points, front, strict=True):
        dominated = any(_dominates(other, point) for other in points)
        assert on is not dominated
    if points:
        best = max(points, key=lambda p: (p[0], -p[1]))
        assert front[points.index(best)]  # the best quality at its lowest latency is always on the front


def test_the_front_on_fixed_points() -> None:
    points = [(0.70, 100.0), (0.75, 300.0), (0.72, 400.0), (0.70, 100.0), (0.60, 50.0), (0.60, 80.0)]
    assert pareto_front(points) == [True, True, False, True, True, False]


def _row(version: int, auc: float, devices: dict[str, tuple[str, bool, float]]) -> VersionRow:
    metrics = {"auc": auc}
    tags = {}
    for device, (profile, emulated, p95) in devices.items():
        tags[f"carryon.bench.{device}.profile"] = profile
        tags[f"carryon.bench.{device}.emulated"] = str(emulated).lower()
        metrics[metric_name("p95_us", device, emulated=emulated)] = p95
        metrics[metric_name("size_bytes", device, emulated=emulated)] = 1000.0 * version
    return VersionRow(CTA_MODEL, version, "run", "logreg", CREATED, (), metrics, "passed", tags)


def test_pareto_rows_use_one_real_device_of_the_profile() -> None:
    rows = [_row(1, 0.70, {"a": ("laptop", False, 100.0), "qemu": ("laptop", True, 10.0)}),
            _row(2, 0.75, {"a": ("laptop", False, 300.0), "b": ("laptop", False, 1.0)}),
            _row(3, 0.72, {"a": ("laptop", False, 400.0)}),
            _row(4, 0.90, {"p": ("phone-low", False, 1.0)}),
            _row(5, float("nan"), {"a": ("laptop", False, 1.0)})]
    assert [d.device_id for d in measured_devices(rows[0])] == ["a", "qemu"]
    device, points = pareto_rows(rows, "auc", "laptop")
    assert device == "a"  # it measured the most versions
    assert points == [ParetoRow(1, "logreg", 0.70, 100.0, 1000, True), ParetoRow(2, "logreg", 0.75, 300.0, 2000, True),
                      ParetoRow(3, "logreg", 0.72, 400.0, 3000, False)]
    assert pareto_rows(rows, "auc", "laptop", "b")[1] == [ParetoRow(2, "logreg", 0.75, 1.0, 2000, True)]
    assert pareto_rows(rows, "auc", "arm-rig") == (None, [])


def test_write_pareto_writes_the_plot_data_and_figure_and_the_report_shows_them(
    client: MlflowClient, write: Callable[..., Path], tmp_path: Path
) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1", {**GOOD, "auc": 0.70}, family="logreg")
    v2 = exported(client, CTA_MODEL, "cta-2", {**GOOD, "auc": 0.75}, family="lgbm")
    v3 = exported(client, CTA_MODEL, "cta-3", {**GOOD, "auc": 0.72}, family="mlp")
    exported(client, BONUS_MODEL, "bonus-1", {"ndcg_at_5": 0.5})
    ingest_reports(client, [write(report(entry("cta-1", version=v1, p95=100.0), entry("cta-2", version=v2, p95=300.0),
                                         entry("cta-3", version=v3, p95=400.0)))], BENCH)
    out = tmp_path / "metrics"

    summary = write_pareto(client, {CTA_MODEL: "auc", BONUS_MODEL: "ndcg_at_5"}, "laptop", out)

    data = json.loads((out / "bench_pareto_cta.json").read_text())
    assert (data["metric"], data["profile"], data["device_id"]) == ("auc", "laptop", DEVICE)
    assert [(r["version"], r["family"], r["on_front"]) for r in data["rows"]] == [
        (v1, "logreg", True), (v2, "lgbm", True), (v3, "mlp", False)]
    assert data["rows"][0] == {"version": v1, "family": "logreg", "quality": 0.70, "p95_us": 100.0,
                               "size_bytes": 4096, "on_front": True}
    assert summary["models"][CTA_MODEL]["front"] == [v1, v2]
    empty = json.loads((out / "bench_pareto_bonus-ranker.json").read_text())
    assert (empty["device_id"], empty["rows"]) == (None, [])
    for name in (CTA_MODEL, BONUS_MODEL):
        assert (out / f"bench_pareto_{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert client.get_registered_model(name).tags[TAG_PARETO_RUN] == summary["run_id"]

    write_reports(client, [CTA_MODEL], tmp_path / "reports")
    page = (tmp_path / "reports" / "cta.html").read_text()
    section = page[page.index('<section id="pareto">'):]
    section = section[:section.index("</section>")]
    assert "data:image/png;base64," in section
    assert section.count("<tr><td>") == 3 and "<td>0.7500</td><td>300 µs</td>" in section
    assert str(tmp_path) not in page
    assert f"on {DEVICE}" in page  # the versions' own speed lines read the same metrics


def test_without_benchmarks_the_report_has_no_pareto_section(client: MlflowClient, tmp_path: Path) -> None:
    exported(client, CTA_MODEL, "cta-1")
    assert pareto_section(client, CTA_MODEL) == ""
    write_reports(client, [CTA_MODEL], tmp_path)
    assert 'id="pareto"' not in (tmp_path / "cta.html").read_text()


def test_a_broken_pareto_run_is_named_not_fatal(client: MlflowClient) -> None:
    exported(client, CTA_MODEL, "cta-1")
    client.set_registered_model_tag(CTA_MODEL, TAG_PARETO_RUN, "0" * 32)
    assert "could not be read" in pareto_section(client, CTA_MODEL)


def test_list_versions_sees_the_bench_tags(client: MlflowClient, write: Callable[..., Path]) -> None:
    v1 = exported(client, CTA_MODEL, "cta-1")
    ingest_reports(client, [write(report(entry("cta-1", version=v1)))], BENCH)
    (row,) = list_versions(client, CTA_MODEL)
    (device,) = measured_devices(row)
    assert (device.device_id, device.profile, device.emulated) == (DEVICE, "laptop", False)
    assert device.figures["p99_us"] == 150.0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([0, -1, 10**400]) | st.floats(allow_nan=True)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)


def _leaves(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found = [prefix] if prefix else []
    for key, value in items:
        found += _leaves(value, (*prefix, key))
    return found


@pytest.mark.parametrize("own", [False, True], ids=["job", "own"])
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_any_edit_of_a_report_is_read_or_refused_with_a_carryon_error(own: bool, data: st.DataObject) -> None:
    from unittest import mock

    doc = report(entry("cta-1"), entry("cta-2", fmt="ort"))
    where = data.draw(st.sampled_from(_leaves(doc)))
    node: Any = doc
    for key in where[:-1]:
        node = node[key]
    if data.draw(st.booleans()) and isinstance(node, dict):
        del node[where[-1]]
    else:
        node[where[-1]] = data.draw(JSON_VALUES)
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(
        bench_results, "_job_loader", (lambda: None) if own else bench_results._job_loader
    ):
        path = Path(tmp) / "edited.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        refusal: CarryonError | None = None
        try:
            loaded = bench_results._load(path)
        except CarryonError as e:
            refusal = e
    if refusal is not None:
        assert "edited.json" in str(refusal)
    else:
        assert loaded.models and all(len(m.sha256) == 64 for m in loaded.models)
