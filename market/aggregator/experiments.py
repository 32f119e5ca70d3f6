"""The paper's test cases (Table 1) on a rolled day, compared with the day-ahead objective.

Cases 1-4: a demand (1, 2) or non-dispatchable RES (3, 4) forecast disturbance of -25%..+25%
applied to every hour of the intraday forecast, with the ESS/CS deviation caps of 10%/5% (1, 3)
or without (2, 4). Case 5: unconstrained, an hourly demand disturbance drawn between the
envelope of Fig. 2a (synthetic here, the paper gives no numbers) and +5% RES.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from market.aggregator.case import Case
from market.aggregator.model import ModelOptions
from market.aggregator.rolling import DayResult, roll_day

DISTURBANCES_PCT: tuple[float, ...] = (-25, -20, -15, -10, -5, 5, 10, 15, 20, 25)
ESS_CAP_FRAC = 0.10
CS_CAP_FRAC = 0.05


@dataclass(frozen=True)
class TestCase:
    """One row of Table 1: constrained or not, and which forecast is disturbed."""

    number: int
    constrained: bool
    disturbed: str  # "demand", "res" or "variable"

    def options(self, lookahead_h: int = 0) -> ModelOptions:
        if self.constrained:
            return ModelOptions(ess_cap_frac=ESS_CAP_FRAC, cs_cap_frac=CS_CAP_FRAC,
                                lookahead_h=lookahead_h)
        return ModelOptions(lookahead_h=lookahead_h)


TABLE1 = {
    1: TestCase(1, True, "demand"),
    2: TestCase(2, False, "demand"),
    3: TestCase(3, True, "res"),
    4: TestCase(4, False, "res"),
    5: TestCase(5, False, "variable"),
}


def test_case(number: int) -> TestCase:
    """Table 1 row ``number`` (1..5); ValueError otherwise."""
    if number not in TABLE1:
        raise ValueError(f"test case must be one of 1..5, got {number}")
    return TABLE1[number]


def case5_envelope_pct(n_hours: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Hourly minimum and maximum demand disturbance (%) in the style of Fig. 2a."""
    hour = np.arange(n_hours) + 0.5
    swing = 4.0 + 8.0 * np.exp(-(((hour - 19.0) / 3.0) ** 2)) + 4.0 * np.exp(
        -(((hour - 9.0) / 2.5) ** 2))
    return -swing, swing


def case5_disturbance_pct(seed: int = 0, n_hours: int = 24) -> np.ndarray:
    """Random hourly demand disturbance between the Fig. 2a-style envelope (deterministic)."""
    lo, hi = case5_envelope_pct(n_hours)
    return np.random.default_rng(seed).uniform(lo, hi)


@dataclass(frozen=True)
class Table1Row:
    """A disturbance level: day-ahead and hour-ahead day costs (EUR) and their difference (%)."""

    disturbance_pct: float
    day_ahead_cost_eur: float
    hour_ahead_cost_eur: float
    difference_pct: float
    cap_penalty_eur: float
    cap_binding_hours: tuple[int, ...]
    all_hours_optimal: bool


def disturbed(case: Case, tc: TestCase, pct: float, seed: int = 0) -> Case:
    """The intraday forecasts of test case ``tc`` at disturbance ``pct`` (%)."""
    if tc.disturbed == "demand":
        return case.with_disturbance(demand_pct=pct)
    if tc.disturbed == "res":
        return case.with_disturbance(res_pct=pct)
    return case.with_disturbance(demand_pct=case5_disturbance_pct(seed, case.n_hours),
                                 res_pct=5.0)


def run_day(case: Case, tc: TestCase, pct: float, seed: int = 0,
            lookahead_h: int = 0) -> DayResult:
    """Roll the day of test case ``tc`` at disturbance ``pct``."""
    return roll_day(disturbed(case, tc, pct, seed), tc.options(lookahead_h))


def table1(case: Case, number: int, disturbances: tuple[float, ...] = DISTURBANCES_PCT,
           lookahead_h: int = 0) -> list[Table1Row]:
    """Rows of the paper's Fig. 4/5 for test case ``number`` (day-ahead vs hour-ahead cost)."""
    tc = test_case(number)
    if case.day_ahead is None:
        raise ValueError("Table 1 needs the case's day-ahead plan")
    da_cost = case.day_ahead.cost_eur
    rows = []
    for pct in disturbances:  # one rolled day per disturbance level
        day = run_day(case, tc, pct, lookahead_h=lookahead_h)
        rows.append(Table1Row(
            disturbance_pct=float(pct), day_ahead_cost_eur=da_cost,
            hour_ahead_cost_eur=day.day_cost_eur,
            difference_pct=100.0 * (day.day_cost_eur - da_cost) / abs(da_cost),
            cap_penalty_eur=day.cap_penalty_eur,
            cap_binding_hours=tuple(day.cap_binding_hours),
            all_hours_optimal=day.all_hours_optimal))
    return rows
