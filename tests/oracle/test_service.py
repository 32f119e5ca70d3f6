"""The oracle service on the embedded chain: bands equal OCM on the hashed inputs, missing and
bad readings, restart after a crash, every revert rule."""

from __future__ import annotations

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
from oracle.service import Oracle, OracleFatal, StepReport, canonical_bytes
from tests.oracle.oracle_helpers import (
    FAST_OCM,
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


def post_intervals(d: Deployed, oracle: Oracle | None, first: int, last: int, **kw) -> None:
    """Post minutes first..last-1 in 15-minute batches, stepping the oracle after each."""
    d.sim.run(first, last, batch_minutes=15,
              after_batch=(lambda _m: oracle.step()) if oracle is not None else None, **kw)


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
    d.sim.run(0, 15, batch_minutes=15, skip=skip)
    oracle.step()
    i0 = d.interval_of_minute(0)
    # H05's last minute is missing: interval i0 is not closed yet (only the bootstrap written)
    assert oracle.chain_last_interval() == i0
    d.sim.post([15])
    oracle.step()
    assert oracle.chain_last_interval() == i0  # minute 15 < end + grace (60 s)
    d.sim.post([16])
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
    d.sim.run(0, 15, batch_minutes=15)
    h01, head_end = d.device("H01"), next(x.meter_role for x in d.setup.devices
                                           if x.role == "load")
    ts = d.sim.timestamp(14)
    d.sim.post_records(head_end, np.array([
        [h01, ts, 100, 10, 1_000_000, 0],               # duplicate of the posted minute 14
        [d.device("H02"), ts - 60, 10**8, 0, 1_000_000, 0],  # P out of range (and duplicate)
    ]))
    oracle.step()
    assert oracle.chain_last_interval() == d.interval_of_minute(0) + 1
    status = oracle.status()
    assert status["rejected"] == 2 and status["intervals_written"] == 2
    reasons = [r["reason"] for r in oracle.store.rejected_rows()]
    assert reasons[0].startswith("duplicate") and "outside the rated range" in reasons[1]


def test_late_reading_is_stored_and_flagged(d: Deployed, tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    h05 = d.device("H05")
    d.sim.run(0, 15, batch_minutes=15, skip={3: [h05]})
    oracle.step()
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
    post_intervals(d, restarted, 45, 60)
    i0 = d.interval_of_minute(0)
    assert bands_written_events(d) == list(range(i0, i0 + 5))
    assert [r.interval for r in restarted.store.intervals("written")] == list(range(i0, i0 + 5))
    assert restarted.store.intervals("sent") == [] and restarted.store.intervals("skipped") == []


@pytest.mark.parametrize("explicit_gas", [None, 3_000_000], ids=["estimated", "mined-revert"])
def test_registry_revert_refreshes_and_retries(d: Deployed, tmp_path, explicit_gas) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite", explicit_gas=explicit_gas)
    d.sim.run(0, 15, batch_minutes=15)
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


def test_interval_lost_to_another_writer_is_skipped_with_reason(d: Deployed, tmp_path) -> None:
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
    assert rows[i0 + 2].status == "skipped" and "IntervalNotMonotonic" in rows[i0 + 2].reason
    assert rows[i0 + 3].status == "written" and "differs" in rows[i0 + 3].reason
    assert rows[i0 + 4].status == "written" and rows[i0 + 4].tx_hash is not None
    assert [f["action"] for f in oracle.store.failures()] == ["skip"]
    assert oracle.status()["intervals_skipped"] == [i0 + 2]


def test_lost_oracle_role_is_fatal(d: Deployed, tmp_path) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite")
    capacity = d.deployment.capacity(d.chain)
    role = d.chain.call(capacity.functions.ORACLE_ROLE())
    d.chain.transact(capacity.functions.revokeRole(role, d.chain.keys.address("oracle")),
                     "deployer")
    d.sim.run(0, 15, batch_minutes=15)
    with pytest.raises(OracleFatal, match="AccessControlUnauthorizedAccount"):
        oracle.step()
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
    assert bands_written_events(d) == [i0, i0 + 1, i0 + 2]
    status = oracle.status()
    assert status["last_interval_on_chain"] == i0 + 2 and status["next_interval"] == i0 + 3
    assert status["lag_blocks"] == 0 and status["readings"] == 30 * 25


def _chain_down() -> StepReport:
    raise ChainUnavailable("http://node", 5)


def test_run_backs_off_on_rpc_failures_and_starts_over_after_a_step(d: Deployed, tmp_path,
                                                                    monkeypatch) -> None:
    oracle = d.oracle(tmp_path / "o.sqlite", backoff_s=0.5, max_backoff_s=2.0,
                      poll_interval_s=0.25)
    outcomes = [_chain_down] * 4 + [StepReport] + [_chain_down]
    monkeypatch.setattr(oracle, "step", lambda: outcomes.pop(0)())
    waits: list[float] = []

    def record_sleep(delay_s: float, _stop: object) -> bool:
        waits.append(delay_s)
        return not outcomes  # stop once every outcome was served

    monkeypatch.setattr("oracle.service.sleep", record_sleep)
    assert oracle.run(stop=lambda: False) == 0
    assert waits == [0.5, 1.0, 2.0, 2.0, 0.25, 0.5]


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
