"""End to end: meters post a day of heimschuh-like readings at the chain's time, the oracle
publishes certified bands for every interval it is up for, and the bands on-chain equal OCM on the
same (hashed) inputs.

* embedded chain: a whole day at 900 s intervals (97 band intervals: the first from the profile
  forecast, then one per interval of readings); the oracle is killed at midday after sending a
  transaction whose receipt it never saw and stays down for two hours of readings; a new oracle
  on the same database records the intervals now in the past as skipped (the contract takes no
  band for them) and goes on: every interval once, written or skipped, none twice;
* anvil: ``gridshare oracle run`` as a separate process ("ready"), SIGKILLed mid-run and
  restarted, SIGTERMed while it catches up (out within a second), restarted again; then anvil
  itself is stopped and started again from its dumped state (``--dump-state`` /
  ``--load-state``) while the oracle keeps running ("chain back after N s"); 3 h of readings.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from eth_utils import keccak

from capacity.ocm import GaSettings, compute_bands
from gridshare.chain.client import connect
from gridshare.chain.config import ChainConfig
from gridshare.units import kw_to_w
from oracle.service import canonical_bytes
from oracle.store import Store
from tests.conftest import find_anvil, missing_tool
from tests.oracle.oracle_helpers import (
    FAST_NR,
    FAST_OCM,
    AnvilProcess,
    Deployed,
    band_on_chain,
    bands_written_events,
    deploy_feeder,
    embedded_deployment_file,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


def check_bands_match_inputs(d: Deployed, store: Store, feeder, sample: list[int]) -> None:
    """Every written interval: on-chain hash = keccak(stored inputs), on-chain bands = stored
    bands; for ``sample``: the bands equal compute_bands run here on the inputs' arrays."""
    capacity = d.deployment.capacity(d.chain)
    rows = {r.interval: r for r in store.intervals("written")}
    for interval, row in rows.items():
        inputs_hash = bytes(d.chain.call(capacity.functions.intervalRecord(interval))[0])
        assert inputs_hash == keccak(canonical_bytes(row.inputs)), interval
        ids, lo_w, hi_w = band_on_chain(d, interval)
        assert row.bands["device_ids"] == ids
        assert (row.bands["p_min_w"], row.bands["p_max_w"]) == (lo_w, hi_w), interval
    flex = [f for f in d.sim.case.flexibilities]
    for interval in sample:
        inputs = rows[interval].inputs
        ocm = inputs["ocm"]
        result = compute_bands(
            feeder, flex, np.array(inputs["p_w"]) / 1000.0, np.array(inputs["q_var"]) / 1000.0,
            v_slack_pu=np.array(inputs["v_slack_micro_pu"]) / 1e6, objective=ocm["objective"],
            seed=ocm["seed"], n_random=ocm["n_random"],
            ga=GaSettings(population=ocm["ga_population"],
                          max_generations=ocm["ga_max_generations"]),
        )
        assert result.feasible.all() or rows[interval].infeasible_steps > 0
        _, lo_w, hi_w = band_on_chain(d, interval)
        assert rows[interval].nr_points > 0 and rows[interval].nr_narrowed == 0, interval
        assert lo_w == kw_to_w(result.p_min_kw.max(axis=0)).tolist(), interval
        assert hi_w == kw_to_w(result.p_max_kw.min(axis=0)).tolist(), interval


def test_a_day_on_the_embedded_chain_with_a_crash_at_midday(tmp_path, monkeypatch) -> None:
    d = deploy_feeder(connect(), via_head_end=True)
    db = tmp_path / "oracle.sqlite"
    oracle = d.oracle(db)
    i0 = d.interval_of_minute(0)

    class Killed(BaseException):
        pass

    def killed(*_args, **_kwargs):
        raise Killed

    d.sim.post([0])
    oracle.step()  # the first band: interval i0, from the profile forecast
    d.sim.run(1, 15, batch_minutes=14, after_batch=lambda _m: oracle.step())
    d.sim.run(15, 720, batch_minutes=15, after_batch=lambda _m: oracle.step())
    assert oracle.chain_last_interval() == i0 + 48
    d.sim.run(720, 735, batch_minutes=15)
    monkeypatch.setattr(d.chain, "wait", killed)  # sent, mined, receipt never seen
    with pytest.raises(Killed):
        oracle.step()
    monkeypatch.undo()
    oracle.close()
    d.sim.run(735, 855, batch_minutes=15)  # two hours of readings while the oracle is down
    restarted = d.oracle(db)
    restarted.step()  # i0+49 found on chain, i0+50..56 in the past: skipped, i0+57 written
    assert restarted.chain_last_interval() == i0 + 57
    d.sim.run(855, 1440, batch_minutes=15, after_batch=lambda _m: restarted.step())

    written = bands_written_events(d)
    assert written == [*range(i0, i0 + 50), *range(i0 + 57, i0 + 97)]  # none twice
    status = restarted.status()
    assert status["intervals_written"] == 90
    assert status["intervals_skipped"] == list(range(i0 + 50, i0 + 57))
    assert status["readings"] == 1440 * 25 and status["rejected"] == 0
    assert status["tx_failures"] == 0 and status["late"] == 0
    assert status["nr_check"]["bands_not_written"] == [] and status["stale_bands"] == {}
    check_bands_match_inputs(d, restarted.store, restarted.feeder,
                             sample=[i0, i0 + 49, i0 + 57, i0 + 96])


# ----------------------------------------------------------------------------- anvil
def oracle_command(deployment: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "gridshare.cli", "oracle", "run", "--deployment",
            str(deployment), "--db", str(db), "--poll-s", "0.2",
            "--forecast", FAST_OCM.forecast, "--n-random", str(FAST_OCM.n_random),
            "--ga-population", str(FAST_OCM.ga_population),
            "--ga-generations", str(FAST_OCM.ga_max_generations),
            "--nr-random", str(FAST_NR.n_random)]


