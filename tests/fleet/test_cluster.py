"""Fleet runs on Dask: local vs external cluster, a killed worker, resume, a broken feeder file.

Every run computes the same variants at ``HOUR`` with ``FAST`` settings; the local cluster's
band files (``reference``) are the yardstick: byte for byte, whatever the cluster.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from capacity.feeder_io import save_feeder
from capacity.feeders import load_feeder
from gridshare.cli import main
from gridshare.fleet import cluster
from gridshare.fleet.cluster import fleet_client
from gridshare.fleet.run import FleetJob, run_fleet
from gridshare.fleet.sources import variant_sources
from tests.conftest import free_port
from tests.fleet.conftest import FAST, HOUR, DaskCluster

N_FEEDERS = 6


def _job(out: Path, n_feeders: int = N_FEEDERS) -> FleetJob:
    return FleetJob(tuple(variant_sources(n_feeders)), out, start_hour=HOUR, hours=1,
                    settings=FAST)


def _band_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "bands").glob("*.csv"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The band files of a run on a local cluster of 2 worker processes."""
    out = tmp_path_factory.mktemp("local")
    with fleet_client(workers=2) as client:
        report = run_fleet(_job(out), client, progress=False)
    assert len(report.done) == N_FEEDERS and not report.failed
    return out


def test_local_and_external_cluster_give_identical_band_files(
        reference: Path, dask_cluster: DaskCluster, tmp_path: Path) -> None:
    with fleet_client(scheduler=dask_cluster.address) as client:
        assert len(client.nthreads()) == 2
        report = run_fleet(_job(tmp_path), client, progress=False)
    assert not report.failed
    expected = _band_files(reference)
    assert len(expected) == N_FEEDERS
    assert _band_files(tmp_path) == expected
    rows = (reference / "bands" / "heimschuh-like-00001.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and any(",v_low," in r for r in rows[1:])  # bands really bind


def test_external_workers_run_blas_on_one_thread(dask_cluster: DaskCluster, tmp_path: Path
                                                 ) -> None:
    # the workers have no nanny (which would preset the thread variables), so only the fleet's
    # worker plugin limits their BLAS pools (OpenBLAS would take both cores)
    with fleet_client(scheduler=dask_cluster.address) as client:
        run_fleet(_job(tmp_path, 1), client, progress=False)
        pools = client.run(threadpool_info)
    assert len(pools) == 2
    assert all(pool["num_threads"] == 1 for info in pools.values() for pool in info)
    assert all(any(p["internal_api"] in ("openblas", "mkl") for p in info)
               for info in pools.values())


def test_a_worker_killed_mid_run_loses_no_feeder(reference: Path, dask_cluster: DaskCluster,
                                                 tmp_path: Path) -> None:
    extra = dask_cluster.start_worker("extra")
    dask_cluster.wait_for_workers(3)
    killed: list[str] = []
    with fleet_client(scheduler=dask_cluster.address) as client:
        address = dask_cluster.worker_address(client, "extra")

        def kill_extra_once_it_holds_work(_name: str, _status: str) -> None:
            if killed:
                return
            if client.processing([address])[address] or client.has_what([address])[address]:
                os.kill(extra.pid, signal.SIGKILL)
                killed.append(address)

        report = run_fleet(_job(tmp_path), client, progress=False,
                           on_feeder=kill_extra_once_it_holds_work)
        assert address not in client.nthreads()
    assert killed, "the extra worker never held work: nothing was killed"
    assert len(report.done) == N_FEEDERS and not report.failed
    assert _band_files(tmp_path) == _band_files(reference)


def test_resume_skips_finished_feeders(reference: Path, dask_cluster: DaskCluster,
                                       tmp_path: Path) -> None:
    (tmp_path / "bands").mkdir()
    shutil.copy(reference / "run.json", tmp_path / "run.json")
    finished = ["paper-test-feeder-00000.csv", "cigre-lv-00002.csv"]
    for name in finished:
        shutil.copy(reference / "bands" / name, tmp_path / "bands" / name)
    with fleet_client(scheduler=dask_cluster.address) as client:
        report = run_fleet(_job(tmp_path), client, progress=False)
    assert sorted(report.resumed) == sorted(Path(n).stem for n in finished)
    assert len(report.done) == N_FEEDERS - len(finished)
    assert not set(report.done) & set(report.resumed)
    assert _band_files(tmp_path) == _band_files(reference)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["done"], summary["resumed"], summary["intervals"]) == (4, 2, 4 * N_FEEDERS)


def _report_of(summary_csv: Path) -> dict[str, dict[str, str]]:
    with summary_csv.open() as fh:
        return {row["feeder"]: row for row in csv.DictReader(fh)}


def test_a_broken_feeder_file_is_reported_while_the_others_finish(
        dask_cluster: DaskCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feeders = tmp_path / "feeders"
    feeders.mkdir()
    save_feeder(load_feeder("heimschuh-like"), feeders / "a-heimschuh.json")
    save_feeder(load_feeder("cigre-lv"), feeders / "c-cigre.yaml")
    text = (feeders / "a-heimschuh.json").read_text()
    (feeders / "b-broken.json").write_text(text[: len(text) // 2])
    out = tmp_path / "out"
    code = main(["fleet", "--feeder-dir", str(feeders), "--hours", "1", "--start-hour",
                 str(HOUR), "--scheduler", dask_cluster.address, "--forecast", "last",
                 "--n-random", "30", "--ga-population", "8", "--ga-generations", "3",
                 "--no-progress", "--out", str(out)])
    assert code == 1
    assert "failed b-broken: ValueError: feeder file 'b-broken.json' is not valid json" in (
        capsys.readouterr().out)
    assert sorted(_band_files(out)) == ["a-heimschuh.csv", "c-cigre.csv"]
    rows = _report_of(out / "summary.csv")
    assert [rows[n]["status"] for n in ("a-heimschuh", "b-broken", "c-cigre")] == [
        "done", "failed", "done"]
    assert "not valid json" in rows["b-broken"]["reason"]
    assert rows["a-heimschuh"]["intervals"] == "4"


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler"), \
            fleet_client(scheduler=address):
        pass
