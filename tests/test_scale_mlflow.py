"""A shared MLflow: ``mlflow server`` on PostgreSQL with served artifacts, used through MLFLOW_TRACKING_URI.

The pipeline's own commands run unchanged as subprocesses against the server (train, export,
select, models); two trainings log at once and lose nothing; the server is killed (-9) in the
middle of a run, restarted or left down: the run completes or fails with one clear line, and
never leaves half a model version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pg_mlflow import SharedMlflow, shared_mlflow

from pipeline.params import Params, load_params
from tests.world import ROOT, World, run_data_stages

pytestmark = pytest.mark.scale
served = pytest.mark.slow  # the tests that start PostgreSQL and a server (a minute or two in all)

CARRYON = str(Path(sys.executable).with_name("carryon"))
CLI_TIMEOUT_S = 600.0
CTA_FAMILIES = ("logreg", "lightgbm")  # a linear and a tree model; the MLP adds time, not coverage here


@dataclass(frozen=True)
class Project:
    root: Path
    world: World
    mlflow: SharedMlflow
    loaded: set[tuple[str, int]] = field(default_factory=set)  # versions _assert_whole has loaded already

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment with only MLFLOW_TRACKING_URI (and ``extra``) of MLflow's variables."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        return base | {"MLFLOW_TRACKING_URI": self.mlflow.url} | extra

    def carryon(self, *args: str, env: Mapping[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([CARRYON, *args], cwd=self.root, env=dict(env or self.env()), capture_output=True,
                              text=True, timeout=CLI_TIMEOUT_S, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"carryon {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def start(self, *args: str, logs: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``carryon ARGS`` in the background, its output in ``logs``/stdout and ``logs``/stderr."""
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
            return subprocess.Popen([CARRYON, *args], cwd=self.root, env=dict(env or self.env()), stdout=out,
                                    stderr=err)

    def train_cta(self, report: str) -> list[str]:
        return ["train", "cta", "--features", str(self.world.features), "--report", report, "--quiet", "--json"]


def _small_params_yaml(path: Path) -> Params:
    """The project's params.yaml with a tiny world and quick candidates, written to ``path``."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["simulate"].update(creators=3, drops_per_creator=5, viewers_per_drop=150, seed=11, corrupt_fraction=0.0)
    raw["train"].update(cta_families=list(CTA_FAMILIES), bonus_families=["lambdarank"])
    raw["train"]["lightgbm"].update(n_estimators=20)
    raw["train"]["mlp"].update(max_iter=30)
    raw["evaluation"].update(n_bootstrap=50)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_params(path)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("shared-mlflow-project")
    params = _small_params_yaml(root / "params.yaml")
    world = run_data_stages(root / "world", params)
    began = time.monotonic()
    with shared_mlflow(tmp_path_factory.mktemp("shared-mlflow-server")) as server, pytest.MonkeyPatch.context() as mp:
        print(f"\nshared MLflow (PostgreSQL + mlflow server) up in {time.monotonic() - began:.1f} s")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # this process downloads models to check them
        yield Project(root, world, server)


def _client(project: Project) -> Any:
    from pipeline.tracking import open_tracking

    return open_tracking(project.root, {"MLFLOW_TRACKING_URI": project.mlflow.url})


def _report(project: Project, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.root / name).read_text(encoding="utf-8"))
    return data


def _versions(client: Any, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name = '{name}'", max_results=1000), key=lambda v: int(v.version))


def _assert_whole(project: Project, client: Any, name: str, tmp: Path) -> list[int]:
    """Every version of ``name`` is whole (see ``_half``); returns the version numbers, oldest first."""
    versions = _versions(client, name)
    problems = {int(mv.version): why for mv in versions if (why := _half(project, client, mv, tmp))}
    assert problems == {}, f"half versions of {name}: {problems}"
    return [int(mv.version) for mv in versions]


def _half(project: Project, client: Any, mv: Any, tmp: Path) -> str | None:
    """Why a version is not whole: not READY, its run unfinished, its model missing, unfinished or not loadable."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if mv.status != "READY":
        return f"status {mv.status}"
    if not mv.run_id:
        return "no run"
    try:
        run = client.get_run(mv.run_id)
        if run.info.status != "FINISHED" or not run.data.metrics:
            return f"run {mv.run_id} is {run.info.status} with {len(run.data.metrics)} metrics"
        if not mv.source.startswith("models:/"):
            return f"source {mv.source} is no logged model"
        model_id = mv.model_id or mv.source.removeprefix("models:/")  # the REST registry returns only the source
        if (status := str(client.get_logged_model(model_id).status)) != "READY":
            return f"logged model {model_id} is {status}"
        if (mv.name, int(mv.version)) in project.loaded:
            return None
        where = tmp / f"{mv.name}-v{mv.version}"
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{mv.name}/{mv.version}", dst_path=str(where)))
        model = mlflow.pyfunc.load_model(str(local))
        probe = np.asarray(mlflow.models.Model.load(str(local)).load_input_example(str(local)))
        if not len(model.predict(probe)) == len(probe) > 0:
            return "the loaded model does not predict"
    except (MlflowException, OSError) as e:
        return f"{type(e).__name__}: {str(e)[:300]}"
    project.loaded.add((mv.name, int(mv.version)))
    return None


