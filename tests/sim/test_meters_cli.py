"""``gridshare meters run`` on anvil: meters registered once, N minutes of readings at the
chain's time (each posted once its minute is over), the profile minute chosen; bad arguments."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from gridshare.chain.client import connect
from gridshare.chain.config import ChainConfig
from gridshare.chain.deploy import DeployParams, deploy
from gridshare.cli import main
from gridshare.sim.meters import MeterSimulator, register_meters
from gridshare.sim.meters_cli import profile_minute
from oracle.ingest import decode_readings
from oracle.state import feeder_profiles
from tests.conftest import find_anvil, missing_tool
from tests.oracle.oracle_helpers import FEEDER, AnvilProcess, embedded_deployment_file


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[AnvilProcess]:
    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    work = tmp_path_factory.mktemp("anvil-meters")
    anvil = AnvilProcess(binary, work / "state.json", work)  # type: ignore[arg-type]
    anvil.start()
    try:
        yield anvil
    finally:
        anvil.stop()


def readings_on_chain(chain, deployment, from_block: int) -> tuple[np.ndarray, list[int]]:
    """Every reading posted since ``from_block`` and the time of each reading's block."""
    capacity = deployment.capacity(chain)
    logs = chain.get_logs(capacity.events.ReadingsPosted(), from_block, chain.block_number)
    blobs = [decode_readings(e["args"]["packed"]) for e in logs]
    block_s = [int(chain.w3.eth.get_block(e["blockNumber"])["timestamp"])
               for e, b in zip(logs, blobs, strict=True) for _ in range(len(b))]
    return np.concatenate(blobs), block_s


@pytest.mark.anvil
def test_meters_run_posts_minutes_at_the_chains_time(node, tmp_path, capsys) -> None:
    chain = connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0))
    deployment = deploy(chain, DeployParams(feeder=FEEDER, register_prosumers=False))
    path = deployment.save(tmp_path / "deployment.json")
    start_block = chain.block_number + 1
    args = ["meters", "run", "--deployment", str(path), "--rpc", node.url, "--warp"]
    assert main([*args, "--minutes", "2"]) == 0
    out = capsys.readouterr().out
    records, block_s = readings_on_chain(chain, deployment, start_block)
    n_devices = 25  # 3 flexibilities, the transformer, 21 customers: all registered now
    assert len(records) == 2 * n_devices and f"{n_devices} devices" in out
    ts = records["timestamp"].astype(np.int64)
    t0 = int(ts.min())
    assert t0 % 60 == 0 and sorted(set(ts.tolist())) == [t0, t0 + 60]
    assert all(b >= t + 60 for t, b in zip(ts.tolist(), block_s, strict=True))  # minute over
    assert max(b - t for t, b in zip(ts.tolist(), block_s, strict=True)) < 180
    # the values are those of the chain's minute of the profile day (PV follows the clock)
    profiles = feeder_profiles(FEEDER, 1)
    first = profile_minute(t0, int(profiles.time[0].timestamp()))
    assert f"minutes {first}..{first + 1} of the profile day" in out
    # a second run registers nothing more and goes on from the chain's time; --start-minute
    # picks the profile minute
    before = int(chain.call(deployment.capacity(chain).functions.deviceCount()))
    start_block = chain.block_number + 1
    assert main([*args, "--minutes", "1", "--start-minute", "720"]) == 0
    again, _ = readings_on_chain(chain, deployment, start_block)
    assert int(chain.call(deployment.capacity(chain).functions.deviceCount())) == before
    setup = register_meters(chain, deployment)
    noon = MeterSimulator(chain, deployment, setup, day_start_s=int(again["timestamp"][0])
                          - 720 * 60).readings([720])
    assert sorted(tuple(int(x) for x in r) for r in again.tolist()) == sorted(
        tuple(int(x) for x in r) for r in noon.tolist())
    assert "minutes 720..720 of the profile day" in capsys.readouterr().out


@pytest.mark.anvil
def test_without_warp_the_simulator_waits_for_the_chains_clock(node) -> None:
    chain = connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0))
    deployment = deploy(chain, DeployParams(feeder=FEEDER, register_prosumers=False))
    sim = MeterSimulator(chain, deployment, register_meters(chain, deployment), warp=False,
                         poll_s=0.1)
    now_s = int(chain.w3.eth.get_block("latest")["timestamp"])
    started = time.monotonic()
    assert sim.await_chain_time(now_s + 3) >= now_s + 3  # anvil mines a block per second
    assert 1.0 < time.monotonic() - started < 10.0


@pytest.mark.parametrize(("extra", "message"), [
    (["--minutes", "0"], "--minutes must be >= 1"),
    (["--minutes", "1", "--start-minute", "1440"], "--start-minute must lie in 0..1439"),
    (["--minutes", "1", "--start-minute", "-1"], "--start-minute must lie in 0..1439"),
])
def test_bad_arguments_are_refused(tmp_path, capsys, extra, message) -> None:
    path = embedded_deployment_file(tmp_path / "deployment.json")
    assert main(["meters", "run", "--deployment", str(path), *extra]) == 1
    assert message in capsys.readouterr().err


def test_the_embedded_chain_is_refused(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("GRIDSHARE_CHAIN", raising=False)
    path = embedded_deployment_file(tmp_path / "deployment.json")
    assert main(["meters", "run", "--deployment", str(path), "--minutes", "1"]) == 1
    assert "the meters need a JSON-RPC node" in capsys.readouterr().err
    assert main(["meters", "run", "--deployment", str(tmp_path / "missing.json"),
                 "--minutes", "1"]) == 1
