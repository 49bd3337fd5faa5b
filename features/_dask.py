"""The Dask engine: the stages' own per-partition functions, mapped on a dask.distributed cluster.

Nothing here computes a feature or judges a record; it only starts (or joins) a cluster
and maps picklable, module-level functions over partitions, yielding results in
partition order, so every output is written exactly as the local engine writes it.
Dask is imported only here, and only when this engine is chosen (``pip install
'carryon[scale]'``). Workers read and write the paths they are given: on a remote
cluster, the data directory must be on storage every worker sees.

    >>> with dask_client(DaskSettings(None, workers=2)) as client:
    ...     build_features(clean, catalog, out, config, partition_map=dask_map(client))

A worker that dies mid-task is not an error here: the scheduler reruns its tasks on
another worker (``distributed.scheduler.allowed-failures`` times, 3 by default), and
only then does the job fail.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from features._engine import PartitionMap
from features.errors import CarryonError, ConfigError

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
R = TypeVar("R")

SCALE_EXTRA = "the Dask engine needs the 'scale' extra: pip install 'carryon[scale]' (or use --engine local)"


LARGE_GRAPH = "Sending large graph"  # distributed's warning about data inside tasks, which we want there


class EngineUnavailableError(CarryonError):
    """The chosen engine cannot run here (its packages are missing, or its scheduler is unreachable)."""


@dataclass(frozen=True)
class DaskSettings:
    """Where the work runs: a scheduler address, or a LocalCluster of worker processes."""

    scheduler: str | None = None  # tcp://host:8786; None = start a LocalCluster for this run
    workers: int = 2  # LocalCluster worker processes
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1 or self.threads_per_worker < 1:
            raise ConfigError(
                f"scale.workers and scale.threads_per_worker must be >= 1, got {self.workers} and "
                f"{self.threads_per_worker}; fix params.yaml"
            )


def require_dask() -> None:
    """Raise :class:`EngineUnavailableError` (naming the extra) unless dask.distributed imports."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as e:
        raise EngineUnavailableError(f"{SCALE_EXTRA} ({e})") from e


@contextlib.contextmanager
def dask_client(settings: DaskSettings) -> Iterator[Client]:
    """A client of the configured scheduler, or of a LocalCluster started (and closed) here."""
    require_dask()
    from distributed import Client, LocalCluster

    if settings.scheduler is not None:
        try:
            client = Client(settings.scheduler, timeout="20s")  # type: ignore[no-untyped-call]
        except OSError as e:
            raise EngineUnavailableError(
                f"scale.scheduler {settings.scheduler}: cannot reach the Dask scheduler ({e}); "
                "start it (`dask scheduler`) or set scale.scheduler: null for a LocalCluster"
            ) from e
        with client:
            yield client
        return
    with _stdout_to_stderr():  # the worker processes inherit it: stdout stays the command's result
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=settings.workers, threads_per_worker=settings.threads_per_worker, processes=True,
            dashboard_address="127.0.0.1:0", host="127.0.0.1",  # loopback; any free port (runs side by side)
        )
    with cluster, Client(cluster, direct_to_workers=True) as client:  # type: ignore[no-untyped-call]
        yield client


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr meanwhile (native libraries in workers print there)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def dask_map(client: Client, window: int | None = None) -> PartitionMap:
    """A :class:`~features._engine.PartitionMap` that runs each call as one task on ``client``.

    At most ``window`` tasks are in flight (default: twice the cluster's threads), so the
    driver holds only a few partitions' inputs and results at once.
    """

    def run(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        limit = window or 2 * max(1, sum(client.nthreads().values()))  # type: ignore[no-untyped-call]
        pending: deque[Any] = deque()
        try:
            for item in items:
                # The item travels inside the task (not scattered): if its worker dies, the
                # scheduler still holds everything needed to run the task again elsewhere.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", LARGE_GRAPH, UserWarning)
                    pending.append(client.submit(fn, item, pure=False))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # on an error (here or downstream), stop the tasks still queued
            if pending:
                client.cancel(list(pending))  # type: ignore[no-untyped-call]

    return run


@contextlib.contextmanager
def engine_client(engine: str, settings: DaskSettings) -> Iterator[Client | None]:
    """None for the local engine; for ``dask``, a client as :func:`dask_client` opens it."""
    if engine == "local":
        yield None
        return
    if engine != "dask":
        raise ConfigError(f"engine must be 'local' or 'dask', got {engine!r}; fix scale.engine or --engine")
    with dask_client(settings) as client:
        yield client
