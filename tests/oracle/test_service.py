"""The oracle service on the embedded chain: bands equal OCM on the hashed inputs, missing and
bad readings, restart after a crash, every revert rule, the Newton-Raphson check, targets in the
past."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from eth_utils import keccak

from capacity.ocm import GaSettings, compute_bands
from gridshare.chain.client import connect
from gridshare.chain.errors import ChainUnavailable
from gridshare.units import kw_to_w
from oracle.certify import NrCheck
from oracle.service import Oracle, OracleFatal, StepReport, canonical_bytes
from tests.oracle.oracle_helpers import (
    FAST_OCM,
    INTERVAL_S,
    Deployed,
    band_on_chain,
    bands_written_events,
    deploy_feeder,
)


@pytest.fixture(scope="module")
def base() -> Deployed:
    return deploy_feeder(connect())


@pytest.fixture
def d(base: Deployed) -> Iterator[Deployed]:
    snapshot = base.chain.snapshot()
    try:
        yield base
    finally:
        base.chain.revert(snapshot)


def post_intervals(d: Deployed, oracle: Oracle, first: int, last: int, **kw) -> None:
    """Post minutes first..last-1, stepping the oracle after each batch: minute 0 alone (so the
    oracle's first band is interval i0's, from the profile forecast), then to each interval's
    end."""
    bounds = sorted({first, last, *range((first // 15 + 1) * 15, last, 15)}
                    | ({1} if first == 0 < last - 1 else set()))
    for lo, hi in itertools.pairwise(bounds):
        d.sim.run(lo, hi, batch_minutes=hi - lo, after_batch=lambda _m: oracle.step(), **kw)


def test_bands_on_chain_equal_compute_bands_on_the_hashed_inputs(d: Deployed, tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 30)
    i0 = d.interval_of_minute(0)
    assert [r.interval for r in oracle.store.intervals("written")] == [i0, i0 + 1, i0 + 2]
    assert bands_written_events(d) == [i0, i0 + 1, i0 + 2]
    capacity = d.deployment.capacity(d.chain)
    for row in oracle.store.intervals("written"):
        inputs = row.inputs
        on_chain_hash = d.chain.call(capacity.functions.intervalRecord(row.interval))[0]
        assert bytes(on_chain_hash) == keccak(canonical_bytes(inputs))
        assert canonical_bytes(inputs).decode() == row.inputs_json
        # OCM called here directly on the arrays of the hashed inputs
        ocm = inputs["ocm"]
        result = compute_bands(
            oracle.feeder, oracle.registry.flexibilities(),
            np.array(inputs["p_w"]) / 1000.0, np.array(inputs["q_var"]) / 1000.0,
            v_slack_pu=np.array(inputs["v_slack_micro_pu"]) / 1e6,
            objective=ocm["objective"], seed=ocm["seed"], n_random=ocm["n_random"],
            ga=GaSettings(population=FAST_OCM.ga_population,
                          max_generations=FAST_OCM.ga_max_generations),
        )
        ids, lo_w, hi_w = band_on_chain(d, row.interval)
        assert ids == [dev[0] for dev in inputs["devices"]]
        assert lo_w == kw_to_w(result.p_min_kw.max(axis=0)).tolist()
        assert hi_w == kw_to_w(result.p_max_kw.min(axis=0)).tolist()
    # the inputs of interval i0+1 are the readings of interval i0 (persistence of its last minute)
    inputs = oracle.store.interval(i0 + 1).inputs
    assert inputs["steps_unix_s"] == [d.sim.timestamp(14)]
    records = d.sim.readings([14])
    loads = {x.device_id: x.bus for x in d.setup.devices if x.role == "load"}
    per_bus = {b: 0 for b in inputs["bus_ids"]}
    for rec in records:
        if int(rec[0]) in loads:
            per_bus[loads[int(rec[0])]] += int(rec[2])
    assert inputs["p_w"][0] == [per_bus[b] for b in inputs["bus_ids"]]
    transformer = next(x.device_id for x in d.setup.devices if x.role == "transformer")
    v_t = int(records[records[:, 0] == transformer][0, 4])
    assert inputs["v_slack_micro_pu"] == [v_t] and v_t != round(1.01e6)
    # the first interval had no readings before it: its state is the profile forecast
    assert oracle.store.interval(i0).n_missing == 15 * 22


def test_missing_meter_waits_for_grace_then_is_filled_and_reported(d: Deployed, tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    h05 = d.device("H05")
    skip = {m: [h05] for m in range(5, 15)}
    post_intervals(d, oracle, 0, 15, skip=skip)
    i0 = d.interval_of_minute(0)
    # H05's last minute is missing: interval i0 is not closed yet (only the bootstrap written)
    assert oracle.chain_last_interval() == i0
    d.chain.advance_time(30)
    oracle.step()
    assert oracle.chain_last_interval() == i0  # the chain's clock < end + grace (60 s)
    d.sim.post([15])  # posted at the end of minute 15: end + 60 s on the chain's clock
    oracle.step()
    assert oracle.chain_last_interval() == i0 + 1
    row = oracle.store.interval(i0 + 1)
    assert row.status == "written" and row.n_missing == 10
    assert row.n_readings == 15 * 25 - 10
    assert json.loads(row.missing_json) == {str(h05): {"last": 10, "forecast": 0}}
    # status sums over all intervals: 15 forecast minutes of the bootstrap interval + these 10
    assert oracle.status()["filled_meter_minutes"][str(h05)] == 15 + 10


def test_bad_readings_are_rejected_and_the_interval_still_processed(d: Deployed,
                                                                    tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 15)
    head_end = next(x.meter_role for x in d.setup.devices if x.role == "load")
    records = d.sim.readings([13, 14])
    duplicate = records[records[:, 0] == d.device("H01")][1].copy()  # minute 14, posted
    duplicate[2] = 100
    out_of_range = records[records[:, 0] == d.device("H02")][0].copy()  # minute 13
    out_of_range[2] = 10**8
    d.sim.post_records(head_end, np.array([duplicate, out_of_range]))
    oracle.step()
    assert oracle.chain_last_interval() == d.interval_of_minute(0) + 1
    status = oracle.status()
    assert status["rejected"] == 2 and status["intervals_written"] == 2
    assert status["rejected_by_rule"] == {"duplicate": 1, "p": 1}
    reasons = [r["reason"] for r in oracle.store.rejected_rows()]
    assert reasons[0].startswith("duplicate") and "outside the rated range" in reasons[1]


def test_a_fresh_oracle_starts_at_the_deployments_interval(d: Deployed, tmp_path) -> None:
    """A reading from before the deployment's interval (inside the reading window) does not
    make a fresh oracle start there: it starts at the first reading from then on."""
    deploy_s = int(d.chain.w3.eth.get_block(d.deployment.deploy_block)["timestamp"])
    before = (deploy_s // INTERVAL_S) * INTERVAL_S - 60  # the last minute before that interval
    early = d.sim.readings([0])
    early[:, 1] = before
    d.sim.post_by_meter(early)
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 15)
    i0 = d.interval_of_minute(0)
    assert oracle.status()["readings"] == 16 * 25  # the early ones are accepted, ...
    assert bands_written_events(d) == [i0, i0 + 1]  # ... but nothing before i0 is written
    assert oracle.deploy_interval == deploy_s // INTERVAL_S < i0


def test_targets_in_the_past_are_skipped_without_computing(d: Deployed, tmp_path) -> None:
    """The oracle was down for two intervals: the contract takes no band for an interval in the
    past, so those are recorded as skipped (not computed, nothing sent) and it goes on."""
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 15)
    i0 = d.interval_of_minute(0)
    d.sim.run(15, 45, batch_minutes=15)  # the oracle is down
    post_intervals(d, oracle, 45, 60)
    rows = {r.interval: r for r in oracle.store.intervals()}
    assert [rows[i].status for i in range(i0, i0 + 5)] == [
        "written", "written", "skipped", "skipped", "written"]
    assert rows[i0 + 2].reason.startswith("in the past") and rows[i0 + 2].inputs_json is None
    assert bands_written_events(d) == [i0, i0 + 1, i0 + 4] and oracle.store.failures() == []


def test_late_reading_is_stored_and_flagged(d: Deployed, tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    h05 = d.device("H05")
    post_intervals(d, oracle, 0, 15, skip={3: [h05]})
    assert oracle.chain_last_interval() == d.interval_of_minute(0) + 1
    rec = d.sim.readings([3])
    d.sim.post_records(next(x.meter_role for x in d.setup.devices if x.role == "load"),
                       rec[rec[:, 0] == h05])
    oracle.step()
    assert oracle.status()["late"] == 1


@pytest.mark.parametrize("crash_point", ["after-send", "before-send"])
def test_crash_and_restart_never_writes_twice_nor_skips(d: Deployed, tmp_path, monkeypatch,
                                                        crash_point: str) -> None:
    db = tmp_path / "o.sqlite"
    oracle = d.oracle(db)
    post_intervals(d, oracle, 0, 30)

    class Crash(BaseException):
        pass

    def crash(*_args, **_kwargs):
        raise Crash

    d.sim.run(30, 45, batch_minutes=15)
    if crash_point == "after-send":  # the transaction is mined, the receipt never seen
        monkeypatch.setattr(d.chain, "wait", crash)
    else:
        oracle.before_send = crash
    with pytest.raises(Crash):
        oracle.step()
    monkeypatch.undo()
    oracle.close()
    # a read-only status next to it changes nothing
    viewer = Oracle(d.chain, d.deployment, oracle.config, read_only=True)
    sent_before = [r.interval for r in viewer.store.intervals("sent")]
    assert sent_before == ([d.interval_of_minute(0) + 3] if crash_point == "after-send" else [])
    assert viewer.status()["next_interval"] == d.interval_of_minute(0) + (
        4 if crash_point == "after-send" else 3)
    assert [r.interval for r in viewer.store.intervals("sent")] == sent_before
    viewer.close()
    restarted = d.oracle(db)
    restarted.step()  # back within the interval: nothing is lost
    post_intervals(d, restarted, 45, 60)
    i0 = d.interval_of_minute(0)
    assert bands_written_events(d) == list(range(i0, i0 + 5))
    assert [r.interval for r in restarted.store.intervals("written")] == list(range(i0, i0 + 5))
    assert restarted.store.intervals("sent") == [] and restarted.store.intervals("skipped") == []


@pytest.mark.parametrize("explicit_gas", [None, 3_000_000], ids=["estimated", "mined-revert"])
def test_registry_revert_refreshes_and_retries(d: Deployed, tmp_path, explicit_gas) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite", explicit_gas=explicit_gas)
    post_intervals(d, oracle, 0, 1)
    d.sim.run(1, 15, batch_minutes=15)
    oracle.ingest()
    capacity = d.deployment.capacity(d.chain)
    cb = d.deployment.device_id("CB")
    # the DSO narrows the battery's rated range after the oracle read the registry
    d.chain.transact(capacity.functions.setRatedRange(cb, -10_000, 10_000), "deployer")
    written, skipped = oracle.process_ready()
    assert skipped == [] and written
    failures = oracle.store.failures()
    assert [f["action"] for f in failures] == ["refresh"]
    assert "OutsideRatedRange" in failures[0]["error"]
    assert (failures[0]["tx_hash"] is not None) == (explicit_gas is not None)
    for interval in written:
        _, lo_w, hi_w = band_on_chain(d, interval)
        assert -10_000 <= lo_w[0] <= hi_w[0] <= 10_000


def test_interval_taken_by_another_writer_is_recorded_from_the_chain(d: Deployed,
                                                                     tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 15)
    i0 = d.interval_of_minute(0)
    capacity = d.deployment.capacity(d.chain)
    rogue = d.chain.keys.address("settler")
    role = d.chain.call(capacity.functions.ORACLE_ROLE())
    d.chain.transact(capacity.functions.grantRole(role, rogue), "deployer")
    ids = [int(x["device_id"]) for x in d.deployment.devices]

    def rogue_writes_later_interval(target: int) -> None:
        if target == i0 + 2 and not d.chain.call(capacity.functions.intervalRecord(i0 + 3))[1]:
            d.chain.transact(capacity.functions.writeBands(
                i0 + 3, b"\x00" * 32, ids, [0, 0, 0], [0, 0, 0]), "settler")

    oracle.before_send = rogue_writes_later_interval
    post_intervals(d, oracle, 15, 60)
    rows = {r.interval: r for r in oracle.store.intervals()}
    assert rows[i0 + 2].status == "written" and rows[i0 + 2].tx_hash is not None
    assert rows[i0 + 3].status == "written" and "differs" in rows[i0 + 3].reason
    assert rows[i0 + 4].status == "written" and rows[i0 + 4].tx_hash is not None
    assert oracle.store.failures() == [] and oracle.status()["intervals_skipped"] == []


def test_a_band_written_after_its_interval_began_is_skipped(d: Deployed, tmp_path) -> None:
    """IntervalInPast: the chain's clock passed the interval while its band was computed."""
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 15)
    i0 = d.interval_of_minute(0)
    d.sim.run(15, 30, batch_minutes=15)
    oracle.ingest()
    oracle.before_send = lambda _target: d.chain.advance_time(INTERVAL_S)
    assert oracle.process_ready() == ([], [i0 + 2])
    assert "IntervalInPast" in oracle.store.interval(i0 + 2).reason
    assert [f["action"] for f in oracle.store.failures()] == ["skip"]


