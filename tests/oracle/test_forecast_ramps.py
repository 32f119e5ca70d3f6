"""The ``ramps`` forecast: the worst joint ramps of previous days, applied to the last minute."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from capacity.feeders import load_feeder
from oracle.forecast import (
    ForecastSteps,
    ProfileForecast,
    RampHistory,
    helm_voltage_magnitudes,
    ramp_steps,
)
from oracle.registry import DeviceRegistry
from oracle.service import OcmSettings, OracleConfig, ocm_inputs
from oracle.state import build_state, profile_forecast

INTERVAL_S = 900
INTERVAL = 2_000_000
START_S = INTERVAL * INTERVAL_S
DAY_START_S = START_S - 3600  # the source interval starts at minute 60 of the profile day
ANCHOR_ROW = 60 + 14  # minute row of the source interval's last minute


@pytest.fixture(scope="module")
def feeder():
    return load_feeder("heimschuh-like")


@pytest.fixture(scope="module")
def registry(feeder) -> DeviceRegistry:
    records = [{"device_id": 1, "kind": 0, "bus": 10, "p_min_rated_w": -50_000,
                "p_max_rated_w": 50_000,
                "meter": "0x00000000000000000000000000000000000000aa"}]
    return DeviceRegistry.from_records(records, feeder, names={1: "CB"})


def _flat(feeder, w: int) -> np.ndarray:
    return np.full((1440, feeder.n_bus), w, dtype=np.int64)


def _forecast(feeder, days: list[np.ndarray]) -> ProfileForecast:
    base = _flat(feeder, 1000)
    history = RampHistory(np.stack(days), np.stack([d // 10 for d in days]))
    return ProfileForecast(base, base // 10, DAY_START_S, history)


def _state(feeder, registry, forecast):
    return build_state(INTERVAL, INTERVAL_S, registry, feeder, [], {}, forecast)


def test_ramps_are_each_day_s_change_from_the_anchor_minute(feeder) -> None:
    day = _flat(feeder, 500)
    day[ANCHOR_ROW + 3, 7] = 4500  # +4 kW at bus column 7, three minutes after the anchor
    history = RampHistory(np.stack([day, _flat(feeder, 800)]), np.stack([day, day]) // 10)
    d_p, d_q, offsets = history.ramps(ANCHOR_ROW, 15)
    assert d_p.shape == (30, feeder.n_bus) and offsets.tolist() == [*range(1, 16)] * 2
    assert d_p[2, 7] == 4000 and np.count_nonzero(d_p) == 1
    assert d_q[2, 7] == 400


def test_ramps_wrap_at_midnight(feeder) -> None:
    day = _flat(feeder, 0)
    day[2, 0] = 1000  # minute 2 of the day, 3 minutes after 23:59
    d_p, _, offsets = RampHistory(day[None], day[None]).ramps(1439, 5)
    assert d_p[2, 0] == 1000 and offsets[2] == 3


def test_the_worst_rising_ramp_and_the_last_minute_are_the_steps(feeder, registry) -> None:
    calm = _flat(feeder, 1000)
    rising = _flat(feeder, 1000)
    far = feeder.n_bus - 1
    rising[ANCHOR_ROW + 9:, :] += 3000  # every bus +3 kW from 9 minutes into the interval
    forecast = _forecast(feeder, [calm, rising])
    state = _state(feeder, registry, forecast)
    steps = ramp_steps(state, forecast, helm_voltage_magnitudes(feeder))
    last = state.p_w.shape[0] - 1
    assert len(steps.timestamps) == 2  # no falling ramp: no step for v_high
    np.testing.assert_array_equal(steps.p_w[0], state.p_w[last] + 3000)
    np.testing.assert_array_equal(steps.q_var[0], state.q_var[last] + 300)
    assert steps.timestamps[0] == state.timestamps[last] + 60 * 9
    np.testing.assert_array_equal(steps.p_w[-1], state.p_w[last])
    assert steps.timestamps[-1] == state.timestamps[last]
    assert (steps.v_slack_micro_pu == state.v_slack_micro_pu[last]).all()
    assert steps.p_w[0, far] > state.p_w[last, far]


def test_coverage_leaves_out_the_most_extreme_ramps(feeder, registry) -> None:
    days = []
    for extra in (1000, 2000, 3000, 4000):  # four days rising by 1..4 kW per bus
        day = _flat(feeder, 1000)
        day[ANCHOR_ROW + 5:, :] += extra
        days.append(day)
    forecast = _forecast(feeder, days)
    state = _state(feeder, registry, forecast)
    solve_v = helm_voltage_magnitudes(feeder)
    # 4 days x 15 minutes: 60 candidates, 11 per day risen (minutes 5 to 15 after the anchor)
    worst = ramp_steps(state, forecast, solve_v, coverage=1.0)
    np.testing.assert_array_equal(worst.p_w[0], state.p_w[-1] + 4000)
    covering = ramp_steps(state, forecast, solve_v, coverage=0.8)  # leaves out the 11 worst
    np.testing.assert_array_equal(covering.p_w[0], state.p_w[-1] + 3000)
    with pytest.raises(ValueError, match="coverage"):
        ramp_steps(state, forecast, solve_v, coverage=0.0)
    with pytest.raises(ValueError, match="ramp_coverage"):
        OcmSettings(forecast="ramps", ramp_coverage=1.5)


def test_a_falling_ramp_adds_the_step_for_the_upper_limit(feeder, registry) -> None:
    falling = _flat(feeder, 1000)
    falling[ANCHOR_ROW + 4:, :] -= 2500  # PV returns: net consumption -2.5 kW per bus
    forecast = _forecast(feeder, [falling])
    state = _state(feeder, registry, forecast)
    steps = ramp_steps(state, forecast, helm_voltage_magnitudes(feeder))
    assert len(steps.timestamps) == 2
    # each bus falls by 2.5 kW, but not below the -1.5 kW the day had (nor below its value now)
    np.testing.assert_array_equal(steps.p_w[0], np.maximum(
        state.p_w[-1] - 2500, np.minimum(-1500, state.p_w[-1])))
    assert (steps.p_w[0] < state.p_w[-1]).all()


def test_a_ramp_stays_within_what_previous_days_had_or_what_is_now(feeder, registry) -> None:
    """A cloudy day's PV returning (+4 kW of PV), added to a sunny minute now, would be more PV
    than any day had: each bus stops at the least net consumption of the previous days (or its
    value now, if lower)."""
    sunny = _flat(feeder, -3000)
    cloudy = _flat(feeder, -3000)
    cloudy[:ANCHOR_ROW + 3, :] = 1000  # PV back three minutes after the anchor
    forecast = _forecast(feeder, [sunny, cloudy])
    state = _state(feeder, registry, forecast)
    state.p_w[-1] = -3000
    state.p_w[-1, 5] = -3500  # one bus below anything the previous days had: its value now
    steps = ramp_steps(state, forecast, helm_voltage_magnitudes(feeder))
    assert len(steps.timestamps) == 2  # the falling ramp is a step, clipped
    expected = np.full(feeder.n_bus, -3000)
    expected[5] = -3500
    np.testing.assert_array_equal(steps.p_w[0], expected)
    np.testing.assert_array_equal(steps.p_w[-1], state.p_w[-1])


def test_without_ramps_only_the_last_minute_remains(feeder, registry) -> None:
    forecast = _forecast(feeder, [_flat(feeder, 700)])
    state = _state(feeder, registry, forecast)
    steps = ramp_steps(state, forecast, helm_voltage_magnitudes(feeder))
    expected = ForecastSteps.of_minutes(state, np.array([state.p_w.shape[0] - 1]))
    for field in dataclasses.fields(ForecastSteps):
        np.testing.assert_array_equal(getattr(steps, field.name), getattr(expected, field.name))


def test_a_ramp_without_a_load_flow_solution_is_the_worst(feeder, registry) -> None:
    collapse = _flat(feeder, 1000)
    collapse[ANCHOR_ROW + 5, :] = 5_000_000  # 5 MW per bus: no operable solution
    small = _flat(feeder, 1000)
    small[ANCHOR_ROW + 2:, :] += 1000
    forecast = _forecast(feeder, [small, collapse])
    state = _state(feeder, registry, forecast)
    steps = ramp_steps(state, forecast, helm_voltage_magnitudes(feeder))
    assert steps.p_w[0, 0] == state.p_w[-1, 0] + 4_999_000


def test_ramps_need_a_history(feeder, registry) -> None:
    base = _flat(feeder, 1000)
    forecast = ProfileForecast(base, base, DAY_START_S)
    with pytest.raises(ValueError, match="ramp history"):
        ramp_steps(_state(feeder, registry, forecast), forecast, helm_voltage_magnitudes(feeder))
    with pytest.raises(ValueError, match="at least one previous day"):
        RampHistory.from_profiles([])


@pytest.mark.parametrize("days", [0, -1, 367])
def test_history_days_out_of_range_are_refused(days: int) -> None:
    with pytest.raises(ValueError, match="history_days"):
        OcmSettings(forecast="ramps", history_days=days)


def test_history_days_are_in_the_hashed_inputs_of_ramps_only() -> None:
    assert ocm_inputs(OcmSettings(forecast="ramps", history_days=7), 5)["history_days"] == 7
    assert "history_days" not in ocm_inputs(OcmSettings(forecast="last"), 5)


def test_the_history_never_contains_the_day_itself() -> None:
    forecast = profile_forecast("heimschuh-like", 4, 2)
    assert forecast.history is not None and forecast.history.n_days == 2
    for day in forecast.history.p_w:
        assert not np.array_equal(day, forecast.p_w)
    np.testing.assert_array_equal(forecast.history.p_w[0],
                                  profile_forecast("heimschuh-like", 5, 0).p_w)
    assert OracleConfig(ocm=OcmSettings(forecast="ramps")).ocm.history_days == 28


def test_the_oracle_certifies_its_band_at_the_ramps_and_the_audit_recomputes_it() -> None:
    """An oracle on the ``ramps`` forecast writes a band certified at every ramp step it
    stored (the last minute last); the audit rebuilds the same inputs from the chain, and flags
    them under another history length."""
    from gridshare.chain.client import connect
    from oracle.certify import certify
    from oracle.service import certified_steps
    from tests.oracle.oracle_helpers import FAST_NR, FAST_OCM, audit_stale, deploy_feeder

    ocm = dataclasses.replace(FAST_OCM, forecast="ramps", history_days=3)
    d = deploy_feeder(connect())
    oracle = d.oracle(":memory:", ocm=ocm)
    try:
        d.sim.post(range(1050, 1065))  # 17:30-17:45: the evening load is rising
        oracle.step()
        target = d.interval_of_minute(1065)
        row = oracle.store.interval(target)
        assert row is not None and row.status == "written"
        inputs, bands = row.inputs, row.bands
        assert inputs["ocm"]["history_days"] == 3
        steps = inputs["steps_unix_s"]
        assert steps[-1] == d.sim.timestamp(1064) and len(steps) >= 2
        assert all(d.sim.timestamp(1064) < t <= d.sim.timestamp(1079) for t in steps[:-1])
        checked = certified_steps(inputs, np.asarray(bands["empty"], dtype=bool))
        assert len(checked["p_w"]) == len(steps)  # the steps' bands overlap: all certified
        again = certify(checked, bands["p_min_w"], bands["p_max_w"], FAST_NR)
        assert again.failed == 0 and again.narrowed == 0
        for history_days, stale in ((3, False), (4, True)):
            verdicts = audit_stale(d, dataclasses.replace(ocm, history_days=history_days), target)
            assert verdicts and all(v is stale for v in verdicts)
    finally:
        oracle.close()
