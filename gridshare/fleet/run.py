"""A fleet run: feeder-hour tasks on a Dask cluster, band files streamed as feeders finish.

Per feeder, one task builds its ``FeederModel`` (``sources.build_model``) and one task per hour
computes its bands (``compute.feeder_hour``) with the model as a dependency: Dask moves the model
to a worker the first time one of its hours runs there and keeps it while the feeder is open, so
it travels once per worker, and a model lost with a worker is rebuilt from its source. At most
``FEEDERS_PER_THREAD`` feeders per worker thread are open at a time (bounded memory on client,
scheduler and workers). A task that raises is retried by Dask (``retries``); a task lost with a
worker is rescheduled by Dask. A feeder whose task still fails is reported with the reason in the
summary and gets no band file; the other feeders go on. Finished feeders of an earlier run into
the same directory are skipped (``rundir.RunDir``).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dask.base import tokenize
from distributed import Client, Future, as_completed
from tqdm import tqdm

from gridshare.fleet.cluster import cluster_threads
from gridshare.fleet.compute import INTERVAL_S, HourBands, feeder_hour
from gridshare.fleet.rundir import RunDir
from gridshare.fleet.sources import FeederSource, build_model
from oracle.service import OcmSettings

FEEDERS_PER_THREAD = 4
MIN_OPEN_FEEDERS = 4
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class FleetJob:
    """What to compute: feeders, the local hours ``start_hour .. start_hour + hours`` of their
    day, the seed (variants, profiles and the OCM base seed), the oracle's OCM settings."""

    sources: tuple[FeederSource, ...]
    out: Path
    start_hour: int = 0
    hours: int = 1
    seed: int = 0
    settings: OcmSettings = field(default_factory=OcmSettings)
    retries: int = 2

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("no feeders")
        if self.hours < 1 or not 0 <= self.start_hour < 24 or self.start_hour + self.hours > 24:
            raise ValueError(f"--start-hour {self.start_hour} and --hours {self.hours} must "
                             "stay within one day (0..24 h) with at least one hour")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")

    @property
    def hour_list(self) -> list[int]:
        return list(range(self.start_hour, self.start_hour + self.hours))

    def params(self) -> dict[str, Any]:
        """What must match for a resume (the feeder list may grow)."""
        kind = "files" if any(s.index is None for s in self.sources) else "variants"
        return {"feeders": kind, "start_hour": self.start_hour, "hours": self.hours,
                "seed": self.seed, "interval_s": INTERVAL_S, "ocm": asdict(self.settings)}


@dataclass
class FleetReport:
    """What a run did: feeders computed (compute s each), resumed, failed (reason each)."""

    done: dict[str, float]
    resumed: list[str]
    failed: dict[str, str]
    wall_s: float
    threads: int
    summary: Path

    @property
    def feeders_per_s(self) -> float:
        return len(self.done) / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class _OpenFeeder:
    source: FeederSource
    futures: list[Future]
    results: dict[int, HourBands] = field(default_factory=dict)


def failure_reason(future: Future) -> str:
    """``Type: message`` of a failed task (one line, at most ``MAX_REASON_CHARS``)."""
    if future.status == "cancelled":
        return "cancelled: the cluster lost the task"
    exc = future.exception()
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_REASON_CHARS]