def test_lost_oracle_role_is_fatal(d: Deployed, tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    capacity = d.deployment.capacity(d.chain)
    role = d.chain.call(capacity.functions.ORACLE_ROLE())
    d.chain.transact(capacity.functions.revokeRole(role, d.chain.keys.address("oracle")),
                     "deployer")
    with pytest.raises(OracleFatal, match="AccessControlUnauthorizedAccount"):
        post_intervals(d, oracle, 0, 1)
    assert oracle.store.intervals("skipped") == []


def test_store_of_another_deployment_is_refused(d: Deployed, tmp_path) -> None:
    from oracle.store import Store, StoreMismatchError

    db = tmp_path / "o.sqlite"
    Store(db).bind({"chain_id": "1", "capacity": "0xabc", "feeder": "x"})
    with pytest.raises(StoreMismatchError, match="belongs to chain_id=1"):
        d.oracle(db)


def test_run_once_processes_what_is_there_and_returns(d: Deployed, tmp_path) -> None:
    d.sim.run(0, 30, batch_minutes=15)
    oracle = d.oracle(tmp_path / "o.sqlite")
    assert oracle.run(once=True) == 0
    i0 = d.interval_of_minute(0)
    assert bands_written_events(d) == [i0 + 2]  # a fresh oracle starts at the current interval
    status = oracle.status()
    assert status["last_interval_on_chain"] == i0 + 2 and status["next_interval"] == i0 + 3
    assert status["lag_blocks"] == 0 and status["readings"] == 30 * 25
    assert status["chain"] == "ok" and status["confirmations"] == 0


def _chain_down(_stop: object = None) -> StepReport:
    raise ChainUnavailable("http://node", 5)


def test_run_backs_off_on_rpc_failures_and_starts_over_after_a_step(d: Deployed, tmp_path,
                                                                    monkeypatch) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite", backoff_s=0.5, max_backoff_s=2.0,
                      poll_interval_s=0.0)
    outcomes = [_chain_down] * 4 + [StepReport] + [_chain_down]
    monkeypatch.setattr(oracle, "step", lambda _stop: outcomes.pop(0)())
    waits: list[float] = []

    def record_sleep(delay_s: float, _stop: object) -> bool:
        waits.append(delay_s)
        return not outcomes  # stop once every outcome was served

    monkeypatch.setattr("oracle.service.sleep", record_sleep)
    assert oracle.run(stop=lambda: False) == 0
    assert waits == [0.5, 1.0, 2.0, 2.0, 0.5]  # doubling, capped, reset after a step


