"""Feeder state from readings: registry roles, rejection rules, fill rules, forecast steps."""

from __future__ import annotations

import numpy as np
import pytest

from capacity.feeders import load_feeder
from oracle.forecast import ProfileForecast, forecast_steps, intersect_bands
from oracle.ingest import decode_readings, encode_readings
from oracle.registry import (
    ANGLE_TOLERANCE_MICRO_RAD,
    READING_FIELDS,
    RULES,
    DeviceRegistry,
    ReadingWindow,
    rejection,
    rejection_codes,
)
from oracle.state import build_state, minutes_per_interval

INTERVAL_S = 900
INTERVAL = 2_000_000  # any id; its start is INTERVAL * 900 s
START_S = INTERVAL * INTERVAL_S


@pytest.fixture(scope="module")
def feeder():
    return load_feeder("heimschuh-like")


@pytest.fixture(scope="module")
def registry(feeder) -> DeviceRegistry:
    records = [
        {"device_id": 1, "kind": 0, "bus": 10, "p_min_rated_w": -50_000, "p_max_rated_w": 50_000},
        {"device_id": 2, "kind": 1, "bus": 8, "p_min_rated_w": 0, "p_max_rated_w": 22_000},
        {"device_id": 4, "kind": 2, "bus": 0, "p_min_rated_w": -250_000,
         "p_max_rated_w": 250_000},
        {"device_id": 5, "kind": 2, "bus": 14, "p_min_rated_w": -5_000, "p_max_rated_w": 15_000},
        {"device_id": 6, "kind": 2, "bus": 15, "p_min_rated_w": -4_000, "p_max_rated_w": 30_000},
        {"device_id": 7, "kind": 2, "bus": 15, "p_min_rated_w": 0, "p_max_rated_w": 10_000},
        {"device_id": 9, "kind": 2, "bus": 999, "p_min_rated_w": 0, "p_max_rated_w": 1_000},
    ]
    for rec in records:
        rec["meter"] = "0x00000000000000000000000000000000000000aa"
    return DeviceRegistry.from_records(records, feeder, names={1: "CB"})


