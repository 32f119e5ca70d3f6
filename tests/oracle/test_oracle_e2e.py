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
            str(deployment), "--db", str(db), "--poll-seconds", "0.2",
            "--forecast", FAST_OCM.forecast, "--n-random", str(FAST_OCM.n_random),
            "--ga-population", str(FAST_OCM.ga_population),
            "--ga-generations", str(FAST_OCM.ga_max_generations),
            "--nr-random", str(FAST_NR.n_random)]


@pytest.mark.anvil
def test_anvil_oracle_process_killed_and_anvil_restarted_from_dump(tmp_path) -> None:
    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    node = AnvilProcess(binary, tmp_path / "anvil-state.json", tmp_path)
    node.start()
    oracle_proc: subprocess.Popen[bytes] | None = None
    try:
        chain = connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0, retries=2,
                                    backoff_s=0.1))
        d = deploy_feeder(chain, via_head_end=True)
        deployment_file = d.deployment.save(tmp_path / "deployment.json")
        db = tmp_path / "oracle.sqlite"
        i0 = d.interval_of_minute(0)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("GRIDSHARE_CHAIN", None)

        def start_oracle(name: str) -> subprocess.Popen[bytes]:
            log = (tmp_path / f"{name}.log").open("wb")
            return subprocess.Popen(oracle_command(deployment_file, db), stdout=log,
                                    stderr=subprocess.STDOUT, env=env, cwd=tmp_path)

        def last_on_chain() -> int:
            capacity = d.deployment.capacity(d.chain)
            if not d.chain.call(capacity.functions.anyIntervalWritten()):
                return -1
            return int(d.chain.call(capacity.functions.lastInterval()))

        oracle_proc = start_oracle("oracle-1")
        wait_until(lambda: "ready:" in (tmp_path / "oracle-1.log").read_text(), 120, "ready")
        d.sim.post([0])
        wait_until(lambda: last_on_chain() == i0, 60, "the first band")
        d.sim.run(1, 15, batch_minutes=14)
        wait_until(lambda: last_on_chain() == i0 + 1, 60, "a band")
        for first in (15, 30):
            d.sim.run(first, first + 15, batch_minutes=15)
            wait_until(lambda k=first: last_on_chain() == i0 + k // 15 + 1, 60, "a band")
        stop_process(oracle_proc, sig_kill=True)  # killed
        d.sim.run(45, 90, batch_minutes=15)  # three intervals while it is down
        oracle_proc = start_oracle("oracle-2")  # SIGTERM while it catches up: out within 1 s
        wait_until(lambda: "ready:" in (tmp_path / "oracle-2.log").read_text(), 120, "ready")
        started = time.monotonic()
        oracle_proc.send_signal(signal.SIGTERM)
        oracle_proc.wait(timeout=30)
        assert time.monotonic() - started < 1.0 and oracle_proc.returncode == 0
        assert "stopped by signal" in (tmp_path / "oracle-2.log").read_text()
        oracle_proc = start_oracle("oracle-3")
        wait_until(lambda: last_on_chain() == i0 + 6, 120, "the restarted oracle to catch up")

        node.stop()  # the oracle keeps running against a dead node, backing off
        assert node.state.exists()
        # longer than the RPC provider's own retries (4, 0.25 s doubling): the service loop
        # itself sees ChainUnavailable and backs off
        time.sleep(6.0)
        assert oracle_proc.poll() is None
        node.start()
        d.chain.nonces.resync()
        for first in range(90, 180, 15):
            d.sim.run(first, first + 15, batch_minutes=15)
            wait_until(lambda k=first: last_on_chain() == i0 + k // 15 + 1, 120,
                       "the oracle to resume")
        stop_process(oracle_proc)
        assert oracle_proc.returncode == 0, (tmp_path / "oracle-3.log").read_text()[-3000:]

        expected = [*range(i0, i0 + 4), *range(i0 + 6, i0 + 13)]  # i0+4, i0+5: down
        assert bands_written_events(d) == expected
        store = Store(db)
        assert [r.interval for r in store.intervals("written")] == expected
        assert [r.interval for r in store.intervals("skipped")] == [i0 + 4, i0 + 5]
        from oracle.state import feeder_model

        check_bands_match_inputs(d, store, feeder_model(d.deployment.feeder),
                                 sample=[i0 + 3, i0 + 12])
        status = subprocess.run(
            [sys.executable, "-m", "gridshare.cli", "oracle", "status", "--deployment",
             str(deployment_file), "--db", str(db), "--json"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=True,
        )
        report = json.loads(status.stdout)
        assert report["last_interval_on_chain"] == i0 + 12
        assert report["intervals_written"] == 11 and report["readings"] == 180 * 25
        assert report["processed_block"] is not None and report["lag_blocks"] >= 0
        assert report["chain"] == "ok" and report["confirmations"] == 1  # anvil's default
        log_text = (tmp_path / "oracle-3.log").read_text()
        assert "chain unavailable" in log_text  # it saw the node go away ...
        assert re.search(r"chain back after \d+\.\d s", log_text)  # ... and come back
    finally:
        if oracle_proc is not None:
            stop_process(oracle_proc, sig_kill=True)
        node.stop()


def test_oracle_run_refuses_the_embedded_chain(tmp_path, capsys, monkeypatch) -> None:
    from gridshare.cli import main

    path = embedded_deployment_file(tmp_path / "deployment.json")
    monkeypatch.delenv("GRIDSHARE_CHAIN", raising=False)
    assert main(["oracle", "run", "--deployment", str(path), "--once"]) == 1
    assert "embedded chain lives inside one process" in capsys.readouterr().err