class OracleProcesses:
    """``gridshare oracle run`` processes of one test on one deployment and database."""

    def __init__(self, d: Deployed, tmp_path: Path) -> None:
        self.d, self.tmp_path = d, tmp_path
        self.deployment_file = d.deployment.save(tmp_path / "deployment.json")
        self.db = tmp_path / "oracle.sqlite"
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.env.pop("GRIDSHARE_CHAIN", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, name: str) -> None:
        """Start one and wait for its "ready" line."""
        log = (self.tmp_path / f"{name}.log").open("wb")
        self.process = subprocess.Popen(oracle_command(self.deployment_file, self.db),
                                        stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                        cwd=self.tmp_path)
        wait_until(lambda: "ready:" in self.log(name), 120, f"{name} to be ready")

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def last_on_chain(self) -> int:
        capacity = self.d.deployment.capacity(self.d.chain)
        if not self.d.chain.call(capacity.functions.anyIntervalWritten()):
            return -1
        return int(self.d.chain.call(capacity.functions.lastInterval()))

    def post_and_wait(self, first: int, last: int) -> None:
        """Post minutes first..last-1 up to each interval's end, each time waiting for the band
        the interval's readings so far close."""
        i0 = self.d.interval_of_minute(0)
        bounds = sorted({first, last, *range((first // 15 + 1) * 15, last, 15)})
        for lo, hi in itertools.pairwise(bounds):
            self.d.sim.run(lo, hi, batch_minutes=hi - lo)
            target = i0 + hi // 15
            wait_until(lambda t=target: self.last_on_chain() == t, 120, f"the band of {target}")

    def status(self) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "gridshare.cli", "oracle", "status", "--deployment",
             str(self.deployment_file), "--db", str(self.db), "--json"],
            capture_output=True, text=True, env=self.env, cwd=self.tmp_path, timeout=120,
            check=True)
        return json.loads(out.stdout)


@pytest.mark.anvil
def test_anvil_oracle_process_killed_and_anvil_restarted_from_dump(tmp_path) -> None:
    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    node = AnvilProcess(binary, tmp_path / "anvil-state.json", tmp_path)
    node.start()
    procs = None
    try:
        chain = connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0, retries=2,
                                    backoff_s=0.1))
        d = deploy_feeder(chain, via_head_end=True)
        i0 = d.interval_of_minute(0)
        procs = OracleProcesses(d, tmp_path)
        procs.start("oracle-1")
        procs.post_and_wait(0, 1)  # the first band: i0, from the profile forecast
        procs.post_and_wait(1, 45)
        stop_process(procs.process, sig_kill=True)  # killed
        d.sim.run(45, 90, batch_minutes=15)  # three intervals while it is down
        procs.start("oracle-2")  # SIGTERM while it catches up: out within a second
        started = time.monotonic()
        procs.process.send_signal(signal.SIGTERM)
        procs.process.wait(timeout=30)
        assert time.monotonic() - started < 1.0 and procs.process.returncode == 0
        assert "stopped by signal" in procs.log("oracle-2")
        procs.start("oracle-3")
        wait_until(lambda: procs.last_on_chain() == i0 + 6, 120, "the oracle to catch up")
        node.stop()  # the oracle keeps running against a dead node, backing off
        assert node.state.exists()
        # longer than the RPC provider's own retries (4, 0.25 s doubling): the service loop
        # itself sees ChainUnavailable and backs off
        time.sleep(6.0)
        assert procs.process.poll() is None
        node.start()
        d.chain.nonces.resync()
        procs.post_and_wait(90, 180)
        stop_process(procs.process)
        assert procs.process.returncode == 0, procs.log("oracle-3")[-3000:]
        check_after_restarts(d, procs, i0)
    finally:
        if procs is not None and procs.process is not None:
            stop_process(procs.process, sig_kill=True)
        node.stop()


def check_after_restarts(d: Deployed, procs: OracleProcesses, i0: int) -> None:
    """Every interval once, written or skipped while the oracle was down; the status; the
    oracle's log lines around the node's outage."""
    expected = [*range(i0, i0 + 4), *range(i0 + 6, i0 + 13)]  # i0+4, i0+5: down
    assert bands_written_events(d) == expected
    store = Store(procs.db)
    assert [r.interval for r in store.intervals("written")] == expected
    assert [r.interval for r in store.intervals("skipped")] == [i0 + 4, i0 + 5]
    from oracle.state import feeder_model

    check_bands_match_inputs(d, store, feeder_model(d.deployment.feeder),
                             sample=[i0 + 3, i0 + 12])
    report = procs.status()
    assert report["last_interval_on_chain"] == i0 + 12
    assert report["intervals_written"] == 11 and report["readings"] == 180 * 25
    assert report["processed_block"] is not None and report["lag_blocks"] >= 0
    assert report["chain"] == "ok" and report["confirmations"] == 1  # anvil's default
    log_text = procs.log("oracle-3")
    assert "chain unavailable" in log_text  # it saw the node go away ...
    assert re.search(r"chain back after \d+\.\d s", log_text)  # ... and come back


def test_oracle_run_refuses_the_embedded_chain(tmp_path, capsys, monkeypatch) -> None:
    from gridshare.cli import main

    path = embedded_deployment_file(tmp_path / "deployment.json")
    monkeypatch.delenv("GRIDSHARE_CHAIN", raising=False)
    assert main(["oracle", "run", "--deployment", str(path), "--once"]) == 1
    assert "embedded chain lives inside one process" in capsys.readouterr().err