# --- the error a stage gives when the store fails mid-run ---------------------------------------------------

_REFUSED = ("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/create failed with exception "
            "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /api/2.0/mlflow/runs/create "
            "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a "
            "new connection: [Errno 111] Connection refused'))")
_DROPPED = ("API request to http://127.0.0.1:9/api/2.0/mlflow-artifacts/artifacts/1/x failed with exception "
            "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))")
_ANSWERED = ("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/create failed with exception "
             "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /api/2.0/mlflow/runs/create "
             "(Caused by ResponseError('too many 500 error responses'))")


@pytest.mark.parametrize(("text", "reason", "fix"), [
    (_REFUSED, "no server answers (Connection refused)", "start that tracking server"),
    (_DROPPED, "the server dropped the connection or did not answer in time", "start that tracking server"),
    (_ANSWERED, "too many 500 error responses", "see the tracking server's log"),
    ("RESOURCE_DOES_NOT_EXIST: Registered Model with name=cta not found", "RESOURCE_DOES_NOT_EXIST",
     "see the tracking server's log"),
], ids=["refused", "dropped", "server-errors", "refused-request"])
def test_a_store_failure_is_one_line_naming_the_store_and_the_fix(text: str, reason: str, fix: str) -> None:
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import TrackingError, store_failure

    error = store_failure("http://ana:s3cret@127.0.0.1:9", Path("."), "recording candidate cta-logreg",
                          MlflowException(text))
    message = str(error)
    assert isinstance(error, TrackingError) and "\n" not in message
    assert message.startswith("recording candidate cta-logreg in the MLflow tracking store http://127.0.0.1:9 failed")
    assert reason in message and fix in message and message.endswith("then run the stage again")
    assert "s3cret" not in message and "0x7f" not in message
    if fix != "start that tracking server":
        assert "start that tracking server" not in message


# --- the pipeline, unchanged ----------------------------------------------------------------------


