"""Event ingestion on the embedded chain and on anvil: keys, windows, confirmations, reorgs,
rejected readings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from capacity.feeders import load_feeder
from gridshare.chain.client import connect
from gridshare.chain.config import ChainConfig
from oracle.ingest import Ingestor
from oracle.registry import DeviceRegistry
from oracle.store import Store
from tests.conftest import find_anvil, missing_tool
from tests.oracle.oracle_helpers import AnvilProcess, Deployed, deploy_feeder


@pytest.fixture(scope="module")
def feeder():
    return load_feeder("heimschuh-like")


@pytest.fixture(scope="module")
def own_anvil(tmp_path_factory) -> Iterator[AnvilProcess]:
    """The module's own anvil: the meter simulator moves its clock to the profile day's next
    midnight, which the session's anvil must not see."""
    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    work = tmp_path_factory.mktemp("anvil-ingest")
    node = AnvilProcess(binary, work / "state.json", work)  # type: ignore[arg-type]
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module",
                params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def base(request) -> Deployed:
    """One deployment per chain kind for the module; tests run on snapshots of it."""
    if request.param == "embedded":
        return deploy_feeder(connect())
    node = request.getfixturevalue("own_anvil")
    return deploy_feeder(connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0)))


@pytest.fixture(scope="module")
def embedded_base() -> Deployed:
    return deploy_feeder(connect())


def _on_snapshot(d: Deployed) -> Iterator[Deployed]:
    snapshot = d.chain.snapshot()
    try:
        yield d
    finally:
        d.chain.revert(snapshot)


@pytest.fixture
def deployed(base: Deployed) -> Iterator[Deployed]:
    yield from _on_snapshot(base)


@pytest.fixture
def embedded(embedded_base: Deployed) -> Iterator[Deployed]:
    yield from _on_snapshot(embedded_base)


def make_ingestor(d: Deployed, feeder, store: Store, **kwargs) -> Ingestor:
    capacity = d.deployment.capacity(d.chain)
    holder = {"registry": DeviceRegistry.from_chain(d.chain, capacity, feeder)}

    def refresh() -> None:
        holder["registry"] = DeviceRegistry.from_chain(d.chain, capacity, feeder)

    return Ingestor(d.chain, capacity, store, lambda: holder["registry"],
                    start_block=d.deployment.deploy_block, refresh_registry=refresh, **kwargs)


def drain(ingestor: Ingestor) -> list:
    reports = []
    while True:
        report = ingestor.poll()
        reports.append(report)
        if not report.advanced and not report.retry:
            return reports


def stored(store: Store) -> list[tuple[int, ...]]:
    rows = store.db.execute("SELECT device_id, timestamp, p_w, q_var, v_micro_pu, theta_micro_rad "
                            "FROM readings").fetchall()
    return sorted(tuple(r) for r in rows)


def expected(d: Deployed, minutes: range) -> list[tuple[int, ...]]:
    records = d.sim.readings(list(minutes))
    return sorted(tuple(int(x) for x in r) for r in records)


def test_readings_stored_once_and_rereading_is_harmless(deployed: Deployed, feeder) -> None:
    deployed.sim.post(range(0, 3))
    deployed.sim.post(range(3, 5))
    store = Store(":memory:")
    ingestor = make_ingestor(deployed, feeder, store)
    reports = drain(ingestor)
    assert sum(r.readings for r in reports) == 5 * len(deployed.setup.devices)
    assert sum(r.logs for r in reports) == 2 * 4  # per post: 3 flexibility meters + head-end
    assert stored(store) == expected(deployed, range(0, 5))
    assert store.cursor().block_number == deployed.chain.block_number
    # polling again adds nothing; forgetting the cursor and reading everything again neither
    assert sum(r.readings for r in drain(ingestor)) == 0
    store.rewind(None)
    assert store.counts(900)["readings"] == 0
    drain(ingestor)
    deploy_block = deployed.deployment.deploy_block
    deploy_hash = deployed.chain.w3.eth.get_block(deploy_block)["hash"].to_0x_hex()
    store.db.execute("UPDATE cursor SET block_number = ?, block_hash = ?",
                     (deploy_block, deploy_hash))
    assert sum(r.readings for r in drain(ingestor)) == 0  # same keys: ignored
    assert stored(store) == expected(deployed, range(0, 5))


