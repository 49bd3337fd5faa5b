"""The one place MLflow is configured: where the tracking store lives and how it is opened.

By default an embedded SQLite store inside the project (``mlflow/mlflow.db``, artifacts
in ``mlflow/artifacts``); ``MLFLOW_TRACKING_URI`` overrides it. Opening initialises the
schema once under a file lock, applies a busy timeout, and turns an unreachable or
invalid store into one ``TrackingError``.

    >>> client = open_tracking(Path("."), os.environ)
    >>> experiment(client, "cta")
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from features.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "BONUS_MODEL",
    "BUSY_TIMEOUT_S",
    "CTA_MODEL",
    "EXPERIMENTS",
    "TAG_FAMILY",
    "TAG_GATES",
    "Kind",
    "TrackingError",
    "artifact_location",
    "ensure_experiment",
    "experiment",
    "model_kind",
    "open_tracking",
    "store_failure",
    "tracking_uri",
]

Kind = Literal["cta", "bonus"]

CTA_MODEL: Final = "cta"  # registered model of the CTA candidates
BONUS_MODEL: Final = "bonus-ranker"  # registered model of the bonus-ranking candidates
EXPERIMENTS: Final[Mapping[str, str]] = {"cta": "carryon-cta", "bonus": "carryon-bonus-ranker"}

TAG_FAMILY: Final = "carryon.family"  # run tag: candidate family (logreg, lgbm, mlp, ...)
TAG_GATES: Final = "carryon.gates"  # run (or version) tag: "passed" or "failed"

BUSY_TIMEOUT_S: Final = 60.0  # how long a SQLite writer waits for another process's lock
STORE_DIR: Final = "mlflow"  # embedded store, relative to the project directory
DB_NAME: Final = "mlflow.db"
ARTIFACTS_DIR: Final = "artifacts"  # beside the database file

_CHECK_ENV: Final[Mapping[str, str]] = {  # MLflow's HTTP client, for the reachability check only
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
_FIX_SQLITE: Final = "set MLFLOW_TRACKING_URI to a writable sqlite:/// file, or unset it for the embedded store"
_FIX_OTHER: Final = (
    "start that tracking server or set MLFLOW_TRACKING_URI to a reachable one (http://, https://, "
    "postgresql://, sqlite:///...), or unset it for the embedded store"
)
_opened: set[str] = set()
_opened_lock = threading.Lock()


class TrackingError(ConfigError):
    """The MLflow tracking store cannot be reached, created or opened."""


def tracking_uri(project_dir: Path, environ: Mapping[str, str]) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store; SQLite URIs get the busy timeout."""
    given = environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not given:
        db = (Path(project_dir) / STORE_DIR / DB_NAME).resolve()
        return f"sqlite:///{db.as_posix()}?timeout={BUSY_TIMEOUT_S:g}"
    if given.startswith("sqlite:") and "timeout" not in dict(parse_qsl(urlsplit(given).query)):
        return f"{given}{'&' if '?' in given else '?'}timeout={BUSY_TIMEOUT_S:g}"
    return given


def artifact_location(uri: str) -> str | None:
    """Where new experiments keep artifacts: beside a SQLite database; the server's choice otherwise."""
    db = _sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / ARTIFACTS_DIR).as_uri()


def model_kind(name: str) -> Kind:
    """The kind of a registered model: ``bonus`` for ``bonus-ranker`` (and ``bonus-ranker-*``), else ``cta``."""
    return "bonus" if name == BONUS_MODEL or name.startswith(BONUS_MODEL + "-") else "cta"


