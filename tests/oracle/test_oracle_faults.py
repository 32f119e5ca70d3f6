"""Issue 13's faults on anvil, each against an oracle with its own connection (its own nonce
cache, as a separate process would have): a meter with a wrong clock, an implausible slack
voltage, a rollback of the node, a reorg that changes the readings under a band on chain, and a
node that restarted empty. One anvil for the module (1 s blocks plus automine); the reset test
starts its own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gridshare.chain.client import Chain, connect
from gridshare.chain.config import ChainConfig
from gridshare.chain.identity import ChainResetError
from oracle.service import Oracle, OracleConfig, default_confirmations
from tests.conftest import find_anvil, missing_tool
from tests.oracle.oracle_helpers import (
    FAST_NR,
    FAST_OCM,
    INTERVAL_S,
    AnvilProcess,
    Deployed,
    bands_written_events,
    deploy_feeder,
)

pytestmark = pytest.mark.anvil


def _binary() -> Path:
    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    return binary  # type: ignore[return-value]


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[AnvilProcess]:
    work = tmp_path_factory.mktemp("anvil-faults")
    anvil = AnvilProcess(_binary(), work / "state.json", work)
    anvil.start()
    try:
        yield anvil
    finally:
        anvil.stop()


def _chain(url: str) -> Chain:
    return connect(ChainConfig(chain=url, receipt_timeout_s=60.0, retries=1, backoff_s=0.1))


@pytest.fixture
def d(node: AnvilProcess) -> Deployed:
    """A fresh deployment (the test's connection: meters, snapshots)."""
    return deploy_feeder(_chain(node.url), via_head_end=True)


def own_oracle(d: Deployed, url: str, db: Path) -> Oracle:
    """The oracle on its own connection; confirmations 0 so a step sees the newest block."""
    return Oracle(_chain(url), d.deployment, OracleConfig(
        db_path=str(db), confirmations=0, ocm=FAST_OCM, nr=FAST_NR, backoff_s=0.01))


def head_end(d: Deployed) -> str:
    return next(x.meter_role for x in d.setup.devices if x.role == "load")


def post_interval(d: Deployed, oracle: Oracle, first: int, records: np.ndarray | None = None,
                  grace: bool = False) -> None:
    """Post minutes first..first+14 (or ``records``) at the end of the interval, then step;
    with ``grace`` step again once the chain's clock has passed the oracle's grace time."""
    records = d.sim.readings(list(range(first, first + 15))) if records is None else records
    d.sim.await_chain_time(d.sim.timestamp(first + 15))
    d.sim.post_by_meter(records)
    oracle.step()
    if grace:
        d.chain.advance_time(oracle.config.grace_s)
        oracle.step()


def test_defaults_one_confirmation_on_anvil(d: Deployed) -> None:
    assert default_confirmations(d.chain) == 1
    assert default_confirmations(connect()) == 0


def test_a_meter_with_a_wrong_clock_moves_nothing(d: Deployed, node, tmp_path, caplog) -> None:
    """H01's meter dates its readings ten days ahead, then ten days back: every one is rejected
    with a line naming meter, device and reason; the oracle writes the current intervals and
    nothing far from the chain's clock."""
    oracle = own_oracle(d, node.url, tmp_path / "o.sqlite")
    h01 = d.device("H01")
    with caplog.at_level("WARNING", logger="oracle.ingest"):
        for k, shift_s in enumerate((10 * 86_400, -10 * 86_400, 0)):
            records = d.sim.readings(list(range(15 * k, 15 * k + 15)))
            records[records[:, 0] == h01, 1] += shift_s
            post_interval(d, oracle, 15 * k, records, grace=True)  # H01 is missing
    i0 = d.interval_of_minute(0)
    assert bands_written_events(d) == [i0 + 1, i0 + 2, i0 + 3]
    now_interval = int(d.chain.w3.eth.get_block("latest")["timestamp"]) // INTERVAL_S
    assert all(abs(i - now_interval) <= 3 for i in bands_written_events(d))
    status = oracle.status()
    assert status["rejected_by_rule"] == {"window": 30} and status["readings"] == 45 * 25 - 30
    lines = [r.getMessage() for r in caplog.records if "rejected reading" in r.getMessage()]
    meter = d.chain.keys.address(head_end(d))
    assert len(lines) == 30 and all(f"meter {meter}, device {h01}," in x and "window" in x
                                    for x in lines)
    assert "after its block's time" in lines[0] and "before its block's time" in lines[-1]


def test_an_implausible_slack_voltage_is_rejected_and_counted(d: Deployed, node,
                                                              tmp_path) -> None:
    oracle = own_oracle(d, node.url, tmp_path / "o.sqlite")
    post_interval(d, oracle, 0)
    transformer = next(x.device_id for x in d.setup.devices if x.role == "transformer")
    records = d.sim.readings(list(range(15, 30)))
    last = (records[:, 0] == transformer) & (records[:, 1] == d.sim.timestamp(29))
    good_v = int(records[(records[:, 0] == transformer) & (records[:, 1] == d.sim.timestamp(28)),
                         4][0])
    records[last, 4] = 1_500_000
    post_interval(d, oracle, 15, records, grace=True)  # the transformer's last minute is missing
    i0 = d.interval_of_minute(0)
    row = oracle.store.interval(i0 + 2)
    assert row.status == "written"
    assert row.inputs["v_slack_micro_pu"] == [good_v]  # minute 28's value carried forward
    assert json.loads(row.missing_json) == {str(transformer): {"last": 1, "forecast": 0}}
    assert row.bands["p_max_w"][0] > row.bands["p_min_w"][0]  # the battery keeps a real band
    status = oracle.status()
    assert status["rejected_by_rule"] == {"v": 1}
    assert "transformer" in oracle.store.rejected_rows()[0]["reason"]


def test_a_rollback_resyncs_the_nonce_without_a_stall(d: Deployed, node, tmp_path) -> None:
    """The node rolls back over the oracle's last band transaction (and nothing else): the
    oracle's cached nonce is one too high. It sees the band gone, re-reads its nonce from the
    node and writes again at once (before, it waited for the 60 s receipt timeout behind a nonce
    gap, and the queued duplicate was mined later)."""
    oracle = own_oracle(d, node.url, tmp_path / "o.sqlite")
    post_interval(d, oracle, 0)
    d.sim.await_chain_time(d.sim.timestamp(30))
    d.sim.post_by_meter(d.sim.readings(list(range(15, 30))))
    snapshot = d.chain.snapshot()
    oracle.step()
    i0 = d.interval_of_minute(0)
    assert bands_written_events(d) == [i0 + 1, i0 + 2]
    d.chain.revert(snapshot)  # the rollback drops the band of i0+2
    assert bands_written_events(d) == [i0 + 1]
    started = time.monotonic()
    assert oracle.step().written == [i0 + 2]
    assert time.monotonic() - started < 15.0
    assert bands_written_events(d) == [i0 + 1, i0 + 2]
    assert oracle.store.failures() == [] and oracle.status()["late"] == 0
    post_interval(d, oracle, 30)  # and no queued duplicate stands in the way of the next one
    assert bands_written_events(d) == [i0 + 1, i0 + 2, i0 + 3]


def test_a_reorg_changing_the_readings_under_a_band_flags_it(d: Deployed, node,
                                                             tmp_path) -> None:
    """The new branch keeps the oracle's band transaction (re-broadcast, same bytes) but
    carries other readings of its source interval: the band is flagged stale (the contract
    takes one write per interval), nothing is written twice, no reading counts as late."""
    oracle = own_oracle(d, node.url, tmp_path / "o.sqlite")
    post_interval(d, oracle, 0)
    snapshot = d.chain.snapshot()
    post_interval(d, oracle, 15)
    i0 = d.interval_of_minute(0)
    band = oracle.store.interval(i0 + 2)
    raw = d.chain.w3.eth.get_raw_transaction(band.tx_hash)
    d.chain.revert(snapshot)
    d.chain._rpc("evm_mine", [])  # the new branch starts with another block
    records = d.sim.readings(list(range(15, 30)))
    records[records[:, 0] == d.device("H01"), 2] += 2_000
    d.sim.await_chain_time(d.sim.timestamp(30))
    d.sim.post_by_meter(records)
    d.chain.w3.eth.wait_for_transaction_receipt(d.chain.w3.eth.send_raw_transaction(raw))
    report = oracle.step()
    assert report.polls[0].reorg_depth > 0 and report.written == []
    status = oracle.status()
    assert list(status["stale_bands"]) == [str(i0 + 2)]
    assert "changed on the chain after a reorg" in status["stale_bands"][str(i0 + 2)]
    assert status["late"] == 0 and bands_written_events(d) == [i0 + 1, i0 + 2]
    post_interval(d, oracle, 30)  # the oracle goes on with the next interval
    assert bands_written_events(d) == [i0 + 1, i0 + 2, i0 + 3]


def test_an_empty_restarted_node_stops_the_oracle_and_keeps_its_store(tmp_path, monkeypatch,
                                                                      capsys) -> None:
    from gridshare.cli import main

    anvil = AnvilProcess(_binary(), tmp_path / "state.json", tmp_path)
    anvil.start()
    try:
        d = deploy_feeder(_chain(anvil.url), via_head_end=True)
        db = tmp_path / "oracle.sqlite"
        oracle = own_oracle(d, anvil.url, db)
        post_interval(d, oracle, 0)
        before = oracle.status()
        anvil.stop()
        anvil.state.unlink()  # the node comes back without its chain
        anvil.start()
        with pytest.raises(ChainResetError, match=r"chain reset: .* is not the deployment.s chain"):
            oracle.step()
        assert oracle.store.counts(INTERVAL_S) == {k: before[k] for k in (
            "readings", "late", "rejected", "rejected_by_rule")}
        oracle.close()
        deployment = d.deployment.save(tmp_path / "deployment.json")
        monkeypatch.setattr("signal.signal", lambda *_args: None)
        args = ["--deployment", str(deployment), "--db", str(db), "--rpc", anvil.url]
        assert main(["oracle", "run", "--once", *args]) == 4
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gridshare oracle run: chain reset:")
        assert "kept for inspection" in err[0]
        assert main(["oracle", "status", "--json", *args]) == 4
        status = json.loads(capsys.readouterr().out)
        assert status["chain"].startswith("reset: chain reset")
        assert status["readings"] == before["readings"] == 15 * 25
        assert status["intervals_written"] == before["intervals_written"] == 1
        anvil.stop()  # and with no node at all: the store's status, the chain unavailable
        assert main(["oracle", "status", "--json", *args]) == 1
        status = json.loads(capsys.readouterr().out)
        assert status["chain"].startswith("unavailable: ") and status["readings"] == 15 * 25
    finally:
        anvil.stop()