def test_get_logs_over_bounded_windows(deployed: Deployed, feeder, monkeypatch) -> None:
    d = deployed
    start = d.chain.block_number + 1
    for minute in range(6):
        d.sim.post([minute])
    calls: list[tuple[int, int]] = []
    real = d.chain.w3.eth.get_logs

    def spy(params):
        calls.append((int(params["fromBlock"]), int(params["toBlock"])))
        return real(params)

    monkeypatch.setattr(d.chain.w3.eth, "get_logs", spy)
    store = Store(":memory:")
    ingestor = make_ingestor(d, feeder, store, window_blocks=3, max_blocks_per_poll=10)
    drain(ingestor)
    assert calls and all(0 <= hi - lo < 3 for lo, hi in calls)
    covered = sorted(b for lo, hi in calls for b in range(lo, hi + 1))
    assert covered == list(range(d.deployment.deploy_block, store.cursor().block_number + 1))
    assert store.cursor().block_number >= start + 6 * 4 - 1
    assert stored(store) == expected(d, range(0, 6))


def test_confirmations_hold_back_the_newest_blocks(embedded: Deployed, feeder) -> None:
    d = embedded
    store = Store(":memory:")
    ingestor = make_ingestor(d, feeder, store, confirmations=2)
    for minute in range(3):
        d.sim.post([minute])  # one block per transaction on the embedded chain
    drain(ingestor)
    head = d.chain.block_number
    assert store.cursor().block_number == head - 2
    # the last two blocks (CS02's meter: 1 reading, the head-end: 22) are not read yet
    assert store.counts(900)["readings"] == 3 * 25 - 1 - 22
    assert store.db.execute("SELECT MAX(block_number) FROM readings").fetchone()[0] == head - 2
    d.chain.advance_time(1)
    d.chain.advance_time(1)
    drain(ingestor)
    assert stored(store) == expected(d, range(0, 3))


def test_reorg_forgets_dropped_readings_and_reads_the_new_ones(deployed: Deployed,
                                                               feeder) -> None:
    d = deployed
    d.sim.post([0])
    store = Store(":memory:")
    ingestor = make_ingestor(d, feeder, store)
    drain(ingestor)
    snapshot = d.chain.snapshot()
    d.sim.post([1, 2])  # these blocks will be dropped
    drain(ingestor)
    assert stored(store) == expected(d, range(0, 3))
    dropped_tip = store.cursor()
    d.chain.revert(snapshot)
    d.sim.post([5])  # the new branch carries other readings
    d.sim.post([6])
    reports = drain(ingestor)
    assert reports[0].reorg_depth > 0 and reports[0].forgotten_readings == 2 * 25
    assert stored(store) == sorted(expected(d, range(0, 1)) + expected(d, range(5, 7)))
    assert store.cursor().block_hash != dropped_tip.block_hash
    assert store.cursor().block_number == d.chain.block_number


def test_restarted_ingestor_sees_a_reorg_from_the_stored_hashes(deployed: Deployed,
                                                                feeder) -> None:
    """A new Ingestor on the same store (an oracle restart) resumes its reader from the stored
    cursor and block hashes, so a reorg that happened while it was down is still found."""
    d = deployed
    d.sim.post([0])
    store = Store(":memory:")
    drain(make_ingestor(d, feeder, store))
    snapshot = d.chain.snapshot()
    d.sim.post([1])
    drain(make_ingestor(d, feeder, store))
    d.chain.revert(snapshot)
    d.sim.post([4])
    reports = drain(make_ingestor(d, feeder, store))
    assert reports[0].reorg_depth > 0 and reports[0].forgotten_readings == 25
    assert stored(store) == sorted(expected(d, range(0, 1)) + expected(d, range(4, 5)))


