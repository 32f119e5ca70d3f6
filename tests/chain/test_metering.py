"""The metering rule (gridshare.chain.metering): energy per device and interval from readings,
the totals blob, and which readings count (the registry's meter, on the embedded chain)."""

from __future__ import annotations

import pytest

from gridshare.chain.client import connect
from gridshare.chain.deploy import DeployParams, deploy
from gridshare.chain.metering import (
    READING,
    MeteringReader,
    decode_totals,
    encode_totals,
    interval_energy_wh,
    write_meter_totals,
)

T = 900  # interval length, s
N = 2_000_000  # an interval; it starts at N * T


def test_each_reading_holds_until_the_next_and_the_first_covers_the_start() -> None:
    start = N * T
    readings = [(7, start + 300, 1_000), (7, start + 60, 4_000), (8, start + 899, -3_600)]
    # device 7: 4000 W from the start to +300 s, then 1000 W to the end: (1200 + 600) kWs
    # device 8: one reading, held for the whole interval
    assert interval_energy_wh(readings, N, T) == {7: 500, 8: -900}


def test_readings_outside_the_interval_and_duplicates_do_not_count() -> None:
    start = N * T
    readings = [(7, start - 1, 10**6), (7, start + T, 10**6), (7, start, 3_600),
                (7, start, 99_999)]  # the first of a (device, timestamp) wins
    assert interval_energy_wh(readings, N, T) == {7: 900}
    assert interval_energy_wh([], N, T) == {}


@pytest.mark.parametrize(("p_w", "wh"), [(2, 1), (-2, -1), (1, 1), (-1, -1), (3, 2), (-3, -2)])
def test_rounding_is_half_away_from_zero(p_w: int, wh: int) -> None:
    # p_w W held for a whole 1800 s interval is p_w / 2 Wh: 0.5 -> 1, 1.5 -> 2, -0.5 -> -1
    assert interval_energy_wh([(1, 0, p_w)], 0, 1800) == {1: wh}


def test_just_below_a_half_rounds_down() -> None:
    # 1 W for 1799 s then 0 W: 1799 Ws = 0.4997 Wh
    assert interval_energy_wh([(1, 0, 1), (1, 1799, 0)], 0, 1800) == {1: 0}


def test_int32_extremes_do_not_overflow() -> None:
    start = N * T
    lo, hi = -(2**31), 2**31 - 1
    got = interval_energy_wh([(1, start, lo), (2, start, hi)], N, T)
    assert got == {1: lo * T // 3600, 2: (hi * T + 1800) // 3600}


def test_totals_blob_round_trips_sorted() -> None:
    totals = {9: 2**63 - 1, 1: -(2**63), 2**32 - 1: 0}
    blob = encode_totals(totals)
    assert len(blob) == 36 and blob[:4] == (1).to_bytes(4, "big")
    assert decode_totals(blob) == totals
    with pytest.raises(ValueError, match="multiple of 12"):
        decode_totals(blob[:-1])


def test_only_the_registered_meter_counts_and_totals_are_written() -> None:
    chain = connect()
    dep = deploy(chain, DeployParams(feeder="heimschuh-like"))
    capacity = dep.capacity(chain)
    member = dep.prosumers[0]
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    interval = now // dep.interval_s
    start = interval * dep.interval_s
    own = READING.pack(member["device_id"], start, 2_000, 0, 1_000_000, 0)
    foreign = READING.pack(member["device_id"], start, 99_000, 0, 1_000_000, 0)
    chain.transact(capacity.functions.postReadings(foreign), "meter_0")  # the battery's meter
    chain.transact(capacity.functions.postReadings(own), member["meter_role"])
    reader = MeteringReader(chain, capacity, dep.deploy_block, dep.interval_s)
    assert reader.totals(interval) == {member["device_id"]: 500}
    chain.advance_time(start + dep.interval_s - now)
    totals, receipt = write_meter_totals(chain, reader, interval)
    assert receipt["status"] == 1 and decode_totals(reader.written(interval)) == totals
    assert reader.written(interval + 1) is None