class _FleetRun:
    """The submit / collect loop of one run (see module docstring)."""

    def __init__(self, job: FleetJob, client: Client, run_dir: RunDir, todo: list[FeederSource],
                 progress: bool, on_feeder: Callable[[str, str], None] | None) -> None:
        self.job, self.client, self.run_dir = job, client, run_dir
        self.todo = deque(todo)
        self.open: dict[str, _OpenFeeder] = {}
        self.owner: dict[str, tuple[str, int]] = {}
        self.done: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.on_feeder = on_feeder
        self.window = max(MIN_OPEN_FEEDERS, FEEDERS_PER_THREAD * cluster_threads(client))
        self.completed = as_completed()
        self.bar = tqdm(total=len(todo) * job.hours, unit="feeder-h", desc="fleet",
                        disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def _submit(self, source: FeederSource) -> None:
        job, token = self.job, tokenize(source, self.job.seed, asdict(self.job.settings))
        model = self.client.submit(build_model, source, job.seed, retries=job.retries,
                                   key=f"fleet-model-{source.name}-{token}")
        futures = []
        for hour in job.hour_list:
            fut = self.client.submit(feeder_hour, model, hour, job.settings, retries=job.retries,
                                     key=f"fleet-bands-{source.name}-h{hour:02d}-{token}")
            self.owner[fut.key] = (source.name, hour)
            self.completed.add(fut)
            futures.append(fut)
        self.open[source.name] = _OpenFeeder(source, futures)

    def _fill(self) -> None:
        while self.todo and len(self.open) < self.window:
            self._submit(self.todo.popleft())

    def _finish(self, feeder: _OpenFeeder, hour: int, result: HourBands) -> None:
        feeder.results[hour] = result
        self.bar.update(1)
        if len(feeder.results) < self.job.hours:
            return
        name = feeder.source.name
        self.run_dir.write_bands(name, list(feeder.results.values()))
        self.done[name] = sum(r.seconds for r in feeder.results.values())
        del self.open[name]
        self._report(name, "done")

    def _fail(self, feeder: _OpenFeeder, reason: str) -> None:
        name = feeder.source.name
        self.client.cancel([f for f in feeder.futures if not f.done()])
        self.bar.update(self.job.hours - len(feeder.results))
        self.failed[name] = reason
        del self.open[name]
        self.bar.write(f"fleet: feeder {name} ({feeder.source.description}) failed: {reason}")
        self._report(name, "failed")

    def _report(self, name: str, status: str) -> None:
        self.bar.set_postfix(done=len(self.done), failed=len(self.failed))
        if self.on_feeder is not None:
            self.on_feeder(name, status)

    def run(self) -> None:
        """Submit, collect and write until every feeder is done or failed."""
        self._fill()
        for fut in self.completed:
            name, hour = self.owner.pop(fut.key, ("", -1))
            feeder = self.open.get(name)
            if feeder is None:  # a task of a feeder that already failed
                continue
            if fut.status == "finished":
                self._finish(feeder, hour, fut.result())
            else:
                self._fail(feeder, failure_reason(fut))
            self._fill()
        self.bar.close()


def run_fleet(job: FleetJob, client: Client, progress: bool = True,
              on_feeder: Callable[[str, str], None] | None = None) -> FleetReport:
    """Compute the job's missing feeders on ``client``'s cluster; write band files and the
    summary into ``job.out``. ``on_feeder(name, "done" | "failed")`` is called as feeders end."""
    t0 = time.perf_counter()
    run_dir = RunDir(job.out)
    finished = run_dir.prepare(job.params())
    todo = [s for s in job.sources if s.name not in finished]
    resumed = [s.name for s in job.sources if s.name in finished]
    fleet = _FleetRun(job, client, run_dir, todo, progress, on_feeder)
    fleet.run()
    wall_s = time.perf_counter() - t0
    rows = [run_dir.feeder_row(
        s.name, s.description,
        "done" if s.name in fleet.done else "failed" if s.name in fleet.failed else "resumed",
        fleet.done.get(s.name), fleet.failed.get(s.name, "")) for s in job.sources]
    threads = cluster_threads(client)
    totals = {"feeders": len(job.sources), "done": len(fleet.done), "resumed": len(resumed),
              "failed": len(fleet.failed), "failures": fleet.failed, "start_hour": job.start_hour,
              "hours": job.hours, "interval_s": INTERVAL_S, "worker_threads": threads,
              "wall_s": round(wall_s, 3), "compute_s": round(sum(fleet.done.values()), 3),
              "feeders_per_s": round(len(fleet.done) / wall_s, 4) if wall_s > 0 else 0.0,
              "ocm": asdict(job.settings)}
    summary = run_dir.write_summary(rows, totals)
    return FleetReport(fleet.done, resumed, fleet.failed, wall_s, threads, summary)