def open_tracking(project_dir: Path, environ: Mapping[str, str]) -> MlflowClient:
    """Open (and on first use create) the tracking store; point this process's MLflow at it."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    # MLflow would send usage telemetry to its vendor; carryon never talks to the network on
    # its own, so it is off unless the operator set the variable themselves.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # With a tracking server MLflow prints "View run ... at: URL" on stdout at every run's end;
    # stdout is for the command's result (--json), so that line stays out unless asked for.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = tracking_uri(project_dir, environ)
    shown = _shown(uri, project_dir)
    _quiet_mlflow_logs()
    try:
        if _sqlite_path(uri) is not None:
            _open_sqlite(uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        with _temporary_env(_CHECK_ENV):
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
    except (MlflowException, OSError, sqlite3.Error, SQLAlchemyError) as e:
        fix = _FIX_SQLITE if uri.startswith("sqlite:") else _FIX_OTHER
        raise TrackingError(f"cannot use the MLflow tracking store {shown}: {_reason(e)}; {fix}") from e
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return client


def store_failure(uri: str, project_dir: Path, doing: str, error: BaseException) -> TrackingError:
    """One clear error for a store that failed mid-stage: what was being done, the store, the reason, the fix."""
    if uri.startswith("sqlite:"):
        fix = _FIX_SQLITE
    elif _unreachable(error):
        fix = _FIX_OTHER
    else:
        fix = "see the tracking server's log"
    return TrackingError(f"{doing} in the MLflow tracking store {_shown(uri, project_dir)} failed: {_reason(error)}; "
                         f"{fix}; then run the stage again")


def experiment(client: MlflowClient, kind: Kind) -> str:
    """Id of the experiment of a model kind (``carryon-cta`` or ``carryon-bonus-ranker``), created if missing."""
    if kind not in EXPERIMENTS:
        raise ValueError(f"kind must be one of {sorted(EXPERIMENTS)}, got {kind!r}")
    return ensure_experiment(client, EXPERIMENTS[kind])


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Id of the experiment ``name``, created if missing (race-safe); on SQLite its artifacts go to artifacts/<name>."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        root = artifact_location(client.tracking_uri)
        where = None if root is None else f"{root}/{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"
        try:
            return client.create_experiment(name, artifact_location=where)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


# --- SQLite -------------------------------------------------------------------------------------


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _open_sqlite(uri: str) -> None:
    """Create the schema once under ``<db>.lock`` (a new database in WAL mode); sessions wait for locks."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    with _opened_lock:
        if uri in _opened:
            return
        db = _sqlite_path(uri)
        assert db is not None
        db.parent.mkdir(parents=True, exist_ok=True)
        timeout = float(dict(parse_qsl(urlsplit(uri).query)).get("timeout", BUSY_TIMEOUT_S))
        with _file_lock(db.with_name(db.name + ".lock")):
            # Fail fast on a file that is no database: MLflow would retry for about 100 s.
            with contextlib.closing(sqlite3.connect(db, timeout=timeout)) as connection:
                (pages,) = connection.execute("PRAGMA page_count").fetchone()
                if pages == 0:  # a new database: write-ahead log, so readers never block the writer
                    connection.execute("PRAGMA journal_mode=WAL").fetchone()
            artifacts = artifact_location(uri)
            tracking = TrackingStore(uri, artifacts)  # type: ignore[no-untyped-call]
            registry = RegistryStore(uri)  # type: ignore[no-untyped-call]
        for engine in {id(tracking.engine): tracking.engine, id(registry.engine): registry.engine}.values():
            _apply_busy_timeout(engine, timeout)
        _opened.add(uri)


_MLFLOW_BUSY_PRAGMA = re.compile(r"^\s*PRAGMA\s+busy_timeout\s*=\s*\d+\s*;?\s*$", re.IGNORECASE)


def _apply_busy_timeout(engine: Any, timeout_s: float) -> None:
    """MLflow sets ``PRAGMA busy_timeout = 20000`` on every session; make it ours instead."""
    from sqlalchemy import event

    pragma = f"PRAGMA busy_timeout = {round(timeout_s * 1000)};"

    def rewrite(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> tuple[str, Any]:
        if _MLFLOW_BUSY_PRAGMA.match(statement):
            return pragma, parameters
        return statement, parameters

    event.listen(engine, "before_cursor_execute", rewrite, retval=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _quiet_mlflow_logs() -> None:
    """Schema creation and migrations log at INFO on stderr; keep the CLI's stderr for errors."""
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _shown(uri: str, project_dir: Path) -> str:
    """The URI as it may appear in messages: project paths relative, credentials removed."""
    db = _sqlite_path(uri)
    if db is not None:
        try:
            return f"sqlite:///{db.resolve().relative_to(Path(project_dir).resolve()).as_posix()} (in the project)"
        except ValueError:
            return uri.split("?", 1)[0]
    parts = urlsplit(uri)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return uri


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"'()]+)")
# The server went away mid-request (killed while answering counts too: the body stops short).
_DROPPED = ("Connection aborted", "RemoteDisconnected", "Read timed out", "Connection reset", "Connection broken",
            "IncompleteRead")


def _unreachable(error: BaseException) -> bool:
    """The HTTP client gave up on the server (refused, dropped or timed out), as opposed to an answer it gave."""
    text = str(getattr(error, "message", "") or error)
    refused = _ERRNO.search(text) is not None and ("Max retries exceeded" in text or "ConnectionError" in text)
    return refused or any(mark in text for mark in _DROPPED)  # not "too many 500 error responses": it answered


def _reason(error: BaseException) -> str:
    """One short line: the OS reason of a failed connection, else the first line of the message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # its filename is absolute; the message names the store already
    text = str(getattr(error, "message", "") or error)
    errno = _ERRNO.search(text)
    if errno and ("Max retries exceeded" in text or "ConnectionError" in text):
        return f"no server answers ({errno.group(1).strip()})"
    if any(mark in text for mark in _DROPPED):
        return "the server dropped the connection or did not answer in time"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    return first if len(first) <= 300 else first[:297] + "..."