@pytest.fixture(scope="module")
def forecast(feeder) -> ProfileForecast:
    """A synthetic forecast: bus column c draws 100*(c+1) W and 10*(c+1) var at every minute,
    except the flexibilities' buses 10 and 8 (no uncontrollable load there, as in the profiles)."""
    cols = np.arange(feeder.n_bus)
    p = np.tile(100 * (cols + 1), (1440, 1)).astype(np.int64)
    p[:, [feeder.bus_position(10), feeder.bus_position(8)]] = 0
    return ProfileForecast(p, p // 10, day_start_s=START_S - 3600)


#: No-load voltage angle of the test devices' buses (heimschuh-like: the MV/LV transformer's
#: -150 degree shift behind every LV bus), micro-rad.
LV_ANGLE = -2_618_090


def reading(device_id: int, minute: int, p_w: int = 1000, q_var: int = 300,
            v_micro_pu: int = 1_000_000, theta: int | None = None) -> dict[str, int]:
    theta = (0 if device_id == 4 else LV_ANGLE) if theta is None else theta
    return dict(zip(READING_FIELDS, (device_id, START_S + 60 * minute, p_w, q_var, v_micro_pu,
                                     theta), strict=True))


METER = "0x00000000000000000000000000000000000000AA"


def test_registry_roles(registry: DeviceRegistry) -> None:
    roles = {i: d.role for i, d in registry.devices.items()}
    assert roles == {1: "flexibility", 2: "flexibility", 4: "transformer", 5: "load",
                     6: "load", 7: "load", 9: "unknown"}
    flex = registry.flexibilities()
    assert [(f.name, f.bus_id, f.p_low_kw, f.p_high_kw) for f in flex] == [
        ("CB", 10, -50.0, 50.0), ("device-2", 8, 0.0, 22.0)]
    assert registry.devices[4].angle_micro_rad == 0
    assert abs(registry.devices[5].angle_micro_rad - LV_ANGLE) < 1000


def test_valid_reading_passes(registry: DeviceRegistry) -> None:
    block_s = START_S + 60
    assert rejection(reading(5, 0), registry, block_time_s=block_s, meter=METER) is None
    assert rejection(reading(5, 0, p_w=-5_000 - 1_500), registry) is None  # within 10 %
    assert rejection(reading(4, 0, v_micro_pu=1_100_000), registry) is None  # slack at +10 %
    assert rejection(reading(5, 0, v_micro_pu=1_150_000), registry) is None  # LV meter
    # the window's edges: the minute may end 3600 s before, or 60 s after, its block's time
    assert rejection(reading(5, 0), registry, block_time_s=block_s + 3600) is None
    assert rejection(reading(5, 0), registry, block_time_s=block_s - 60) is None


@pytest.mark.parametrize(("changes", "rule", "reason"), [
    ({"device_id": 77}, "unknown_device", "unknown device 77: not registered"),
    ({"device_id": 9}, "unknown_device", "bus 999 is not in the feeder"),
    ({"timestamp": START_S + 30}, "minute", "not on a minute boundary"),
    ({"timestamp": START_S - 10 * 86_400}, "window", "s before its block's time"),
    ({"timestamp": START_S + 120}, "window", "ends 120 s after its block's time"),
    ({"p_w": 16_600}, "p", "outside the rated range"),
    ({"p_w": -6_600}, "p", "outside the rated range"),
    ({"q_var": 17_000}, "q", "|Q| 17000 var"),
    ({"v_micro_pu": 1_250_000}, "v", "outside the plausible range 0.8..1.2 pu (load)"),
    ({"v_micro_pu": 700_000}, "v", "outside the plausible range"),
    ({"device_id": 4, "v_micro_pu": 1_150_000, "theta_micro_rad": 0}, "v",
     "outside the plausible range 0.9..1.1 pu (transformer)"),
    ({"theta_micro_rad": 0}, "angle", "from its bus's no-load angle"),
    ({"theta_micro_rad": LV_ANGLE + ANGLE_TOLERANCE_MICRO_RAD + 2000}, "angle", "limit"),
])
def test_rejection_reasons(registry: DeviceRegistry, changes: dict, rule: str,
                           reason: str) -> None:
    got = rejection({**reading(5, 0), **changes}, registry, block_time_s=START_S + 60)
    assert got is not None and got[0] == rule and reason in got[1], got


def test_a_reading_posted_by_another_meter_is_rejected(registry: DeviceRegistry) -> None:
    other = "0x00000000000000000000000000000000000000bb"
    assert rejection(reading(5, 0), registry, meter=other) == (
        "meter", f"posted by {other}, but the device's meter is {METER.lower()}")


def test_vectorised_codes_agree_with_the_rules(registry: DeviceRegistry) -> None:
    rows = [reading(5, 0), reading(5, 1, p_w=-6_500), {**reading(5, 2), "device_id": 77},
            {**reading(9, 0)}, reading(6, 3, p_w=33_000), reading(6, 4, p_w=33_600),
            reading(7, 5, q_var=-11_000), reading(4, 6, v_micro_pu=1_100_000),
            reading(4, 7, v_micro_pu=1_100_001), reading(1, 8, theta=0),
            {**reading(2, 9), "timestamp": START_S + 61}, reading(5, -70), reading(5, 10),
            reading(5, 11), reading(5, 12, v_micro_pu=799_999)]
    records = decode_readings(encode_readings([[r[f] for f in READING_FIELDS] for r in rows]))
    block_s = np.full(len(rows), START_S + 900)
    meters = np.array([METER] * len(rows), dtype=object)
    meters[13] = "0x00000000000000000000000000000000000000bb"
    codes = rejection_codes(records, registry, block_time_s=block_s, meters=meters,
                            window=ReadingWindow(max_age_s=3600, max_ahead_s=60))
    expected = [rejection(r, registry, block_time_s=START_S + 900, meter=str(m))
                for r, m in zip(rows, meters, strict=True)]
    assert [RULES[c - 1] if c else None for c in codes] == [
        e[0] if e else None for e in expected]
    assert [RULES[c - 1] if c else None for c in codes] == [
        None, None, "unknown_device", "unknown_device", None, "p", None, None, "v", "angle",
        "minute", "window", None, "meter", "v"]
    assert rejection_codes(records[:0], registry).size == 0


def test_state_from_complete_readings(registry, feeder, forecast) -> None:
    readings = []
    for m in range(15):
        readings += [reading(5, m, p_w=1000 + m), reading(6, m, p_w=2000), reading(7, m, p_w=-500),
                     reading(4, m, p_w=9999, v_micro_pu=1_012_000 + m),
                     reading(1, m, p_w=-20_000), reading(2, m, p_w=11_000)]
    state = build_state(INTERVAL, INTERVAL_S, registry, feeder, readings, {}, forecast)
    col = {b: feeder.bus_position(b) for b in (14, 15, 10, 8)}
    assert state.n_readings == 90 and state.filled == {}
    np.testing.assert_array_equal(state.p_w[:, col[14]], 1000 + np.arange(15))
    np.testing.assert_array_equal(state.p_w[:, col[15]], np.full(15, 1500))  # two meters summed
    np.testing.assert_array_equal(state.q_var[:, col[15]], np.full(15, 600))
    # flexibilities' own readings are kept apart, not uncontrollable load
    assert state.p_w[:, col[10]].tolist() == [0] * 15 and state.p_w[:, col[8]].tolist() == [0] * 15
    np.testing.assert_array_equal(state.flex_p_w, np.tile([-20_000, 11_000], (15, 1)))
    assert state.flex_ids == [1, 2]
    np.testing.assert_array_equal(state.v_slack_micro_pu, 1_012_000 + np.arange(15))
    # buses without a load meter take the forecast (the slack bus does not)
    other = feeder.bus_position(16)
    assert 16 in state.unmetered_buses and 0 not in state.unmetered_buses
    assert state.p_w[0, other] == 100 * (other + 1)
    np.testing.assert_allclose(state.p_kw[:, col[14]], (1000 + np.arange(15)) / 1000)


def test_missing_minutes_use_last_value_then_forecast(registry, feeder, forecast) -> None:
    readings = [reading(5, 3, p_w=1234), reading(5, 7, p_w=777), reading(4, 0, v_micro_pu=990_000)]
    previous = {6: {"p_w": 4321, "q_var": 100, "v_micro_pu": 1_000_000}}
    state = build_state(INTERVAL, INTERVAL_S, registry, feeder, readings, previous, forecast)
    col14, col15 = feeder.bus_position(14), feeder.bus_position(15)
    # device 5: minutes 0..2 have no earlier value -> forecast of bus 14; then carried forward
    expected = [100 * (col14 + 1)] * 3 + [1234] * 4 + [777] * 8
    assert state.p_w[:, col14].tolist() == expected
    # bus 15: device 6 carries its previous reading, device 7 (no history) half the forecast
    assert state.p_w[:, col15].tolist() == [4321 + 100 * (col15 + 1) // 2] * 15
    assert state.filled == {5: {"last": 10, "forecast": 3}, 6: {"last": 15, "forecast": 0},
                            7: {"last": 0, "forecast": 15}, 4: {"last": 14, "forecast": 0}}
    assert state.n_missing == 10 + 3 + 15 + 15 + 14
    assert state.v_slack_micro_pu.tolist() == [990_000] * 15


def test_no_transformer_reading_uses_nominal_slack(registry, feeder, forecast) -> None:
    state = build_state(INTERVAL, INTERVAL_S, registry, feeder, [], {}, forecast)
    assert state.v_slack_micro_pu.tolist() == [round(feeder.slack.vm_pu * 1e6)] * 15
    assert state.filled[4] == {"last": 0, "forecast": 15}


def test_readings_outside_the_interval_are_ignored(registry, feeder, forecast) -> None:
    state = build_state(INTERVAL, INTERVAL_S, registry, feeder, [reading(5, 15), reading(5, -1)],
                        {}, forecast)
    assert state.n_readings == 0


def test_forecast_steps(registry, feeder, forecast) -> None:
    readings = [reading(5, m, p_w=p) for m, p in enumerate([5, 9, 1, 7, 3] + [4] * 10)]
    state = build_state(INTERVAL, INTERVAL_S, registry, feeder, readings, {}, forecast)
    assert forecast_steps(state, "all").tolist() == list(range(15))
    assert forecast_steps(state, "last").tolist() == [14]
    assert forecast_steps(state, "extremes").tolist() == [1, 2, 14]
    for mode in ("median", "ramps"):
        with pytest.raises(ValueError, match="does not pick minutes"):
            forecast_steps(state, mode)


def test_intersect_bands_is_inside_every_step() -> None:
    lo, hi, empty = intersect_bands(np.array([[-50.0, 0.0], [-30.0, 2.0]]),
                                    np.array([[40.0, 22.0], [50.0, 3.0]]))
    assert lo.tolist() == [-30.0, 2.0] and hi.tolist() == [40.0, 3.0]
    assert not empty.any()


def test_intersect_bands_without_overlap_publishes_the_last_certified_band() -> None:
    p_min = np.array([[-50.0, 0.0], [-30.0, 5.0]])
    p_max = np.array([[40.0, 22.0], [50.0, 9.0]])
    p_max[0, 1] = 3.0  # step 0 allows the station [0, 3] kW, step 1 [5, 9] kW: no overlap
    lo, hi, empty = intersect_bands(p_min, p_max)
    assert empty.tolist() == [False, True]
    # not a made-up point between the steps: the last step's band, for every device
    assert lo.tolist() == [-30.0, 5.0] and hi.tolist() == [50.0, 9.0]


def test_minutes_per_interval() -> None:
    assert minutes_per_interval(900) == 15 and minutes_per_interval(60) == 1
    for bad in (0, -60, 90):
        with pytest.raises(ValueError, match="multiple of 60"):
            minutes_per_interval(bad)


def test_readings_codec_round_trip() -> None:
    records = np.array([[1, 1_773_788_400, -50_000, 10, 1_010_000, -2_622_149],
                        [4_000_000_000, 2**32 - 1, 2**31 - 1, -(2**31), 2**32 - 1, 0]])
    decoded = decode_readings(encode_readings(records))
    assert np.array([list(r) for r in decoded.tolist()]).tolist() == records.tolist()
    assert len(encode_readings(records)) == 48
    with pytest.raises(ValueError, match="p_w outside"):
        encode_readings([[1, 0, 2**31, 0, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        encode_readings([[1, 2, 3]])
    with pytest.raises(ValueError, match="not a multiple of 24"):
        decode_readings(b"\x00" * 25)


def test_negative_limits_are_refused() -> None:
    from oracle.service import OracleConfig

    with pytest.raises(ValueError, match="reading window limits must be >= 0"):
        ReadingWindow(max_age_s=-1)
    with pytest.raises(ValueError, match="confirmations >= 0"):
        OracleConfig(confirmations=-1)
