"""Fixtures of the fleet tests: fast OCM settings and an external Dask cluster.

``FAST`` is the oracle's ``OcmSettings`` with the cheap values the oracle tests use (one OCM
step per interval, 30 certification points, GA of 8 for at most 3 generations): the code path
is the production one, only cheaper. ``dask_cluster`` starts ``dask scheduler`` and two
``dask worker`` processes (one thread each, no nanny, so nothing presets their BLAS threads)
on loopback for the module and stops them at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from distributed import Client

from oracle.service import OcmSettings
from tests.conftest import REPO_ROOT, free_port

FAST = OcmSettings(forecast="last", n_random=30, ga_population=8, ga_max_generations=3)
HOUR = 18
"""The evening hour: voltage limits bind on the variants, so bands are not just rated ranges."""
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 3.0
DASK = Path(sys.executable).parent / "dask"


@dataclass
class DaskCluster:
    """A scheduler and its worker processes, started by the tests."""

    address: str
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen([str(DASK), *args], stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        self.processes[name] = proc
        return proc

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, "worker", self.address, "--host", "127.0.0.1", "--nthreads",
                          "1", "--no-nanny", "--no-dashboard", "--name", name)

    def wait_for_workers(self, n: int) -> None:
        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT_S)

    def worker_address(self, client: Client, name: str) -> str:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        return next(addr for addr, w in workers.items() if w["name"] == name)

    def stop(self) -> None:
        """Workers first (a worker whose scheduler is gone keeps trying to reconnect)."""
        for _, proc in sorted(self.processes.items(), key=lambda kv: kv[0] == "scheduler"):
            if proc.poll() is None:
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT_S)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """``dask scheduler`` + two ``dask worker`` processes on loopback."""
    port = free_port()
    cluster = DaskCluster(f"tcp://127.0.0.1:{port}", tmp_path_factory.mktemp("dask-logs"))
    try:
        cluster.start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                      "--no-dashboard")
        cluster.start_worker("w1")
        cluster.start_worker("w2")
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        cluster.stop()