@served
def test_pipeline_and_models_commands_work_unchanged(project: Project, tmp_path: Path) -> None:
    project.carryon(*project.train_cta("metrics/train_cta.json"))
    project.carryon("train", "bonus", "--features", str(project.world.features), "--report",
                    "metrics/train_bonus.json", "--quiet")
    project.carryon("export", "--features", str(project.world.features), "--out", "data/export", "--report",
                    "metrics/export.json", "--quiet")
    project.carryon("select", "--report", "metrics/select.json")
    assert not (project.root / "mlflow").exists(), "the embedded store was used instead of the server"

    trained = _report(project, "metrics/train_cta.json")["candidates"]
    # the train report says how many rounds each LightGBM candidate got and why (models.rounds)
    [boosted] = [c for c in trained if c["family"] == "lightgbm"]
    assert 1 <= boosted["rounds"]["rounds"] <= 20 and boosted["rounds"]["rounds_rule"]
    assert all("rounds" not in c for c in trained if c["family"] != "lightgbm")
    exported = {(v["name"], v["version"]): v for v in _report(project, "metrics/export.json")["versions"]}
    selected = _report(project, "metrics/select.json")
    listed = json.loads(project.carryon("models", "list", "cta", "--json").stdout)["versions"]
    assert [row["version"] for row in listed] == [c["version"] for c in trained]
    assert {row["family"] for row in listed} == set(CTA_FAMILIES)
    for row in listed:
        export = exported[("cta", row["version"])]
        assert row["gates"] == ("passed" if export["passed"] else "failed")
        assert row["tags"]["carryon.deploy_sha256"] == export["details"]["deploy_sha256"]
        assert row["metrics"]["auc"] == pytest.approx(next(c["metrics"]["auc"] for c in trained
                                                           if c["version"] == row["version"]))
    candidate = selected["cta"]["candidate"]
    assert [row["version"] for row in listed if "candidate" in row["aliases"]] == [candidate]
    bonus = json.loads(project.carryon("models", "list", "bonus-ranker", "--json").stdout)["versions"]
    assert [row["aliases"] for row in bonus] == [["candidate"]]

    promoted = json.loads(project.carryon("models", "promote", "cta", str(candidate), "--force",
                                          "shared MLflow test", "--json").stdout)
    assert promoted["to_version"] == candidate
    listed = json.loads(project.carryon("models", "list", "cta", "--json").stdout)["versions"]
    assert {row["version"]: row["aliases"] for row in listed}[candidate] == ["candidate", "champion"]
    log = json.loads(project.carryon("models", "log", "cta", "--json").stdout)["entries"]
    assert [(e["to_version"], e["reason"]) for e in log] == [(candidate, "shared MLflow test")]

    # Artifacts went through the server to its destination, and come back through it.
    client = _client(project)
    run = client.get_run(trained[0]["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    relative = run.info.artifact_uri.removeprefix("mlflow-artifacts:/").strip("/") + "/feature_names.json"
    with urllib.request.urlopen(f"{project.mlflow.url}/api/2.0/mlflow-artifacts/artifacts/{relative}",
                                timeout=30) as response:
        served = json.loads(response.read())
    on_server = json.loads((project.mlflow.server.artifacts / relative).read_text(encoding="utf-8"))
    assert served == on_server
    assert served["feature_names"] == _spec_names(project)
    assert _assert_whole(project, client, "cta", tmp_path) == [c["version"] for c in trained]


def _spec_names(project: Project) -> list[str]:
    from features.spec import FeatureSpec

    return list(FeatureSpec.load(project.world.features / "feature_spec.json").cta_names)


# --- two pipelines at once --------------------------------------------------------------------------


@served
def test_two_trainings_at_once_lose_nothing(project: Project, tmp_path: Path) -> None:
    client = _client(project)
    before = {int(v.version) for v in _versions(client, "cta")}
    reports = ("metrics/train_cta_a.json", "metrics/train_cta_b.json")
    logs = [tmp_path / Path(report).stem for report in reports]
    running = [project.start(*project.train_cta(report), logs=out) for report, out in zip(reports, logs, strict=True)]
    codes = [proc.wait(timeout=CLI_TIMEOUT_S) for proc in running]
    assert codes == [0, 0], [(out / "stderr").read_text()[-2000:] for out in logs]

    trained = [c for report in reports for c in _report(project, report)["candidates"]]
    assert len(trained) == 2 * len(CTA_FAMILIES)
    numbers = _assert_whole(project, client, "cta", tmp_path)
    assert numbers == list(range(1, len(numbers) + 1))  # unique and contiguous
    assert set(numbers) - before == {c["version"] for c in trained}  # every version is one of ours, none lost
    experiment = client.get_experiment_by_name("carryon-cta").experiment_id
    runs = {r.info.run_id: r for r in client.search_runs([experiment], max_results=1000)}
    for c in trained:
        run = runs[c["run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.metrics == pytest.approx(c["metrics"])
        assert client.get_model_version("cta", str(c["version"])).run_id == c["run_id"]
        assert {a.path for a in client.list_artifacts(c["run_id"])} >= {"feature_names.json", "plots"}


# --- the server killed in the middle of a run ------------------------------------------------------------


def _uploads(artifacts: Path, seen: set[Path], what: str) -> int:
    """How many runs (``what="run"``: <exp>/<run>/...) or logged models (<exp>/models/<id>/...) have new files."""
    fresh = {p.relative_to(artifacts).parts for p in artifacts.rglob("*") if p.is_file() and p not in seen}
    if what == "model":
        return len({parts[2] for parts in fresh if len(parts) > 3 and parts[1] == "models"})
    return len({parts[1] for parts in fresh if parts[1] != "models"})


def _kill_at(project: Project, proc: subprocess.Popen[bytes], seen: set[Path], what: str, nth: int) -> bool:
    """kill -9 the server as soon as files of the ``nth`` run or model land on it; False if that never happened."""
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if _uploads(project.mlflow.server.artifacts, seen, what) >= nth:
            project.mlflow.server.kill()
            return True
        time.sleep(0.05)
    return False


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("carryon: error:")]


@served
@pytest.mark.parametrize(("restart", "what", "nth"), [(True, "model", 1), (False, "run", 2)],
                         ids=["restarted-at-model-upload", "left-down-at-second-run"])
def test_server_killed_mid_run_never_leaves_half_a_version(
    project: Project, tmp_path: Path, restart: bool, what: str, nth: int
) -> None:
    """Killed as the nth candidate's model (or run) starts uploading: before it registers, after others did."""
    client = _client(project)
    before = {int(v.version): v.run_id for v in _versions(client, "cta")}
    report = f"metrics/train_cta_fault_{'restart' if restart else 'down'}.json"
    # Left down: give up after a few quick retries instead of MLflow's default of about four minutes.
    quick = {} if restart else {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                                "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    artifacts = project.mlflow.server.artifacts
    seen = {p for p in artifacts.rglob("*") if p.is_file()}
    proc = project.start(*project.train_cta(report), env=project.env(**quick), logs=tmp_path)
    try:
        killed = _kill_at(project, proc, seen, what, nth)
        if restart:
            project.mlflow.server.start()
        code = proc.wait(timeout=CLI_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        project.mlflow.server.start()  # for the checks below and the tests after
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert killed, f"the training never uploaded {what} {nth}: {stderr[-2000:]}"
    print(f"\nserver {'restarted' if restart else 'left down'} at {what} {nth}: exit {code}")

    if code == 0:
        assert restart, "with the server down for good the run cannot complete"
        trained = json.loads(stdout)["candidates"]
        assert len(trained) == len(CTA_FAMILIES)
    else:
        assert code == 1 and "Traceback" not in stderr, stderr[-3000:]
        errors = _error_lines(stderr)
        assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr[-3000:]
        assert project.mlflow.url in errors[0] and "start that tracking server" in errors[0], errors[0]
        assert not (project.root / report).exists()
        trained = []
    after = _assert_whole(project, client, "cta", tmp_path)  # no half version, whatever happened
    assert {int(v.version): v.run_id for v in _versions(client, "cta") if int(v.version) in before} == before
    new = sorted(set(after) - set(before))
    if code == 0:
        assert new == [c["version"] for c in trained]
    else:
        # Each candidate before the nth was registered whole and is named in the error; the nth was not.
        assert len(new) < len(CTA_FAMILIES), new
        if not restart:
            assert len(new) == nth - 1, new
        named = ", ".join(f"cta version {v}" for v in new) or "none"
        assert f"registered before it: {named})" in errors[0], errors[0]
