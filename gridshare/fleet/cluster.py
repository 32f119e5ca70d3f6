"""The Dask cluster of a fleet run: a local one started for the run, or an existing scheduler.

``fleet_client(workers=W)`` starts a ``LocalCluster`` of W worker processes with one thread each
(default: the machine's cores) and stops it at the end; ``fleet_client(scheduler="tcp://...")``
connects to a running cluster (``dask scheduler`` / ``dask worker``, dask-kubernetes,
dask-jobqueue) and leaves it running. Either way every worker process, also one that joins
later, runs ``WorkerSetup`` first: BLAS / OpenMP pools limited to one thread (threadpoolctl)
and the task code imported once. The local cluster's own logs are silenced below CRITICAL (a
closing cluster logs lost heartbeats as errors); task failures reach the run's summary.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin
from threadpoolctl import threadpool_limits

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CONNECT_TIMEOUT_S = 30.0
WORKER_WAIT_S = 120.0


class WorkerSetup(WorkerPlugin):
    """One BLAS thread per worker process (the OCM tasks solve many small systems: more threads
    only contend for the cores the other workers use) and the task code loaded once."""

    name = "gridshare-fleet-setup"

    def setup(self, worker: Any) -> None:
        for var in THREAD_ENV:  # for BLAS libraries loaded later
            os.environ[var] = "1"
        importlib.import_module("scipy.sparse.linalg")  # scipy's own BLAS, so the limit sees it
        for module in ("gridshare.fleet.sources", "gridshare.fleet.compute"):
            importlib.import_module(module)
        self.limits = threadpool_limits(limits=1)


def cluster_threads(client: Client) -> int:
    """Worker threads of the cluster right now."""
    return int(sum(client.nthreads().values()))


def _connect(scheduler: str) -> Client:
    """A client on a running scheduler with at least one worker (ValueError if there is none
    or the scheduler cannot be reached)."""
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise ValueError(f"cannot reach the Dask scheduler {scheduler!r}: {exc}") from exc
    try:
        client.register_plugin(WorkerSetup())
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError as exc:
        client.close()
        raise ValueError(f"no Dask worker joined {scheduler!r} within {WORKER_WAIT_S:.0f} s"
                         ) from exc
    return client


@contextmanager
def fleet_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A client on a local cluster of ``workers`` processes or on ``scheduler`` (module doc)."""
    if workers is not None and scheduler is not None:
        raise ValueError("give either --workers or --scheduler, not both")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if scheduler is not None:
        with _connect(scheduler) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        client.register_plugin(WorkerSetup())
        yield client
