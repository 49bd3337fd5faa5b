"""A shared MLflow for tests: PostgreSQL (Debian's package) and ``mlflow server`` on it, both on loopback.

``Postgres(workdir).start()`` runs ``initdb`` and ``postgres`` on a free 127.0.0.1 port (TCP only, trust
for the loopback user ``mlflow``) and creates the database ``mlflow``; PostgreSQL refuses to run as root,
so as root its data directory is a fresh temp dir owned by the ``postgres`` user and the server runs as
that user. ``MlflowServer(backend_uri, workdir).start()`` runs ``mlflow server`` with that backend store
and served artifacts under ``workdir/artifacts`` on a free port and waits for ``/health``; ``kill()`` is a
kill -9 of the whole server (a crash), ``start()`` brings it back on the same port. ``shared_mlflow``
does both and stops them. PostgreSQL is installed with apt-get when missing (tests/debian.py).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from debian import ensure_program

START_TIMEOUT_S: Final = 180.0  # mlflow server's first start migrates an empty database; CPUs are shared
STOP_TIMEOUT_S: Final = 30.0
PG_VERSIONS: Final = (17, 16, 15, 14, 13)  # Debian puts the server binaries here, not on PATH
DATABASE: Final = "mlflow"
DB_USER: Final = "mlflow"
# The server's background job runner (a dozen huey processes) serves GenAI features carryon does not use.
SERVER_ENV: Final = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_binaries() -> Path:
    """The directory holding ``postgres`` and ``initdb``; installs Debian's postgresql when missing."""
    paths = [Path(f"/usr/lib/postgresql/{v}/bin/postgres") for v in PG_VERSIONS]
    found = ensure_program(["postgres"], "postgresql", "for the shared-MLflow tests (backend store)", paths)
    return Path(found).resolve().parent


def _as_postgres_user() -> dict[str, Any]:
    """Popen arguments that drop root to the ``postgres`` user (PostgreSQL refuses root); none otherwise."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": pwd.getpwnam("postgres").pw_gid, "extra_groups": []}


class Postgres:
    """One PostgreSQL server on 127.0.0.1 with an empty database ``mlflow``."""

    def __init__(self, workdir: Path) -> None:
        self.bin = _postgres_binaries()
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.home: Path | None = None  # data dir's parent; a temp dir the server's user owns

    @property
    def uri(self) -> str:
        """SQLAlchemy URI for MLflow; psycopg2 named, since SQLAlchemy 2.1 defaults to psycopg 3."""
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> Postgres:
        run_as = _as_postgres_user()
        if run_as:
            # pytest's tmp dirs are private to root; the postgres user needs a dir of its own.
            self.home = Path(tempfile.mkdtemp(prefix="carryon-pg-"))
            entry = pwd.getpwnam("postgres")
            os.chown(self.home, entry.pw_uid, entry.pw_gid)
        else:
            self.home = self.workdir / "pg"
            self.home.mkdir(parents=True, exist_ok=True)
        data = self.home / "data"
        done = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            cwd=self.home, capture_output=True, text=True, check=False, timeout=120, **run_as,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 (the server writes to it until it stops)
        try:
            self.proc = subprocess.Popen(
                # A throwaway test cluster: no fsync, no Unix socket, loopback TCP only.
                [str(self.bin / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port), "-k", "",
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
                cwd=self.home, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **run_as,
            )
        finally:
            log.close()
        self._create_database()
        return self

    def _create_database(self) -> None:
        """Wait until the server accepts connections (``pg_isready``), then ``createdb``, as an operator would."""
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start (status {self.proc.returncode}): {self.log_tail()}")
            ready = subprocess.run([str(self.bin / "pg_isready"), *address, "-d", "postgres", "-t", "2"],
                                   capture_output=True, check=False, timeout=30)
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        done = subprocess.run([str(self.bin / "createdb"), *address, DATABASE], capture_output=True, text=True,
                              check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"createdb failed (exit {done.returncode}): {done.stderr[-1500:]}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "postgres.log").read_text(encoding="utf-8", errors="replace")[-1500:]
        return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), then remove the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc = None
        if self.home is not None and self.home != self.workdir / "pg":
            shutil.rmtree(self.home, ignore_errors=True)
        self.home = None


def _mlflow_command() -> list[str]:
    beside = Path(sys.executable).with_name("mlflow")
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "mlflow"]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a database backend store and served artifacts."""

    def __init__(self, backend_uri: str, workdir: Path) -> None:
        self.backend_uri = backend_uri
        self.workdir = workdir
        self.artifacts = workdir / "artifacts"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []  # seconds each start took until /health answered

    def command(self) -> list[str]:
        return [*_mlflow_command(), "server", "--backend-store-uri", self.backend_uri, "--serve-artifacts",
                "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1"]

    def start(self) -> MlflowServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | SERVER_ENV
        began = time.monotonic()
        with open(self.workdir / "mlflow-server.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,  # the CLI and its uvicorn: one group to kill
            )
        deadline = began + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited at start (status {self.proc.returncode}): {self.log_tail()}")
            if self.healthy():
                self.starts.append(time.monotonic() - began)
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"mlflow server did not answer on {self.url} within {START_TIMEOUT_S:g} s: "
                           f"{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2.0) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "mlflow-server.log").read_text(encoding="utf-8", errors="replace")[-1500:]
        return ""

    def kill(self) -> None:
        """kill -9 the server and its worker at once (a crash: no request finishes)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc = None

    def stop(self) -> None:
        self.kill()  # a test server holds nothing that a graceful stop would save


@dataclass(frozen=True)
class SharedMlflow:
    postgres: Postgres
    server: MlflowServer

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def shared_mlflow(workdir: Path) -> Iterator[SharedMlflow]:
    """PostgreSQL and an MLflow server on it, stopped (and the cluster removed) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    postgres = Postgres(workdir)
    server: MlflowServer | None = None
    try:
        postgres.start()
        server = MlflowServer(postgres.uri, workdir).start()
        yield SharedMlflow(postgres, server)
    finally:
        if server is not None:
            server.stop()
        postgres.stop()