def test_bad_readings_rejected_with_reasons(deployed: Deployed, feeder) -> None:
    d = deployed
    capacity = d.deployment.capacity(d.chain)
    head_end = next(x.meter_role for x in d.setup.devices if x.role == "load")
    # a device the DSO registered at a bus the oracle's feeder model does not have
    d.chain.transact(capacity.functions.registerDevice(
        99, 999, 2, d.chain.keys.address("deployer"), d.chain.keys.address(head_end), 0, 10_000,
    ), "deployer")
    d.sim.post([0])
    good = d.sim.readings([1])
    h01 = d.device("H01")
    row = good[good[:, 0] == h01][0]
    ts0 = d.sim.timestamp(0)
    now_s = int(d.chain.w3.eth.get_block("latest")["timestamp"]) // 60 * 60
    theta = row[5]
    blob = np.array([
        row,                                               # fine
        [h01, ts0, row[2], row[3], row[4], theta],         # duplicate of minute 0 (other tx)
        [h01, row[1], 1, 1, 1_000_000, theta],             # duplicate inside the same blob
        [d.device("H02"), row[1], 10**9, 0, 1_000_000, theta],  # P far outside the rated range
        [d.device("H03"), row[1], 100, 0, 2_000_000, theta],   # V = 2 pu
        [99, row[1], 100, 0, 1_000_000, 0],                # unknown device
        [d.device("H04"), now_s + 2 * 86_400, 100, 0, 1_000_000, theta],  # two days ahead
        [d.device("H05"), now_s - 10 * 86_400, 100, 0, 1_000_000, theta],  # ten days back
        [d.device("H06"), row[1], 100, 0, 1_000_000, 0],   # angle 150 degrees off its bus
    ])
    d.sim.post_records(head_end, blob)
    store = Store(":memory:")
    drain(make_ingestor(d, feeder, store))
    reasons = {(r["device_id"], r["position"]): (r["rule"], r["reason"])
               for r in store.rejected_rows()}
    assert {k: v[0] for k, v in reasons.items()} == {
        (h01, 1): "duplicate", (h01, 2): "duplicate", (d.device("H02"), 3): "p",
        (d.device("H03"), 4): "v", (99, 5): "unknown_device", (d.device("H04"), 6): "window",
        (d.device("H05"), 7): "window", (d.device("H06"), 8): "angle"}
    assert "after its block's time" in reasons[(d.device("H04"), 6)][1]
    assert "before its block's time" in reasons[(d.device("H05"), 7)][1]
    assert "outside the rated range" in reasons[(d.device("H02"), 3)][1]
    assert "outside the plausible range" in reasons[(d.device("H03"), 4)][1]
    assert "bus 999 is not in the feeder" in reasons[(99, 5)][1]
    accepted = store.readings_between(row[1], row[1] + 1)
    assert [(r["device_id"], r["p_w"]) for r in accepted] == [(h01, int(row[2]))]
    counts = store.counts(d.deployment.interval_s)
    assert (counts["readings"], counts["late"], counts["rejected"]) == (25 + 1, 0, 8)
    assert counts["rejected_by_rule"] == {"angle": 1, "duplicate": 2, "p": 1,
                                          "unknown_device": 1, "v": 1, "window": 2}


def test_each_rejection_is_logged_naming_meter_device_and_reason(embedded: Deployed, feeder,
                                                                  caplog) -> None:
    d = embedded
    load = next(x for x in d.setup.devices if x.role == "load")
    now_s = int(d.chain.w3.eth.get_block("latest")["timestamp"]) // 60 * 60
    readings = d.sim.readings([0])
    row = readings[readings[:, 0] == load.device_id].copy()
    row[0, 1] = now_s + 30 * 86_400
    d.sim.post_records(load.meter_role, row)
    store = Store(":memory:")
    with caplog.at_level("WARNING", logger="oracle.ingest"):
        drain(make_ingestor(d, feeder, store))
    head_end = load.meter_role
    lines = [r.getMessage() for r in caplog.records if "rejected reading" in r.getMessage()]
    assert len(lines) == 1
    assert f"meter {d.chain.keys.address(head_end)}, device {row[0, 0]}, minute" in lines[0]
    assert "window: minute" in lines[0] and "after its block's time" in lines[0], lines


@pytest.mark.anvil
def test_anvil_reorg_of_the_last_blocks(own_anvil, feeder) -> None:
    """anvil_reorg replaces the last blocks by new (empty) ones: their readings are forgotten;
    readings posted afterwards are read."""
    d = deploy_feeder(connect(ChainConfig(chain=own_anvil.url, receipt_timeout_s=20.0)))
    d.sim.post([0])
    store = Store(":memory:")
    ingestor = make_ingestor(d, feeder, store)
    drain(ingestor)
    d.sim.post([1])
    drain(ingestor)
    assert stored(store) == expected(d, range(0, 2))
    depth = d.chain.block_number - store.db.execute(
        "SELECT MIN(block_number) FROM readings WHERE timestamp = ?",
        (d.sim.timestamp(1),)).fetchone()[0] + 1
    d.chain._rpc("anvil_reorg", [depth, []])
    d.chain.nonces.resync()
    reports = drain(ingestor)
    assert reports[0].reorg_depth > 0 and reports[0].forgotten_readings == 25
    assert stored(store) == expected(d, range(0, 1))
    d.sim.post([2])
    drain(ingestor)
    assert stored(store) == sorted(expected(d, range(0, 1)) + expected(d, range(2, 3)))