def test_stop_ends_a_long_backoff_at_once(d: Deployed, tmp_path, monkeypatch) -> None:
    """SIGTERM sets the flag that ``stop`` reads; the oracle must not sleep out its backoff."""
    oracle = d.oracle(tmp_path / "o.sqlite", backoff_s=30.0, max_backoff_s=30.0)
    monkeypatch.setattr(oracle, "step", _chain_down)
    flag = threading.Event()
    threading.Timer(0.2, flag.set).start()
    started = time.monotonic()
    assert oracle.run(stop=flag.is_set) == 0
    assert time.monotonic() - started < 5.0


def test_reorg_dropping_readings_and_bands_is_read_and_written_again(d: Deployed,
                                                                     tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 15)
    i0 = d.interval_of_minute(0)
    snapshot = d.chain.snapshot()
    post_intervals(d, oracle, 15, 30)  # readings of i0+1 and the bands of i0+2: dropped below
    dropped = oracle.store.interval(i0 + 2)
    assert dropped.status == "written"
    d.chain.revert(snapshot)
    # the new branch: the same minutes, but H01's meter reports other values
    h01 = d.device("H01")
    records = d.sim.readings(list(range(15, 30)))
    records[records[:, 0] == h01, 2] += 500
    d.sim.await_chain_time(d.sim.timestamp(30))
    d.sim.post_by_meter(records)
    report = oracle.step()
    assert report.polls[0].reorg_depth > 0 and report.polls[0].forgotten_readings == 15 * 25
    assert report.written == [i0 + 2]
    again = oracle.store.interval(i0 + 2)
    assert again.inputs_hash != dropped.inputs_hash
    assert bands_written_events(d) == [i0, i0 + 1, i0 + 2]
    capacity = d.deployment.capacity(d.chain)
    assert "0x" + bytes(d.chain.call(capacity.functions.intervalRecord(i0 + 2))[0]).hex() == \
        again.inputs_hash
    rows = oracle.store.readings_between(d.sim.timestamp(15), d.sim.timestamp(30))
    assert sorted(r["p_w"] for r in rows if r["device_id"] == h01) == sorted(
        int(x) for x in records[records[:, 0] == h01, 2])
    # the readings read again on the new branch came before its band: none is late
    assert oracle.status()["late"] == 0


def test_a_band_that_fails_newton_raphson_is_not_written(d: Deployed, tmp_path,
                                                         monkeypatch) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    post_intervals(d, oracle, 0, 15)
    i0 = d.interval_of_minute(0)
    failed = NrCheck(None, None, points=16, failed=4, narrowed=3)
    monkeypatch.setattr("oracle.service.certify", lambda *_args: failed)
    post_intervals(d, oracle, 15, 30)
    row = oracle.store.interval(i0 + 2)
    assert row.status == "skipped" and row.reason.startswith("Newton-Raphson check failed")
    assert row.inputs_json is not None and (row.nr_points, row.nr_failed) == (16, 4)
    assert bands_written_events(d) == [i0, i0 + 1] and oracle.store.failures() == []
    nr = oracle.status()["nr_check"]
    assert nr["bands_not_written"] == [i0 + 2] and nr["failed_points"] == 4
    assert nr["points"] == 16 + 2 * 2  # and the two bands written before: 2 corners each
