"""How the stages run their per-partition work: a ``PartitionMap`` calls one function on
each item and yields the results in item order.

The local engine maps with a small thread pool in this process; ``features._dask`` maps
the very same (picklable, module-level) functions on a Dask cluster. Stage code never
knows which engine runs it.

    >>> list(thread_map(2)(str, [1, 2]))
    ['1', '2']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class PartitionMap(Protocol):
    """Call ``fn`` on every item; yield the results in item order (lazily, so the caller
    can write each one and let it go before the next arrives)."""

    def __call__(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...


def thread_map(workers: int) -> PartitionMap:
    """The local engine: ``workers`` threads in this process (polars and numpy release the GIL)."""

    def run(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            yield from pool.map(fn, items)
        finally:  # on an error downstream, do not compute the items still queued
            pool.shutdown(cancel_futures=True)

    return run
