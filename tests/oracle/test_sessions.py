"""Vehicle sessions declared on chain: layout, the rules a declaration must pass, which stations
are connected, the store, and the stations' bands without a vehicle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from capacity.feeders import load_feeder
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.ocm.policy import BandPolicy, policy_vectors
from gridshare.chain.client import connect
from oracle.registry import DeviceRegistry, ReadingWindow
from oracle.service import without_vehicle_off
from oracle.sessions import (
    MAX_SESSION_S,
    MAX_SESSION_WH,
    SESSION_BYTES,
    connected_stations,
    decode_sessions,
    encode_sessions,
    session_rejection,
)
from oracle.store import SESSION_COLUMNS, Cursor, Store
from tests.oracle.oracle_helpers import FAST_OCM, audit_stale, band_on_chain, deploy_feeder

U32 = 0xFFFFFFFF
METER = "0x00000000000000000000000000000000000000A1"
OTHER = "0x00000000000000000000000000000000000000B2"
T = 1_800_000_000  # block time (unix s)
STATION, BATTERY, LOAD, NO_METER = 7, 8, 9, 10


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    feeder = load_feeder("heimschuh-like")
    bus = int(feeder.bus_ids[3])
    records = [
        {"device_id": STATION, "bus": bus, "kind": "charging_station", "p_min_rated_w": 0,
         "p_max_rated_w": 11_000, "meter": METER},
        {"device_id": BATTERY, "bus": bus, "kind": "community_battery",
         "p_min_rated_w": -50_000, "p_max_rated_w": 50_000, "meter": METER},
        {"device_id": LOAD, "bus": bus, "kind": "other", "p_min_rated_w": -10_000,
         "p_max_rated_w": 10_000, "meter": METER},
        {"device_id": NO_METER, "bus": bus, "kind": "charging_station", "p_min_rated_w": 0,
         "p_max_rated_w": 11_000, "meter": ""},
    ]
    return DeviceRegistry.from_records(records, feeder)


def _session(device: int = STATION, arrive: int = T - 600, depart: int = T + 3600,
             energy: int = 20_000) -> dict[str, int]:
    return {"device_id": device, "arrive_s": arrive, "depart_s": depart, "energy_wh": energy}


def _rule(registry: DeviceRegistry, session: dict[str, int], meter: str = METER) -> str | None:
    verdict = session_rejection(session, registry, block_time_s=T, meter=meter)
    return None if verdict is None else verdict[0]


# ---- layout
@pytest.mark.parametrize("record", [(0, 0, 0, 0), (U32, U32, U32, U32), (7, T, T + 1, 1)])
def test_records_round_trip_at_the_uint32_extremes(record) -> None:
    packed = encode_sessions([record])
    assert len(packed) == SESSION_BYTES
    assert tuple(int(v) for v in decode_sessions(packed)[0].tolist()) == record


@pytest.mark.parametrize("record", [(-1, T, T + 1, 0), (7, U32 + 1, T, 0), (7, T, T + 1, 2.5),
                                    (7, T, T + 1, 2**64)])
def test_a_field_outside_uint32_is_refused_never_wrapped(record) -> None:
    with pytest.raises(ValueError, match=r"0\.\.4294967295"):
        encode_sessions([record])


@pytest.mark.parametrize("records", [[], [(1, 2, 3)], [(1, 2, 3, 4, 5)]])
def test_a_malformed_batch_is_refused(records) -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_sessions(records)


@pytest.mark.parametrize("n_bytes", [0, 1, 15, 17, 31])
def test_a_blob_of_the_wrong_length_is_refused(n_bytes: int) -> None:
    with pytest.raises(ValueError, match="not a multiple of 16"):
        decode_sessions(b"\x00" * n_bytes)


# ---- rules
def test_a_plausible_session_of_the_station_s_own_meter_counts(registry) -> None:
    assert _rule(registry, _session()) is None
    assert _rule(registry, _session(), meter=METER.lower()) is None  # addresses: any case


@pytest.mark.parametrize(("session", "meter", "rule"), [
    (_session(device=0), METER, "unknown_device"),
    (_session(device=U32), METER, "unknown_device"),
    (_session(device=BATTERY), METER, "not_station"),
    (_session(device=LOAD), METER, "not_station"),
    (_session(), OTHER, "meter"),
    (_session(device=NO_METER), METER, "meter"),
    (_session(arrive=T, depart=T), METER, "times"),
    (_session(arrive=T, depart=T - 1), METER, "times"),
    (_session(arrive=T - 600, depart=T - 600 + MAX_SESSION_S + 1), METER, "times"),
    (_session(arrive=0, depart=U32), METER, "times"),
    (_session(arrive=T + 61, depart=T + 3600), METER, "window"),  # a booking for later
    (_session(arrive=U32 - 1, depart=U32), METER, "window"),
    (_session(arrive=T - 7200, depart=T - 3601), METER, "window"),  # long gone
    (_session(arrive=0, depart=1), METER, "window"),
    (_session(energy=MAX_SESSION_WH + 1), METER, "energy"),
    (_session(energy=U32), METER, "energy"),
])
def test_each_rule_rejects_what_it_names(registry, session, meter, rule) -> None:
    assert _rule(registry, session, meter) == rule


@pytest.mark.parametrize("session", [
    _session(arrive=T + 60, depart=T + 120),  # clock skew of the window's max_ahead_s
    _session(arrive=T - 7200, depart=T - 3600),  # posted late, within max_age_s
    _session(arrive=T - 600, depart=T - 600 + MAX_SESSION_S),  # a whole week
    _session(energy=0), _session(energy=MAX_SESSION_WH),
])
def test_the_limits_themselves_are_accepted(registry, session) -> None:
    assert _rule(registry, session) is None


def test_the_window_is_the_oracle_s_reading_window(registry) -> None:
    late = _session(arrive=T - 9000, depart=T - 7200)
    assert _rule(registry, late) == "window"
    assert session_rejection(late, registry, block_time_s=T, meter=METER,
                             window=ReadingWindow(max_age_s=7200)) is None


# ---- connected stations
def _row(device: int, arrive: int, depart: int, block: int, log_index: int = 0,
         position: int = 0) -> dict[str, int]:
    return {"device_id": device, "arrive_s": arrive, "depart_s": depart, "energy_wh": 1,
            "block_number": block, "log_index": log_index, "position": position}


@pytest.mark.parametrize(("arrive", "depart", "connected"), [
    (100, 200, True), (0, 101, True), (199, 300, True),
    (0, 100, False),  # left as the interval starts
    (200, 300, False),  # arrives as it ends
])
def test_a_station_is_connected_when_its_session_overlaps_the_interval(arrive, depart,
                                                                       connected) -> None:
    assert connected_stations([_row(STATION, arrive, depart, 1)], 100, 200) == (
        [STATION] if connected else [])


def test_the_latest_declaration_of_a_session_counts_in_chain_order() -> None:
    first, early_leave = _row(STATION, 0, 1000, 5), _row(STATION, 0, 150, 6)
    assert connected_stations([early_leave, first], 200, 300) == []  # list order is not chain
    assert connected_stations([first, early_leave], 100, 200) == [STATION]
    later_in_block = _row(STATION, 0, 1000, 6, log_index=1)
    assert connected_stations([first, early_leave, later_in_block], 200, 300) == [STATION]
    assert connected_stations([_row(3, 0, 500, 1), _row(2, 0, 500, 1)], 0, 100) == [2, 3]


# ---- store
def _store_row(position: int, device: int, arrive: int, depart: int, block: int,
               rule: str | None = None) -> tuple:
    return ("0xaa", 0, position, block, METER, device, arrive, depart, 5_000, rule,
            None if rule is None else "why")


def test_the_store_keeps_sessions_and_a_reorg_forgets_those_above_its_ancestor() -> None:
    store = Store(":memory:")
    rows = [_store_row(0, STATION, T, T + 3600, 10), _store_row(1, STATION, T + 10, T + 20, 12),
            _store_row(2, STATION, T, T + 60, 12, rule="meter")]
    store.commit_range(Cursor(12, "0x12"), {10: "0x10"}, [], [], sessions=rows)
    store.commit_range(Cursor(12, "0x12"), {}, [], [], sessions=rows)  # read twice: harmless
    got = store.sessions_between(T, T + 900, MAX_SESSION_S)
    assert [(r["position"], r["depart_s"]) for r in got] == [(0, T + 3600), (1, T + 20)]
    assert [r["rule"] for r in store.rejected_sessions()] == ["meter"]
    assert store.sessions_between(T + 3600, T + 4500, 5) == []  # arrived too long before
    store.rewind(Cursor(10, "0x10"))
    assert [r["position"] for r in store.sessions_between(T, T + 900, MAX_SESSION_S)] == [0]
    assert store.rejected_sessions() == []
    store.close()
    assert SESSION_COLUMNS[-2:] == ("rule", "reason")


# ---- bands of a station without a vehicle
def test_without_a_vehicle_a_station_is_rated_zero_and_gets_no_guarantee() -> None:
    devices = [[STATION, 3, 0, 11_000, "charging_station"], [11, 4, 0, 22_000, "charging_station"],
               [BATTERY, 5, -50_000, 50_000, "community_battery"]]
    inputs = {"devices": devices, "ocm": {"station_sessions": True}, "connected": [11]}
    assert without_vehicle_off(inputs) == [[STATION, 3, 0, 0, "charging_station"], devices[1],
                                           devices[2]]
    assert without_vehicle_off({**inputs, "ocm": {}}) == devices  # the setting off: as before
    flex = [Flexibility("off", 3, 0.0, 0.0, FlexibilityKind.CHARGING_STATION),
            Flexibility("on", 4, 0.0, 22.0, FlexibilityKind.CHARGING_STATION)]
    pv = policy_vectors(BandPolicy(committed_min_kw={"on": 6.0}), flex)
    np.testing.assert_array_equal(pv.guarantee_kw, [0.0, 6.0])
    np.testing.assert_array_equal(pv.floor_kw, [0.0, 6.0])


# ---- on chain: the oracle, the wrong meter, the audit
@pytest.fixture(scope="module")
def declared():
    """An oracle with ``station_sessions`` after interval 09:45 of the meter simulator's day:
    CS01's meter declared a vehicle, CS02's meter one that left before 10:00 and one for CS01
    (not counted)."""
    d = deploy_feeder(connect())
    ocm = dataclasses.replace(FAST_OCM, objective="fair", band_policy=BandPolicy(),
                              station_sessions=True)
    oracle = d.oracle(":memory:", ocm=ocm)
    first = 600
    d.sim.post(range(first - 15, first))
    d.sim.declare_sessions([("CS01", first - 10, first + 120, 20_000)])
    cs02_meter = next(x.meter_role for x in d.setup.devices if x.name == "CS02")
    d.chain.transact(d.sim.capacity.functions.declareSessions(encode_sessions(
        [(d.device("CS02"), d.sim.timestamp(first - 60), d.sim.timestamp(first - 20), 1)])),
        cs02_meter)
    d.chain.transact(d.sim.capacity.functions.declareSessions(encode_sessions(
        [(d.device("CS01"), d.sim.timestamp(first - 5), d.sim.timestamp(first + 600), 1)])),
        cs02_meter)
    oracle.step()
    yield d, oracle, ocm, d.interval_of_minute(first)
    oracle.close()


def test_only_the_station_with_a_declared_vehicle_gets_a_band(declared) -> None:
    d, oracle, _, target = declared
    ids, p_min, p_max = band_on_chain(d, target)
    band = dict(zip(ids, zip(p_min, p_max, strict=True), strict=True))
    assert band[d.device("CS02")] == (0, 0)
    assert band[d.device("CS01")][0] == 0 and band[d.device("CS01")][1] >= 4_200
    assert oracle.store.interval(target).inputs["connected"] == [d.device("CS01")]


def test_a_session_declared_by_another_station_s_meter_does_not_count(declared) -> None:
    d, oracle, _, _ = declared
    rejected = oracle.store.rejected_sessions()
    assert [(r["device_id"], r["rule"]) for r in rejected] == [(d.device("CS01"), "meter")]
    assert len(oracle.store.sessions_between(0, 2**32, MAX_SESSION_S)) == 2  # CS01's, CS02's


def test_the_audit_recomputes_the_connected_stations_from_the_chain(declared) -> None:
    d, _, ocm, target = declared
    for sessions, stale in ((True, False), (False, True)):
        verdicts = audit_stale(d, dataclasses.replace(ocm, station_sessions=sessions), target)
        assert verdicts and all(v is stale for v in verdicts)


def test_a_reorg_forgets_a_declaration_the_new_branch_does_not_carry() -> None:
    d = deploy_feeder(connect())
    ocm = dataclasses.replace(FAST_OCM, objective="fair", band_policy=BandPolicy(),
                              station_sessions=True)
    oracle = d.oracle(":memory:", ocm=ocm)
    first = 600
    d.sim.post(range(first - 30, first - 15))
    oracle.step()
    snapshot = d.chain.snapshot()
    d.sim.declare_sessions([("CS01", first - 20, first + 120, 20_000)])
    oracle.step()
    assert len(oracle.store.sessions_between(0, 2**32, MAX_SESSION_S)) == 1
    d.chain.revert(snapshot)  # the new branch: the readings, no declaration
    d.sim.post(range(first - 15, first))
    report = oracle.step()
    assert report.polls[0].reorg_depth > 0
    assert oracle.store.sessions_between(0, 2**32, MAX_SESSION_S) == []
    ids, _, p_max = band_on_chain(d, d.interval_of_minute(first))
    assert dict(zip(ids, p_max, strict=True))[d.device("CS01")] == 0
    oracle.close()
