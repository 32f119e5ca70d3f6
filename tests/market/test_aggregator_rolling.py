"""The day rolled hour by hour: carry-over, end-of-hour storage value, soft deviation caps."""

from __future__ import annotations

import numpy as np
import pytest

from market.aggregator import ModelOptions, schedule_day, schedule_hour, synthetic_case
from market.aggregator.case import Case
from market.aggregator.rolling import roll_day


def with_forecast_errors(case: Case, seed: int) -> Case:
    """Hourly demand errors N(0, 5%) and renewable errors N(0, 10%) against the day-ahead."""
    rng = np.random.default_rng(100 + seed)
    return case.with_disturbance(demand_pct=rng.normal(0, 5, 24), res_pct=rng.normal(0, 10, 24))


def perfect_information_cost(case: Case) -> float:
    day = schedule_day(case)
    assert day.stats["status"] == 0
    return day.operating_cost_eur - day.storage_value_eur


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_rolled_day_is_close_to_perfect_information(seed: int) -> None:
    case = with_forecast_errors(synthetic_case(seed), seed)
    best = perfect_information_cost(case)
    rolled = roll_day(case)
    myopic = roll_day(case, ModelOptions(storage_value="none"))
    assert rolled.all_hours_optimal and myopic.all_hours_optimal
    assert len(rolled.hours) == 24
    # the rolled day can only lose against perfect information
    assert rolled.day_cost_eur >= best - 1e-6 * abs(best)
    assert rolled.day_cost_eur <= best * 1.005
    # a one-hour scheduler without end-of-hour storage value loses about 2%
    assert 1.01 * best < myopic.day_cost_eur < 1.04 * best


def test_state_of_charge_is_carried_over() -> None:
    case = with_forecast_errors(synthetic_case(0), 0)
    rolled = roll_day(case)
    for prev, nxt in zip(rolled.hours[:-1], rolled.hours[1:], strict=True):
        for key in ("ess", "cs"):
            np.testing.assert_allclose(nxt.e_kwh[key][:, 0], prev.e_kwh[key][:, 4], atol=1e-9)
    np.testing.assert_allclose(rolled.e_kwh["ess"][:, 0], case.ess.e_init_kwh)
    # the day's cost is the sum of the executed hours' Eq. 1 costs
    total = sum(h.operating_cost_eur for h in rolled.hours)
    assert total == pytest.approx(rolled.operating_cost_eur, rel=1e-9)


def test_myopic_hour_empties_the_storage_and_the_valued_hour_does_not() -> None:
    case = synthetic_case(0)
    hour = 2  # night: cheap energy; a myopic hour sells the stored energy right away
    myopic = schedule_hour(case, hour, ModelOptions(storage_value="none"))
    valued = schedule_hour(case, hour)
    assert myopic.e_kwh["ess"][:, -1].sum() < valued.e_kwh["ess"][:, -1].sum() - 100.0


def test_lookahead_rolls_and_stays_close() -> None:
    case = with_forecast_errors(synthetic_case(1), 1)
    rolled = roll_day(case, ModelOptions(lookahead_h=2))
    assert rolled.all_hours_optimal
    assert rolled.hours[5].slots.size == 12 and rolled.hours[23].slots.size == 4
    assert rolled.day_cost_eur <= perfect_information_cost(case) * 1.005


def test_soft_caps_give_way_after_state_of_charge_drift_and_are_reported() -> None:
    """Start each storage at its lowest admissible energy: the day-ahead plan's discharges
    cannot be followed within 10%, literal caps would be infeasible; the soft caps bind, the
    hour still solves and reports where."""
    case = synthetic_case(0)
    options = ModelOptions(ess_cap_frac=0.10, cs_cap_frac=0.05)
    plan = case.day_ahead
    hour = int(np.argmin(plan.ess_p_kw.sum(axis=0)) // 4)  # hour of the largest planned discharge
    first = hour * 4
    e_init = {"ess": np.array(case.ess_e_req_kwh[:, first]), "cs": plan.cs_e_kwh[:, first]}
    result = schedule_hour(case, hour, options, e_init_kwh=e_init)
    assert result.stats["status"] == 0
    assert result.cap_penalty_eur > 0
    binding = result.cap_binding
    assert binding and all(key == "ess" for key, _, _ in binding)
    assert {slot // 4 for _, _, slot in binding} == {hour}
    # the excess is exactly the shortfall against the cap window
    net = result.p_kw["ess_ch"] - result.p_kw["ess_dis"]
    da = plan.ess_p_kw[:, result.slots]
    outside = np.maximum(np.abs(net - da) - 0.10 * np.abs(da), 0.0)
    np.testing.assert_allclose(result.cap_excess_kw["ess"], outside, atol=1e-6)


def test_constrained_day_never_fails_and_reports_binding_hours() -> None:
    case = synthetic_case(0).with_disturbance(demand_pct=25.0)
    day = roll_day(case, ModelOptions(ess_cap_frac=0.10, cs_cap_frac=0.05))
    assert day.all_hours_optimal
    assert day.cap_binding_hours == sorted(set(day.cap_binding_hours))
    for h in day.hours:
        assert (h.hour in day.cap_binding_hours) == bool(h.cap_binding)
    assert day.cap_binding_hours  # +25% demand pushes storage off its day-ahead plan
