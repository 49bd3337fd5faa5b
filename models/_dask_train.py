"""LightGBM candidates trained with ``lightgbm.dask`` on a Dask cluster, returned as local models.

:func:`dask_lightgbm_fit` gives a :class:`~models.candidates.LightGBMFit` for
``train_cta``/``train_bonus``: the unfitted model's own parameters go to
``DaskLGBMClassifier``/``DaskLGBMRanker``, the rows are dealt into one partition per worker (for
the ranker whole slates, so every query group stays in one partition, with its sizes in
the matching ``group`` partition; see :func:`deal`), and the fitted estimator comes back
through ``to_local()``: a plain ``LGBMClassifier``/``LGBMRanker``, so metrics, MLflow
recording and export are unchanged. Dask is imported only when this runs.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from features._dask import LARGE_GRAPH
from models.candidates import LightGBMFit

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class Layout:
    """Training rows dealt into partitions, every query group whole in one of them.

    ``order`` reorders the rows so that partition k's rows come k-th; ``row_chunks`` and
    ``group_chunks`` count the rows and the groups of each partition; ``group`` holds the
    group sizes in the new row order.
    """

    order: np.ndarray
    row_chunks: tuple[int, ...]
    group: np.ndarray
    group_chunks: tuple[int, ...]


def deal(sizes: np.ndarray, parts: int) -> Layout:
    """Deal whole groups (``sizes`` in row order; all ones for a classifier) round-robin
    into ``parts`` partitions, keeping their order within each.

    Round-robin, not contiguous blocks: rows come in partition and time order, and
    LightGBM's distributed training finds each feature's bins on one worker's rows, so
    every partition must be a sample of the whole (a block of early drops is not).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if sizes.size == 0 or (sizes < 1).any():
        raise ValueError("sizes must be a non-empty array of group sizes >= 1")
    parts = min(parts, sizes.size)
    part_of_group = np.arange(sizes.size) % parts
    order = np.argsort(np.repeat(part_of_group, sizes), kind="stable")
    by_part = np.argsort(part_of_group, kind="stable")
    row_chunks = np.bincount(part_of_group, weights=sizes, minlength=parts).astype(np.int64)
    group_chunks = np.bincount(part_of_group, minlength=parts)
    return Layout(order, tuple(int(n) for n in row_chunks), sizes[by_part], tuple(int(n) for n in group_chunks))


def _lightgbm_logs_to_logging() -> None:
    """Send LightGBM's Python-side messages to the ``lightgbm`` logger, not stdout (lightgbm.dask
    prints its port search): ``--json`` output stays one document; warnings still reach stderr."""
    lgb.register_logger(logging.getLogger("lightgbm"))


def dask_lightgbm_fit(client: Client, parts: int | None = None) -> LightGBMFit:
    """A LightGBM fitter that trains on ``client``'s workers (``parts`` partitions: default one
    per worker) and returns the local estimator."""

    def fit(model: lgb.LGBMModel, x: np.ndarray, y: np.ndarray, *, group: np.ndarray | None = None,
            **kwargs: Any) -> lgb.LGBMModel:
        import dask.array as da
        from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRanker

        chunked: Any = da.from_array  # untyped in dask
        _lightgbm_logs_to_logging()  # here; workers print to stderr (features._dask starts them so)

        count = parts or max(1, len(client.scheduler_info()["workers"]))
        ranker = isinstance(model, lgb.LGBMRanker)
        if ranker and group is None:
            raise ValueError("a ranker needs group (the query sizes in row order)")
        layout = deal(group if ranker and group is not None else np.ones(len(y), dtype=np.int64), count)
        dx = chunked(x[layout.order], chunks=(layout.row_chunks, x.shape[1]))
        dy = chunked(y[layout.order], chunks=(layout.row_chunks,))
        params = model.get_params()  # n_jobs: lightgbm.dask uses each worker's threads, and drops it; set back
        with warnings.catch_warnings():  # the arrays travel inside the graph, deliberately (see features._dask)
            warnings.filterwarnings("ignore", LARGE_GRAPH, UserWarning)
            if ranker:
                dgroup = chunked(layout.group, chunks=(layout.group_chunks,))
                dask_ranker = DaskLGBMRanker(client=client, **params)
                dask_ranker.fit(dx, dy, group=dgroup, **kwargs)
                return dask_ranker.to_local().set_params(n_jobs=model.n_jobs)
            if isinstance(model, lgb.LGBMClassifier):
                classifier = DaskLGBMClassifier(client=client, **params)
                classifier.fit(dx, dy, **kwargs)
                return classifier.to_local().set_params(n_jobs=model.n_jobs)
        raise TypeError(f"no Dask training for {type(model).__name__}; expected LGBMClassifier or LGBMRanker")

    return fit
