"""The day rolled hour by hour (H-ERM Sec. 2.1): each hour starts from the last slot before it.

Hour h is scheduled with its fresh (intraday) forecast and, with a look-ahead, the day-ahead
forecast of the following hours; only its own four slots are executed. The stored energy at the
end of each executed hour is carried into the next hour. With ``storage_value="dual"`` the energy
left at the end of the model horizon is valued at the day-ahead plan's marginal value (the dual
of the storage balance), so a one-hour horizon does not empty the storage every hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from market.aggregator.case import Case
from market.aggregator.model import FLEETS, ModelOptions
from market.aggregator.schedule import (
    ScheduleResult,
    cost_terms_eur,
    hour_horizon,
    solve_horizon,
)
from market.aggregator.solve import SolverOptions

POWER_KEYS = ("dg", "gcp", "res", "supplier", "dr", "nsd", "ess_ch", "ess_dis", "cs_ch",
              "cs_dis", "wm_buy", "wm_sell", "lem_buy", "lem_sell")


@dataclass
class DayResult:
    """A rolled day. Powers (units, slots) kW; energies (units, slots + 1) kWh; money EUR.

    ``day_cost_eur`` = Eq. 1 over the executed day minus the value of the energy stored at the
    end of the day (the same measure as the day-ahead plan's and the perfect-information cost).
    """

    hours: list[ScheduleResult]
    p_kw: dict[str, np.ndarray]
    e_kwh: dict[str, np.ndarray]
    cost_breakdown_eur: dict[str, float]
    operating_cost_eur: float
    storage_value_end_eur: float
    day_cost_eur: float
    cap_penalty_eur: float
    cap_binding_hours: list[int]

    @property
    def solve_times_s(self) -> np.ndarray:
        return np.array([h.solve_time_s for h in self.hours])

    @property
    def all_hours_optimal(self) -> bool:
        return all(h.stats["status"] == 0 for h in self.hours)


def roll_day(case: Case, options: ModelOptions | None = None,
             solver: SolverOptions | None = None) -> DayResult:
    """Schedule every hour of the day in turn, carrying the stored energy over."""
    options = options or ModelOptions()
    solver = solver or SolverOptions()
    sph = case.slots_per_hour
    e_now = {k: np.array(getattr(case, k).e_init_kwh) for k in FLEETS}
    hours: list[ScheduleResult] = []
    for hour in range(case.n_hours):  # the rolling itself is sequential by nature
        hz = hour_horizon(case, hour, options, e_now)
        result = solve_horizon(case, hz, options, solver, hour, sph)
        hours.append(result)
        e_now = {k: np.array(result.e_kwh[k][:, sph]) for k in FLEETS}
    p = {key: np.concatenate([h.p_kw[key][..., :sph] for h in hours], axis=-1)
         for key in POWER_KEYS}
    e = {k: np.column_stack([hours[0].e_kwh[k][:, :1]]
                            + [h.e_kwh[k][:, 1:sph + 1] for h in hours]) for k in FLEETS}
    slots = np.arange(case.n_slots)
    breakdown = cost_terms_eur(case, p, slots)
    operating = float(sum(breakdown.values()))
    value_end = float(sum(np.sum(getattr(case, k).value_end_eur_per_kwh * e[k][:, -1])
                          for k in FLEETS))
    penalty = 0.0
    binding: list[int] = []
    for h in hours:
        excess = sum(float(np.sum(h.cap_excess_kw[k][:, :sph])) for k in FLEETS)
        if any(np.any(h.cap_excess_kw[k][:, :sph] > 1e-6) for k in FLEETS):
            binding.append(int(h.hour))
        rate = options.cap_penalty_eur_per_kwh * case.slot_h
        penalty += rate * excess
    return DayResult(hours=hours, p_kw=p, e_kwh=e, cost_breakdown_eur=breakdown,
                     operating_cost_eur=operating, storage_value_end_eur=value_end,
                     day_cost_eur=operating - value_end, cap_penalty_eur=penalty,
                     cap_binding_hours=binding)
