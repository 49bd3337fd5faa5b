"""pipeline.tracking: where the MLflow store lives, opening it safely, and a model's round trip."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest

from pipeline.tracking import (
    BONUS_MODEL,
    BUSY_TIMEOUT_S,
    CTA_MODEL,
    TrackingError,
    artifact_location,
    experiment,
    model_kind,
    open_tracking,
    tracking_uri,
)

# --- where the store lives ------------------------------------------------------------------------


def test_default_store_is_sqlite_inside_the_project(tmp_path: Path) -> None:
    uri = tracking_uri(tmp_path, {})
    assert uri == f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').resolve().as_posix()}?timeout=60"
    assert artifact_location(uri) == (tmp_path / "mlflow" / "artifacts").resolve().as_uri()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////srv/m.db", "sqlite:////srv/m.db?timeout=60"),
        ("sqlite:////srv/m.db?timeout=5", "sqlite:////srv/m.db?timeout=5"),
        ("sqlite:////srv/m.db?cache=shared", "sqlite:////srv/m.db?cache=shared&timeout=60"),
        ("  ", None),  # blank: the embedded store
    ],
)
def test_environment_wins(tmp_path: Path, given: str, expected: str | None) -> None:
    uri = tracking_uri(tmp_path, {"MLFLOW_TRACKING_URI": given})
    assert uri == (expected or tracking_uri(tmp_path, {}))


def test_artifacts_follow_a_sqlite_store_only() -> None:
    assert artifact_location("sqlite:////srv/x/m.db?timeout=60") == "file:///srv/x/artifacts"
    assert artifact_location("http://127.0.0.1:5000") is None
    assert artifact_location("postgresql://u@h/db") is None


def test_model_kind_of_registered_names() -> None:
    assert model_kind(CTA_MODEL) == "cta"
    assert model_kind(BONUS_MODEL) == "bonus"
    assert model_kind(BONUS_MODEL + "-creator-7") == "bonus"
    assert model_kind("cta-creator-7") == "cta"


# --- opening ------------------------------------------------------------------------------------


def test_open_creates_the_store_and_experiments_once(tmp_path: Path) -> None:
    client = open_tracking(tmp_path, {})
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    assert mlflow.get_tracking_uri() == client.tracking_uri == tracking_uri(tmp_path, {})
    cta, bonus = experiment(client, "cta"), experiment(client, "bonus")
    assert cta != bonus
    assert experiment(client, "cta") == cta
    assert client.get_experiment(cta).name == "carryon-cta"
    assert client.get_experiment(bonus).name == "carryon-bonus-ranker"
    location = client.get_experiment(cta).artifact_location
    assert location == (tmp_path / "mlflow" / "artifacts" / "carryon-cta").resolve().as_uri()
    with pytest.raises(ValueError, match="kind must be one of"):
        experiment(client, "ranker")  # type: ignore[arg-type]


def test_busy_timeout_is_in_effect(tmp_path: Path) -> None:
    """MLflow sets its own 20 s busy timeout on every session; ours must be the one in force."""
    import sqlalchemy
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    client = open_tracking(tmp_path, {})
    uri = client.tracking_uri
    for store in (TrackingStore(uri, artifact_location(uri)), RegistryStore(uri)):
        with store.ManagedSessionMaker() as session:
            (ms,) = session.execute(sqlalchemy.text("PRAGMA busy_timeout")).one()
        assert ms == round(BUSY_TIMEOUT_S * 1000)


def test_a_writer_waits_for_another_process_lock(tmp_path: Path) -> None:
    """A write lock held elsewhere for a moment delays a write; it does not fail it."""
    client = open_tracking(tmp_path, {})
    blocker = sqlite3.connect(tmp_path / "mlflow" / "mlflow.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.5, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        experiment_id = client.create_experiment("waited")
        waited = time.monotonic() - started
    finally:
        release.join()
        blocker.close()
    assert client.get_experiment(experiment_id).name == "waited"
    assert waited >= 1.0


@pytest.mark.parametrize(
    ("make_uri", "match"),
    [
        (lambda d: "http://127.0.0.1:9", r"http://127\.0\.0\.1:9: no server answers"),
        (lambda d: f"sqlite:///{d}/a-file/sub/mlflow.db", r"a-file/sub/mlflow\.db: Not a directory"),
        (lambda d: f"sqlite:///{d}/not-a-db.db", r"not-a-db\.db: file is not a database"),
        (lambda d: "nosuchscheme://x", r"nosuchscheme://x: .*unsupported URI"),
    ],
    ids=["refused-http", "path-under-a-file", "not-a-database", "unknown-scheme"],
)
def test_unusable_store_is_one_clear_error_fast(tmp_path: Path, make_uri: Any, match: str) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "not-a-db.db").write_text("not sqlite " * 50)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=match) as caught:
        open_tracking(tmp_path / "project", {"MLFLOW_TRACKING_URI": make_uri(tmp_path)})
    assert time.monotonic() - started < 30  # MLflow's own retries would take minutes
    assert "MLFLOW_TRACKING_URI" in str(caught.value)  # the fix
    assert "\n" not in str(caught.value)
    # Nothing was damaged or half-created.
    assert (tmp_path / "not-a-db.db").read_text() == "not sqlite " * 50
    assert not (tmp_path / "project").exists()


def test_default_store_error_names_the_project_relative_path(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.write_text("a file where the project directory should be")
    with pytest.raises(TrackingError, match=r"sqlite:///mlflow/mlflow\.db \(in the project\)") as caught:
        open_tracking(project, {})
    assert str(tmp_path) not in str(caught.value)


def test_credentials_never_reach_the_message(tmp_path: Path) -> None:
    with pytest.raises(TrackingError) as caught:
        open_tracking(tmp_path, {"MLFLOW_TRACKING_URI": "http://ana:s3cret@127.0.0.1:9"})
    assert "s3cret" not in str(caught.value)
    assert "http://127.0.0.1:9" in str(caught.value)


# --- several processes on a fresh store ---------------------------------------------------------

WORKERS = 4
RUNS_PER_WORKER = 2


def _worker(project: str, ready: Any, start: Any, results: Any, index: int) -> None:
    """Open a fresh store at the same moment as the others; log runs; register versions."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 (the slow imports, before the start)
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import CTA_MODEL, experiment, open_tracking

    ready.put(index)
    start.wait(120)
    try:
        client = open_tracking(Path(project), {})
        experiment_id = experiment(client, "cta")
        try:
            client.create_registered_model(CTA_MODEL)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        out = []
        for n in range(RUNS_PER_WORKER):
            run = client.create_run(experiment_id, tags={"worker": str(index)})
            client.log_param(run.info.run_id, "n", str(n))
            client.log_metric(run.info.run_id, "auc", 0.5 + index / 100 + n / 1000)
            client.set_terminated(run.info.run_id)
            version = client.create_model_version(
                CTA_MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
            out.append((run.info.run_id, int(version.version)))
        results.put((index, "ok", out))
    except Exception as e:  # report any failure to the parent, which asserts on it
        results.put((index, "error", f"{type(e).__name__}: {e}"))


@pytest.mark.slow
def test_several_processes_on_a_fresh_store(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    processes = [
        context.Process(target=_worker, args=(str(tmp_path), ready, start, results, i)) for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    assert sorted(ready.get(timeout=120) for _ in processes) == list(range(WORKERS))
    assert not (tmp_path / "mlflow").exists()
    start.set()  # all at once, on a database that does not exist yet
    reports = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    errors = [r for r in reports if r[1] != "ok"]
    assert errors == []
    logged = [pair for _, _, pairs in reports for pair in pairs]
    assert len(logged) == WORKERS * RUNS_PER_WORKER

    client = open_tracking(tmp_path, {})
    runs = client.search_runs([experiment(client, "cta")], max_results=100)
    assert {run.info.run_id for run in runs} == {run_id for run_id, _ in logged}
    assert all(run.data.metrics["auc"] >= 0.5 and "n" in run.data.params for run in runs)
    versions = client.search_model_versions(f"name = '{CTA_MODEL}'")
    numbers = sorted(int(v.version) for v in versions)
    assert numbers == list(range(1, WORKERS * RUNS_PER_WORKER + 1))  # unique, none lost
    assert {(v.run_id, int(v.version)) for v in versions} == set(logged)


# --- the round trip -----------------------------------------------------------------------------


def test_mlflow_round_trip(tmp_path: Path) -> None:
    """Log a scikit-learn model with a synthetic example and signature, register, alias, load back."""
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    client = open_tracking(tmp_path, {})
    rng = np.random.default_rng(7)
    features = rng.normal(size=(300, 5)).astype(np.float32)
    labels = (features[:, 0] - 0.5 * features[:, 3] + rng.normal(scale=0.5, size=300) > 0).astype(np.int64)
    model = LogisticRegression().fit(features, labels)
    example = rng.normal(size=(4, 5)).astype(np.float32)  # synthetic: no training row
    signature = infer_signature(example, model.predict_proba(example))

    with mlflow.start_run(experiment_id=experiment(client, "cta")) as run:
        info = mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=example, pip_requirements=["scikit-learn"]
        )
    version = mlflow.register_model(info.model_uri, CTA_MODEL)
    assert version.run_id == run.info.run_id
    client.set_registered_model_alias(CTA_MODEL, "candidate", version.version)

    loaded = mlflow.sklearn.load_model(f"models:/{CTA_MODEL}@candidate")
    probe = rng.normal(size=(50, 5)).astype(np.float32)
    assert np.array_equal(loaded.predict_proba(probe), model.predict_proba(probe))
    generic = mlflow.pyfunc.load_model(f"models:/{CTA_MODEL}@candidate")
    assert np.array_equal(np.asarray(generic.predict(probe)), model.predict(probe))
    assert generic.metadata.get_input_schema().input_types()[0] == np.dtype("float32")
    # The example stored is the synthetic one, not a training row.
    stored = mlflow.models.Model.load(f"models:/{CTA_MODEL}@candidate").load_input_example(
        mlflow.artifacts.download_artifacts(f"models:/{CTA_MODEL}@candidate")
    )
    assert np.array_equal(np.asarray(stored), example)
    assert not any(np.array_equal(row, features[0]) for row in np.asarray(stored))
